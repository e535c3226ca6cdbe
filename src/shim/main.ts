// containerd-shim-kata-v2: containerd runs `start` (spawn the daemon, print its address), `delete` (clean up
// after a dead shim, print a DeleteResponse), and the daemon itself (no action: serve the Task API).
// Start-up time matters (containerd waits for `start`), so each mode imports only what it needs.
import fs from 'node:fs';
import { logger, setLogLevel } from '../common/log.js';
import { parseArgs, validateArgs } from './args.js';
import { openShimLog, redirectLogs } from './logging.js';

const VERSION = '0.1.0';

async function main(): Promise<number> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`containerd-shim-kata-v2: ${(e as Error).message}\n`);
    return 2;
  }
  if (args.version) {
    process.stdout.write(
      `containerd-shim-kata-v2 (kata-ts):\n  Version: ${VERSION}\n  Node.js: ${process.version}\n`,
    );
    return 0;
  }
  if (args.debug) setLogLevel('debug');
  const fields = { sandbox_id: args.id, namespace: args.namespace };

  switch (args.action) {
    case 'start': {
      // containerd reads stdout and stderr together: the address must be the only thing printed.
      const bundle = args.bundle || process.cwd();
      const logFd = openShimLog(bundle);
      redirectLogs(logFd);
      const log = logger('shim', fields);
      log.info({ phase: 'shim_start', t: Date.now() }, 'phase shim_start');
      try {
        validateArgs(args, false);
        const { runStart } = await import('./start.js');
        const { address } = await runStart(args, log, logFd);
        fs.writeSync(1, address);
        return 0;
      } catch (e) {
        log.error({ err: (e as Error).message }, 'start failed');
        process.stdout.write(`containerd-shim-kata-v2 start: ${(e as Error).message}\n`);
        return 1;
      }
    }
    case 'delete': {
      redirectLogs(2); // containerd logs the stderr of delete as cleanup warnings
      const log = logger('shim', fields);
      try {
        validateArgs(args, false);
        const { runDelete } = await import('./delete.js');
        fs.writeSync(1, await runDelete(args, log));
        return 0;
      } catch (e) {
        process.stderr.write(`containerd-shim-kata-v2 delete: ${(e as Error).message}\n`);
        return 1;
      }
    }
    case '': {
      redirectLogs(2, { nonBlocking: true }); // the bundle's log FIFO, set up by `start`
      const log = logger('shim', fields);
      try {
        validateArgs(args, false);
        const { runDaemon } = await import('./daemon.js');
        await runDaemon(args, log);
        return -1; // keep running
      } catch (e) {
        log.fatal({ err: (e as Error).stack ?? String(e) }, 'shim daemon failed to start');
        return 1;
      }
    }
    default:
      process.stderr.write(`containerd-shim-kata-v2: unknown action ${JSON.stringify(args.action)}\n`);
      return 2;
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(`containerd-shim-kata-v2: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
