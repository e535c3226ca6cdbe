import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Duplex, PassThrough } from 'node:stream';
import v8 from 'node:v8';
// kata-agent: PID 1 in the guest VM. Sets the guest up, then serves grpc.AgentService and grpc.Health over
// ttrpc on the virtio-serial port `agent.channel.0` and on vsock port 1024. On a host (not PID 1) it skips
// the set-up and the power-off, and takes its options as arguments: `kata-agent agent.server_addr=unix:///x`.
import type { DescService } from '@bufbuild/protobuf';
import { logger, setLogLevel } from '../common/log.js';
import { AGENT_SERIAL_PORT_NAME } from '../contract/index.js';
import { AgentService } from '../protocols/gen/agent_pb.js';
import { Health } from '../protocols/gen/health_pb.js';
import {
  type CallContext,
  type ServiceImpl,
  TtrpcClient,
  TtrpcServer,
  createClient,
} from '../protocols/ttrpc/index.js';
import { VirtioPortChannel } from './channel.js';
import { parseKernelCmdline } from './init/cmdline.js';
import { startDebugConsole } from './init/debug-console.js';
import { CHANNEL_MODULES, bootModules, loadKernelModulesInBackground } from './init/modules.js';
import { mountBasics } from './init/mounts.js';
import { type InitReport, initGuest, uptimeSeconds } from './init/pid1.js';
import { powerOff } from './init/power.js';
import { NIC_MODULES, ensureNicDriver, hasNic } from './nic-driver.js';
import { startReaper } from './reaper.js';
import { createAgentService } from './service.js';
import { type VsockListener, listenVsock } from './vsock.js';

async function main(): Promise<void> {
  // Uptimes (s since the guest kernel started) for the boot benchmark; node's own start is timeOrigin.
  const times: Record<string, number> = {
    nodeStart: uptimeSeconds() - performance.now() / 1000,
    agentMain: uptimeSeconds(),
  };
  const isInit = process.pid === 1;
  const mounted = isInit ? mountBasics() : []; // /proc first: the options are on the kernel command line
  times.mounted = uptimeSeconds();
  const args = process.argv.slice(fromSnapshot ? 1 : 2);
  const cmdline = isInit ? fs.readFileSync('/proc/cmdline', 'utf8') : args.join(' ');
  const { config, warnings } = parseKernelCmdline(cmdline);
  setLogLevel(config.logLevel);
  const log = logger('agent');
  for (const w of warnings) log.warn(w);

  let report: InitReport | undefined;
  const modules = isInit ? bootModules() : [];
  if (isInit) {
    report = initGuest(
      config,
      modules.filter((m) => CHANNEL_MODULES.includes(m)),
      mounted,
    );
    times.initDone = uptimeSeconds();
    log.info({ ...report, problems: undefined }, 'guest init done');
    for (const p of report.problems) log.error(p);
  }
  startReaper();

  let shuttingDown = false;
  const server = new TtrpcServer({
    onConnectionError: (err) => log.warn({ err }, 'ttrpc connection error'),
  });
  const services = createAgentService({
    onDestroySandbox: () => void shutdown('DestroySandbox'),
    nicDriver: isInit ? ensureNicDriver : undefined,
  });
  times.services = uptimeSeconds();
  // Other modules (virtio-fs, overlay, block, net, ...) load while the agent already answers Health; every other
  // RPC waits for them, so that no request sees a filesystem or device driver missing.
  let modulesLoaded: () => void = () => {};
  const modulesReady = new Promise<void>((resolve) => {
    modulesLoaded = resolve;
  });
  server.register(AgentService, afterModules(services.agent, modulesReady)).register(Health, services.health);

  let port: VirtioPortChannel | undefined;
  let vsock: VsockListener | undefined;
  let debugConsole: { stop(): void } | undefined;

  async function shutdown(reason: string): Promise<void> {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ reason }, 'shutting down');
    try {
      await services.shutdown();
    } catch (e) {
      log.error({ err: e }, 'stopping containers failed; powering off anyway');
    }
    // Lets the call that asked for this (DestroySandbox) send its answer before the channel closes.
    await server.shutdown(2000);
    port?.stop();
    vsock?.close();
    debugConsole?.stop();
    if (isInit) await powerOff(log);
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  if (!isInit) process.on('SIGINT', () => void shutdown('SIGINT'));
  if (isInit) {
    // PID 1 exiting panics the kernel: say why first, then power off cleanly instead.
    const fatal = (err: unknown) => {
      log.fatal({ err }, 'agent crashed');
      void powerOff(log);
    };
    process.on('uncaughtException', fatal);
    process.on('unhandledRejection', fatal);
  }

  const serve = (what: string) => (stream: Duplex) => {
    // virtio-serial sessions come and go while no host is connected; the channel logs real connections.
    if (what !== 'virtio-serial') log.debug({ channel: what }, 'new connection');
    server.serve(stream);
  };
  const listening: string[] = [];
  if (config.serverAddr?.startsWith('unix://')) {
    const path = config.serverAddr.slice('unix://'.length);
    await server.listen(path);
    listening.push(config.serverAddr);
  }
  if (fs.existsSync('/dev/vsock')) {
    try {
      vsock = listenVsock(config.vsockPort, serve('vsock'), (err) =>
        log.warn({ err }, 'vsock accept failed'),
      );
      listening.push(`vsock://-1:${config.vsockPort}`);
    } catch (e) {
      log.error({ err: e }, 'vsock listener not started');
    }
  }
  if (isInit) {
    port = new VirtioPortChannel({ name: AGENT_SERIAL_PORT_NAME, onConnection: serve('virtio-serial'), log });
    try {
      // With a vsock listener up, a missing port is not fatal and should not hold up "ready".
      const started = port.start();
      if (listening.length) {
        started.then(
          (dev) => log.info({ device: dev }, `serving on virtio-serial port ${AGENT_SERIAL_PORT_NAME}`),
          (e: Error) => log.warn({ err: e }, 'no virtio-serial channel'),
        );
      } else {
        const dev = await started;
        listening.push(`virtio-serial://${dev}`);
      }
    } catch (e) {
      log.error({ err: e }, 'no virtio-serial channel');
    }
  }
  times.listening = uptimeSeconds();
  // virtio-net only with a NIC at boot; a hot-plugged one gets it when the host first lists interfaces.
  const withNic = hasNic();
  const later = modules.filter((m) => !CHANNEL_MODULES.includes(m) && (withNic || !NIC_MODULES.includes(m)));
  const t0 = performance.now();
  void loadKernelModulesInBackground(later).then(({ loaded, problems }) => {
    modulesLoaded();
    if (loaded.length)
      log.info({ modules: loaded, ms: Math.round(performance.now() - t0) }, 'kernel modules loaded');
    for (const p of problems) log.error(p);
  });
  if (config.debugConsole && isInit) debugConsole = startDebugConsole(log);
  if (!listening.length) {
    log.fatal('no channel to serve on (no virtio-serial port, no vsock, no agent.server_addr)');
    if (isInit) await powerOff(log);
    process.exit(1);
  }
  const startedFrom = fromSnapshot ? 'snapshot' : 'bundle';
  log.info({ listening, startedFrom, uptimes: roundTimes(times), pid: process.pid }, 'agent ready');
}

