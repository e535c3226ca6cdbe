// `agent.debug_console`: a root shell on the guest's console, for debugging a VM from the host.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from '../../common/log.js';

/**
 * A root shell on the virtio console (hvc0) or the second serial port, restarted when it exits. For debugging
 * only: anyone with the host end of that console is root in the guest.
 */
export function startDebugConsole(log: Logger): { stop(): void } {
  const device = ['/dev/hvc0', '/dev/ttyS1'].find((d) => fs.existsSync(d));
  if (!device) {
    log.warn('agent.debug_console: no /dev/hvc0 or /dev/ttyS1 in the guest; no debug console');
    return { stop() {} };
  }
  let child: ChildProcess | undefined;
  let stopped = false;
  const start = () => {
    if (stopped) return;
    let fd: number;
    try {
      fd = fs.openSync(device, 'r+');
    } catch (e) {
      log.error({ err: e }, `debug console: opening ${device} failed`);
      return;
    }
    // setsid -c makes the console the shell's controlling terminal, so ^C and job control work.
    child = spawn('/bin/busybox', ['setsid', '-c', '/bin/sh', '-l'], {
      stdio: [fd, fd, fd],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', TERM: 'vt100', PS1: 'kata-debug# ' },
    });
    fs.closeSync(fd);
    child.on('error', (e) => log.error({ err: e }, 'debug console: starting the shell failed'));
    child.on('exit', () => {
      child = undefined;
      setTimeout(start, 500);
    });
    log.info({ device }, 'debug console started');
  };
  start();
  return {
    stop() {
      stopped = true;
      child?.kill('SIGKILL');
    },
  };
}
