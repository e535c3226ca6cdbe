import type { Logger } from '../../common/log.js';
// PID 1's way out: a clean power-off, so that QEMU exits (PID 1 exiting would panic the kernel).
import { sleep } from '../../common/poll.js';
import { syncAndPowerOff } from '../native.js';

/**
 * Logs, flushes the log, syncs and powers the VM off; QEMU then exits. Never resolves. The log goes to a serial
 * console: the last lines are only seen if the logger's buffer is written and the tty drained first.
 */
export async function powerOff(log: Logger): Promise<never> {
  log.info('powering off');
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    try {
      log.flush(() => {
        clearTimeout(timer);
        resolve();
      });
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
  // pino writes from libuv's thread pool: a write may still be on its way after the flush callback.
  await sleep(100);
  const err = syncAndPowerOff();
  // reboot(2) only returns on failure: exiting PID 1 panics the kernel, and panic=1 with -no-reboot stops QEMU.
  log.error({ err }, 'power-off failed; exiting PID 1 instead');
  process.exit(1);
}