/**
 * Runs the boot's pure code paths once while the snapshot is built (option parsing, a ttrpc call over an
 * in-memory pipe), so that their compiled code is in the snapshot rather than compiled at boot under TCG.
 */
async function warmUp(): Promise<void> {
  parseKernelCmdline('console=ttyS0 agent.log=debug agent.hostname=warm-up agent.debug_console');
  const up = new PassThrough();
  const down = new PassThrough();
  const server = new TtrpcServer().register(Health, { check: () => ({ status: 1 }) });
  server.serve(Duplex.from({ readable: up, writable: down }));
  const client = new TtrpcClient(Duplex.from({ readable: down, writable: up }));
  await createClient(Health, client).check({}, { timeoutMs: 5000 });
  client.close();
  server.close();
}

/** Wraps each handler so that it first waits for `ready`. */
function afterModules<S extends DescService>(impl: ServiceImpl<S>, ready: Promise<void>): ServiceImpl<S> {
  const out: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(impl as Record<string, unknown>)) {
    if (typeof handler !== 'function') continue;
    out[name] = async (req: unknown, ctx: CallContext) => {
      await ready;
      return (handler as (r: unknown, c: CallContext) => unknown).call(impl, req, ctx);
    };
  }
  return out as ServiceImpl<S>;
}

function roundTimes(t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Math.round(v * 1000) / 1000]));
}

/** Set when main runs from a V8 startup snapshot: then process.argv has no script path. */
let fromSnapshot = false;

function start(): void {
  main().catch(async (e: unknown) => {
    const log = logger('agent');
    log.fatal({ err: e }, 'agent failed to start');
    if (process.pid === 1) await powerOff(log);
    process.exit(1);
  });
}

// The guest image runs the agent from a V8 startup snapshot (src/image/snapshot.ts): every module is evaluated
// when the image is built, and this function runs at boot. KATA_AGENT_CHECK_SNAPSHOT=1 only checks that the
// snapshot loads (the image builder does that on the host).
interface StartupSnapshot {
  isBuildingSnapshot(): boolean;
  setDeserializeMainFunction(fn: () => void): void;
}
const snapshot = (v8 as unknown as { startupSnapshot?: StartupSnapshot }).startupSnapshot;
if (snapshot?.isBuildingSnapshot()) {
  void warmUp();
  snapshot.setDeserializeMainFunction(() => {
    if (process.env.KATA_AGENT_CHECK_SNAPSHOT === '1') {
      process.stdout.write('kata-agent snapshot ok\n');
      return;
    }
    fromSnapshot = true;
    start();
  });
} else start();
