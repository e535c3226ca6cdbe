// Fakes for runtime and shim unit tests: an agent that runs "containers" as host child processes (same stream,
// wait and signal semantics as the real agent), a hypervisor that starts nothing, a shared fs in a temp dir.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig } from '../../src/config/index.js';
import type { KataConfig } from '../../src/config/types.js';
import type {
  Hypervisor,
  NicSink,
  NicSpec,
  VmConfig,
  VmExit,
  VmState,
} from '../../src/hypervisor/hypervisor.js';
import { AgentService, type CreateContainerRequest } from '../../src/protocols/gen/agent_pb.js';
import { Health } from '../../src/protocols/gen/health_pb.js';
import { Code, TtrpcError, TtrpcServer } from '../../src/protocols/ttrpc/index.js';
import { connectAgent } from '../../src/runtime/agent.js';
import type { PersistedSandbox, RuntimeDeps, SharedFsHandle } from '../../src/runtime/deps.js';

/** Output as the real agent serves it: data in order, then one empty read (EOF), then errors. */
class Stream {
  private chunks: Buffer[] = [];
  private ended = false;
  private eofReported = false;
  private waiters: (() => void)[] = [];
  push(b: Buffer) {
    this.chunks.push(b);
    this.wake();
  }
  end() {
    this.ended = true;
    this.wake();
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  async read(len: number): Promise<Buffer> {
    while (this.chunks.length === 0) {
      if (this.ended) {
        if (this.eofReported) throw new TtrpcError(Code.Unknown, 'EOF: the stream is closed and drained');
        this.eofReported = true;
        return Buffer.alloc(0);
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = all.length > len ? [all.subarray(len)] : [];
    return all.subarray(0, len);
  }
}

interface FakeProc {
  child?: ChildProcess;
  args: string[];
  env: string[];
  stdout: Stream;
  stderr: Stream;
  exit: Promise<number>;
  setExit: (n: number) => void;
}

export class FakeAgent {
  readonly server = new TtrpcServer();
  readonly calls: { method: string; req: unknown }[] = [];
  readonly containers = new Map<string, { spec: CreateContainerRequest; procs: Map<string, FakeProc> }>();
  failCreateContainer: string | undefined;
  /** ExecProcess fails with this (as the agent does for a missing binary). */
  failExecProcess: string | undefined;
  /** WriteStdin answers this much later (a slow guest: the shim's stdin backs up). */
  stdinDelayMs = 0;
  /** DestroySandbox waits for this (a test holds a sandbox in "stopping"). */
  holdDestroy: Promise<void> | undefined;
  destroyed = false;

  constructor() {
    const rec = (method: string, req: unknown) => this.calls.push({ method, req });
    const proc = (cid: string, eid: string): FakeProc => {
      const p = this.containers.get(cid)?.procs.get(eid);
      if (!p) throw new TtrpcError(Code.NotFound, `process ${cid}/${eid} not found`);
      return p;
    };
    const newProc = (args: string[], env: string[]): FakeProc => {
      let setExit!: (n: number) => void;
      const exit = new Promise<number>((r) => {
        setExit = r;
      });
      return { args, env, stdout: new Stream(), stderr: new Stream(), exit, setExit };
    };
    const run = (p: FakeProc) => {
      // Its own process group stands in for the container's pid namespace: signals to the init reach all.
      const child = spawn(p.args[0]!, p.args.slice(1), {
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe'],
        env: Object.fromEntries(p.env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
      });
      p.child = child;
      child.stdout!.on('data', (d: Buffer) => p.stdout.push(d));
      child.stderr!.on('data', (d: Buffer) => p.stderr.push(d));
      child.stdout!.on('end', () => p.stdout.end());
      child.stderr!.on('end', () => p.stderr.end());
      child.stdin!.on('error', () => {});
      child.on('exit', (code, sig) =>
        p.setExit(code ?? 128 + (os.constants.signals[sig as NodeJS.Signals] ?? 0)),
      );
    };
    this.server.register(Health, { check: () => ({ status: 1 }) });
    this.server.register(AgentService, {
      createSandbox: (r) => {
        rec('createSandbox', r);
        return {};
      },
      reseedRandomDev: (r) => {
        rec('reseedRandomDev', r);
        return {};
      },
      setGuestDateTime: (r) => {
        rec('setGuestDateTime', r);
        return {};
      },
      destroySandbox: async (r) => {
        rec('destroySandbox', r);
        await this.holdDestroy;
        this.destroyed = true;
        this.killAll();
        return {};
      },
      createContainer: (r) => {
        rec('createContainer', r);
        if (this.failCreateContainer) throw new TtrpcError(Code.Internal, this.failCreateContainer);
        if (this.containers.has(r.containerId)) throw new TtrpcError(Code.AlreadyExists, 'exists');
        const procs = new Map([['', newProc(r.OCI?.Process?.Args ?? [], r.OCI?.Process?.Env ?? [])]]);
        this.containers.set(r.containerId, { spec: r, procs });
        return {};
      },
      startContainer: (r) => {
        rec('startContainer', r);
        run(proc(r.containerId, ''));
        return {};
      },
      execProcess: (r) => {
        rec('execProcess', r);
        if (this.failExecProcess) throw new TtrpcError(Code.Internal, this.failExecProcess);
        const c = this.containers.get(r.containerId);
        if (!c) throw new TtrpcError(Code.NotFound, 'no container');
        const p = newProc(r.process?.Args ?? [], r.process?.Env ?? []);
        c.procs.set(r.execId, p);
        run(p);
        return {};
      },
      waitProcess: async (r) => ({ status: await proc(r.containerId, r.execId).exit }),
      readStdout: async (r) => ({ data: await proc(r.containerId, r.execId).stdout.read(r.len) }),
      readStderr: async (r) => ({ data: await proc(r.containerId, r.execId).stderr.read(r.len) }),
      writeStdin: async (r) => {
        const p = proc(r.containerId, r.execId);
        if (this.stdinDelayMs) await new Promise((res) => setTimeout(res, this.stdinDelayMs));
        await new Promise<void>((res) => p.child!.stdin!.write(r.data, () => res()));
        return { len: r.data.length };
      },
      closeStdin: (r) => {
        rec('closeStdin', r);
        proc(r.containerId, r.execId).child?.stdin?.end();
        return {};
      },
      signalProcess: (r) => {
        rec('signalProcess', r);
        const child = proc(r.containerId, r.execId).child;
        if (child?.pid) process.kill(r.execId ? child.pid : -child.pid, r.signal);
        return {};
      },
      pauseContainer: (r) => {
        rec('pauseContainer', r);
        proc(r.containerId, '').child?.kill('SIGSTOP');
        return {};
      },
      resumeContainer: (r) => {
        rec('resumeContainer', r);
        proc(r.containerId, '').child?.kill('SIGCONT');
        return {};
      },
      ttyWinResize: (r) => {
        rec('ttyWinResize', r);
        return {};
      },
      updateContainer: (r) => {
        rec('updateContainer', r);
        return {};
      },
      removeContainer: (r) => {
        rec('removeContainer', r);
        this.containers.delete(r.containerId);
        return {};
      },
      statsContainer: (r) => {
        rec('statsContainer', r);
        return {
          cgroupStats: {
            cpuStats: { cpuUsage: { totalUsage: 123n, percpuUsage: [100n, 23n] } },
            memoryStats: { usage: { usage: 4096n, limit: 1n << 30n }, stats: { rss: 77n, total_cache: 5n } },
            pidsStats: { current: 2n, limit: 100n },
          },
        };
      },
      getOOMEvent: () => new Promise(() => {}),
    });
  }

  killAll(): void {
    for (const c of this.containers.values()) {
      for (const p of c.procs.values()) {
        try {
          if (p.child?.pid && p.child.exitCode === null) process.kill(-p.child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }

  count(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }
}

export class FakeHypervisor implements Hypervisor {
  readonly name = 'qemu';
  readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  running = false;
  stopped = false;
  cleaned = false;
  prepared: unknown;

  constructor(
    private readonly agentSocket: string,
    private readonly failStart?: string,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }
  async check() {}
  /** saveState() as handed to VmConfig.persistState, in order. */
  readonly persisted: VmState[] = [];
  private persistState: VmConfig['persistState'];
  async prepareVm(cfg: VmConfig) {
    this.prepared = cfg;
    this.persistState = cfg.persistState;
    await this.record(); // as the driver does before it creates the run dir
  }
  private async record() {
    const s = this.saveState();
    this.persisted.push(s);
    await this.persistState?.(s);
  }
  async startVm() {
    if (this.failStart) {
      this.resolveExit({
        code: 1,
        signal: null,
        stderrTail: this.failStart,
        reason: 'qemu exited with code 1',
      });
      throw new Error(`qemu failed to start: ${this.failStart}`);
    }
    this.running = true;
    await this.record(); // as the driver does right after spawning
  }
  async stopVm() {
    this.stopped = true;
    if (this.running)
      this.resolveExit({ code: 0, signal: null, stderrTail: '', reason: 'stopped by stopVm' });
    this.running = false;
  }
  /** Simulates QEMU dying. */
  crash() {
    this.running = false;
    this.resolveExit({ code: null, signal: 'SIGKILL', stderrTail: 'killed', reason: 'qemu was killed' });
  }
  async pauseVm() {}
  async resumeVm() {}
  saveState(): VmState {
    return {
      hypervisor: 'qemu',
      sandboxId: 'x',
      pid: this.running ? 4242 : 0,
      runDir: '/nonexistent',
      processes: this.running ? [{ role: 'vmm', pid: 4242, startTime: 1 }] : [],
      agent: { kind: 'virtio-serial', socketPath: this.agentSocket },
      accel: 'tcg',
    };
  }
  async addDevice() {
    return { id: 'x' };
  }
  async removeDevice() {}
  async resizeVcpus() {
    return { old: 1, new: 1 };
  }
  async resizeMemory(m: number) {
    return m;
  }
  getPids() {
    return this.running ? [4242] : [];
  }
  capabilities() {
    return { blockDeviceHotplug: false, multiQueue: false, fsSharing: true, vsock: false };
  }
  agentEndpoint() {
    return { kind: 'virtio-serial' as const, socketPath: this.agentSocket };
  }
  /** Set by a test to play a VM restored from a template. */
  restored = false;
  /** Set by a test to play a VM taken from the VM cache. */
  fromCache = false;
  origin() {
    if (this.fromCache) return 'cache' as const;
    return this.restored ? ('template' as const) : ('boot' as const);
  }
  async saveTemplate() {
    throw new Error('FakeHypervisor: saveTemplate is not faked');
  }
  async keepInCache() {
    throw new Error('FakeHypervisor: keepInCache is not faked');
  }
  async cleanup() {
    this.cleaned = true;
  }
  /** NICs given to nicSink(), with whether they were cold-plugged (before startVm) or hotplugged. */
  readonly nics: (NicSpec & { cold: boolean })[] = [];
  nicSink(): NicSink {
    const cold = !this.running;
    return {
      attachNic: async (spec) => {
        this.nics.push({ ...spec, cold });
      },
      detachNic: async (id) => {
        const i = this.nics.findIndex((n) => n.id === id);
        if (i >= 0) this.nics.splice(i, 1);
      },
    };
  }
}

export interface FakeEnv {
  dir: string;
  agent: FakeAgent;
  deps: RuntimeDeps;
  hypervisors: FakeHypervisor[];
  states: Map<string, PersistedSandbox>;
  shared: { setup: number; cleanup: number; prepared: string[]; released: string[] };
  config: KataConfig;
  failStart?: string;
  /** Where the next hypervisors' VMs come from (default boot). */
  origin?: 'boot' | 'template' | 'cache';
  /** Config paths of the VM cache refills the runtime asked for. */
  refills: (string | undefined)[];
  close(): Promise<void>;
}

export async function fakeEnv(): Promise<FakeEnv> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-rt-'));
  const agent = new FakeAgent();
  const sock = path.join(dir, 'agent.sock');
  await agent.server.listen(sock);
  const config = defaultConfig();
  config.agent.dial_timeout = 5;
  const env: FakeEnv = {
    dir,
    agent,
    hypervisors: [],
    states: new Map(),
    shared: { setup: 0, cleanup: 0, prepared: [], released: [] },
    config,
    refills: [],
    deps: undefined as unknown as RuntimeDeps,
    close: async () => {
      agent.killAll();
      agent.server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  const sharedFs = (sid: string): SharedFsHandle => ({
    hostSharedDir: path.join(dir, 'shared', sid),
    setup: async () => {
      env.shared.setup++;
    },
    guestStorage: () => ({
      driver: 'virtio-fs',
      source: 'kataShared',
      mountPoint: '/run/kata-containers/shared/containers',
    }),
    prepareContainer: async (cid, o) => {
      env.shared.prepared.push(cid);
      return {
        guestSpec: { ...o.spec, root: { path: `/run/kata-containers/shared/containers/${cid}/rootfs` } },
        storages: [],
      };
    },
    releaseContainer: async (cid) => {
      env.shared.released.push(cid);
    },
    cleanup: async () => {
      env.shared.cleanup++;
    },
  });
  env.deps = {
    loadConfig: () => structuredClone(env.config),
    createHypervisor: () => {
      const hv = new FakeHypervisor(sock, env.failStart);
      hv.restored = env.origin === 'template';
      hv.fromCache = env.origin === 'cache';
      env.hypervisors.push(hv);
      return hv;
    },
    sharedFs,
    refillVmCache: (_config, configPath) => {
      env.refills.push(configPath);
    },
    connectAgent: (ep, o) => connectAgent(ep, o),
    saveState: async (s) => {
      env.states.set(s.sandboxId, structuredClone(s));
    },
    removeState: async (id) => {
      env.states.delete(id);
    },
    processes: {
      identify: async (pid) => ({ pid, startTime: 1 }),
      terminate: async () => false,
    },
  };
  return env;
}
