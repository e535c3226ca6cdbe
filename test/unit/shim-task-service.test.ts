// The Task service end to end over ttrpc, with containerd's FIFOs, against a fake agent that runs processes on
// the host: create/start/wait/delete, stdio (order, stdin + CloseIO), exec, kill, pause, stats, events, errors.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type DescMessage, type MessageInitShape, create, fromBinary } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { pollUntil } from '../../src/common/poll.js';
import { MetricsSchema } from '../../src/protocols/gen/github.com/containerd/cgroups/stats/v1/metrics_pb.js';
import { Status } from '../../src/protocols/gen/github.com/containerd/containerd/api/types/task/task_pb.js';
import { OptionsSchema } from '../../src/protocols/gen/github.com/containerd/containerd/pkg/runtimeoptions/v1/api_pb.js';
import { Task } from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import {
  type Client,
  Code,
  TtrpcClient,
  TtrpcServer,
  createClient,
} from '../../src/protocols/ttrpc/index.js';
import type { Publisher } from '../../src/shim/events.js';
import { configPathOf, createTaskService } from '../../src/shim/task-service.js';
import { type FakeEnv, fakeEnv } from './runtime-fakes.js';

interface Published {
  topic: string;
  type: string;
  event: Record<string, unknown>;
}

class RecordingPublisher implements Publisher {
  events: Published[] = [];
  publish<D extends DescMessage>(topic: string, schema: D, event: MessageInitShape<D>): void {
    this.events.push({ topic, type: schema.typeName, event: event as Record<string, unknown> });
  }
  async flush() {}
  close() {}
  topics(): string[] {
    return this.events.map((e) => e.topic);
  }
}

let env: FakeEnv;
let server: TtrpcServer;
let conn: TtrpcClient;
let task: Client<typeof Task>;
let pub: RecordingPublisher;
let shutdowns: number;

async function setup(sandboxId = 'sb1') {
  env = await fakeEnv();
  pub = new RecordingPublisher();
  shutdowns = 0;
  const { impl } = createTaskService({
    sandboxId,
    namespace: 'test',
    deps: env.deps,
    publisher: pub,
    log: logger('shim-test'),
    onShutdown: () => shutdowns++,
  });
  server = new TtrpcServer().register(Task, impl);
  const sock = path.join(env.dir, 'shim.sock');
  await server.listen(sock);
  conn = await TtrpcClient.connect(sock);
  task = createClient(Task, conn);
}

/** A bundle dir with config.json and containerd-style FIFOs for one process. */
function bundle(id: string, args: string[], extra: Record<string, unknown> = {}) {
  const dir = path.join(env.dir, 'bundles', id);
  fs.mkdirSync(path.join(dir, 'rootfs'), { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      ociVersion: '1.0.2',
      process: { args, env: ['PATH=/usr/bin:/bin'], cwd: '/' },
      root: { path: 'rootfs' },
      ...extra,
    }),
  );
  return { dir, ...fifos(id) };
}

function fifos(name: string) {
  const d = path.join(env.dir, 'fifos');
  fs.mkdirSync(d, { recursive: true });
  const p = (s: string) => path.join(d, `${name}-${s}`);
  for (const s of ['stdin', 'stdout', 'stderr']) execFileSync('mkfifo', [p(s)]);
  return { stdin: p('stdin'), stdout: p('stdout'), stderr: p('stderr') };
}

/**
 * containerd's side of an output FIFO: everything until EOF. Non-blocking, as containerd reads it: a blocking
 * open or read would hold one of libuv's four threadpool threads for as long as the process runs, and the shim
 * under test (same process) needs that pool for its own async fs calls.
 */
async function readAll(fifo: string): Promise<string> {
  const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const chunks: Buffer[] = [];
  for await (const c of new net.Socket({ fd, readable: true, writable: false })) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

async function createAndStart(id: string, args: string[], extra: Record<string, unknown> = {}) {
  const b = bundle(id, args, extra);
  const out = readAll(b.stdout);
  const err = readAll(b.stderr);
  const created = await task.create({
    id,
    bundle: b.dir,
    stdin: b.stdin,
    stdout: b.stdout,
    stderr: b.stderr,
  });
  const started = await task.start({ id });
  return { b, out, err, created, started };
}

beforeEach(async () => setup());
afterEach(async () => {
  conn.close();
  server.close();
  await env.close();
});

describe('Task service over the fake agent', () => {
  it('runs a container: output, exit code, state, delete, events, shutdown', async () => {
    const { out, err, created, started } = await createAndStart('sb1', [
      'sh',
      '-c',
      'echo hello; echo oops >&2; exit 7',
    ]);
    expect(created.pid).toBe(4242);
    expect(started.pid).toBe(4242);
    const waited = await task.wait({ id: 'sb1' });
    expect(waited.exitStatus).toBe(7);
    expect(await out).toBe('hello\n');
    expect(await err).toBe('oops\n');
    const st = await task.state({ id: 'sb1' });
    expect(st.status).toBe(Status.STOPPED);
    expect(st.exitStatus).toBe(7);
    const del = await task.delete({ id: 'sb1' });
    expect(del.exitStatus).toBe(7);
    expect(pub.topics()).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    expect(pub.events[2]).toMatchObject({
      type: 'containerd.events.TaskExit',
      event: { containerId: 'sb1', id: 'sb1', exitStatus: 7 },
    });
    // The sandbox container going ends the sandbox: VM stopped, share cleaned, state removed.
    expect(env.hypervisors[0]!.stopped).toBe(true);
    expect(env.hypervisors[0]!.cleaned).toBe(true);
    expect(env.shared.cleanup).toBe(1);
    expect(env.shared.released).toEqual(['sb1']);
    expect(env.states.size).toBe(0);
    expect(env.agent.count('destroySandbox')).toBe(1);
    await expect(task.state({ id: 'sb1' })).rejects.toMatchObject({ code: Code.NotFound });
    await task.shutdown({ id: 'sb1' });
    expect(shutdowns).toBe(1);
  });

  it('persists the VM state the hypervisor hands over before it boots, and the shim by pid + start time', async () => {
    await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    const hv = env.hypervisors[0]!;
    expect(hv.persisted.map((s) => s.processes?.length)).toEqual([0, 1]);
    const st = env.states.get('sb1')!;
    expect(st.vm?.processes).toEqual([{ role: 'vmm', pid: 4242, startTime: 1 }]);
    expect(st.shim).toEqual({ pid: process.pid, startTime: 1 });
    await task.kill({ id: 'sb1', signal: 9 });
    await task.wait({ id: 'sb1' });
    await task.delete({ id: 'sb1' });
    expect(env.states.size).toBe(0);
  });

  it('a VM from a template or the VM cache is renewed before CreateSandbox; one from the cache is replaced', async () => {
    for (const origin of ['template', 'cache'] as const) {
      const id = `sb-${origin}`;
      conn.close();
      server.close();
      await env.close();
      await setup(id);
      env.origin = origin;
      await createAndStart(id, ['true']);
      const order = env.agent.calls.map((c) => c.method);
      for (const m of ['reseedRandomDev', 'setGuestDateTime']) {
        expect(order.indexOf(m), order.join(',')).toBeGreaterThanOrEqual(0);
        expect(order.indexOf(m)).toBeLessThan(order.indexOf('createSandbox'));
      }
      await task.wait({ id });
      await task.delete({ id });
      // Only a VM taken from the cache is replaced (Kata's config lookup: no ConfigPath given).
      expect(env.refills).toEqual(origin === 'cache' ? [undefined] : []);
    }
  });

  it('copies 5,000 lines in order before Wait returns', async () => {
    const { out } = await createAndStart('sb1', [
      'sh',
      '-c',
      'i=1; while [ $i -le 5000 ]; do echo line$i; i=$((i+1)); done',
    ]);
    const w = task.wait({ id: 'sb1' });
    let outDone = false;
    void out.then(() => {
      outDone = true;
    });
    expect((await w).exitStatus).toBe(0);
    const lines = (await out).trimEnd().split('\n');
    expect(outDone).toBe(true);
    expect(lines.length).toBe(5000);
    expect(lines.every((l, i) => l === `line${i + 1}`)).toBe(true);
  });

  it('forwards stdin and closes it on CloseIO', async () => {
    const b = bundle('sb1', ['sh', '-c', 'cat; echo end']);
    const out = readAll(b.stdout);
    await task.create({ id: 'sb1', bundle: b.dir, stdin: b.stdin, stdout: b.stdout, stderr: b.stderr });
    const w = await fs.promises.open(b.stdin, 'w');
    await task.start({ id: 'sb1' });
    await w.write('abc\n');
    await w.write('def\n');
    await w.close();
    await task.closeIO({ id: 'sb1', stdin: true });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(0);
    expect(await out).toBe('abc\ndef\nend\n');
  });

  it('keeps every byte of stdin when CloseIO comes while the stdin copy is backed up (slow agent)', async () => {
    env.agent.stdinDelayMs = 30;
    const b = bundle('sb1', ['sh', '-c', 'wc -c']);
    const out = readAll(b.stdout);
    await task.create({ id: 'sb1', bundle: b.dir, stdin: b.stdin, stdout: b.stdout, stderr: b.stderr });
    await task.start({ id: 'sb1' });
    const w = await fs.promises.open(b.stdin, 'w');
    const total = 12 << 20;
    // As ctr does: write everything (blocking on the FIFO), close, then CloseIO at once.
    for (let sent = 0; sent < total; sent += 32 << 10) await w.write(Buffer.alloc(32 << 10, 0x61));
    await w.close();
    await task.closeIO({ id: 'sb1', stdin: true });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(0);
    expect(Number((await out).trim())).toBe(total);
  });

  it('ends stdin when containerd closes the FIFO without CloseIO (ctr whose stdin ended before Create returned)', async () => {
    const b = bundle('sb1', ['sh', '-c', 'cat; echo end']);
    const out = readAll(b.stdout);
    await task.create({ id: 'sb1', bundle: b.dir, stdin: b.stdin, stdout: b.stdout, stderr: b.stderr });
    const w = await fs.promises.open(b.stdin, 'w');
    await w.write('no-closeio\n');
    await w.close();
    await task.start({ id: 'sb1' });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(0);
    expect(await out).toBe('no-closeio\nend\n');
  });

  it('keeps stdin written before Start when CloseIO also comes before Start (as ctr does)', async () => {
    const b = bundle('sb1', ['sh', '-c', 'cat; echo end']);
    const out = readAll(b.stdout);
    await task.create({ id: 'sb1', bundle: b.dir, stdin: b.stdin, stdout: b.stdout, stderr: b.stderr });
    const w = await fs.promises.open(b.stdin, 'w');
    await w.write('early\n');
    await w.close();
    await task.closeIO({ id: 'sb1', stdin: true });
    await task.start({ id: 'sb1' });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(0);
    expect(await out).toBe('early\nend\n');
  });

  it('gives a process without a stdin FIFO an immediate EOF', async () => {
    const b = bundle('sb1', ['sh', '-c', 'cat; echo eof']);
    const out = readAll(b.stdout);
    await task.create({ id: 'sb1', bundle: b.dir, stdin: '', stdout: b.stdout, stderr: '' });
    await task.start({ id: 'sb1' });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(0);
    expect(await out).toBe('eof\n');
  });

  it('execs a process, with containerd semantics for duplicates and deletes', async () => {
    const { out } = await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    const f = fifos('e1');
    const eout = readAll(f.stdout);
    const spec = {
      typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
      value: Buffer.from(
        JSON.stringify({
          args: ['sh', '-c', 'echo from-exec; exit 3'],
          env: ['PATH=/bin:/usr/bin'],
          cwd: '/',
        }),
      ),
    };
    await task.exec({ id: 'sb1', execId: 'e1', stdout: f.stdout, stderr: '', stdin: '', spec });
    await expect(
      task.exec({ id: 'sb1', execId: 'e1', stdout: '', stderr: '', stdin: '', spec }),
    ).rejects.toMatchObject({
      code: Code.AlreadyExists,
    });
    expect((await task.state({ id: 'sb1', execId: 'e1' })).status).toBe(Status.CREATED);
    await task.start({ id: 'sb1', execId: 'e1' });
    expect((await task.wait({ id: 'sb1', execId: 'e1' })).exitStatus).toBe(3);
    expect(await eout).toBe('from-exec\n');
    expect((await task.delete({ id: 'sb1', execId: 'e1' })).exitStatus).toBe(3);
    await expect(task.state({ id: 'sb1', execId: 'e1' })).rejects.toMatchObject({ code: Code.NotFound });
    expect(pub.topics()).toContain('/tasks/exec-added');
    expect(pub.topics()).toContain('/tasks/exec-started');

    // Deleting a running container is refused; kill then delete works; a finished process cannot be killed.
    await expect(task.delete({ id: 'sb1' })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await task.kill({ id: 'sb1', signal: 9 });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(137);
    await expect(task.kill({ id: 'sb1', signal: 9 })).rejects.toMatchObject({ code: Code.NotFound });
    expect(await out).toBe('');
    await task.delete({ id: 'sb1' });
  });

  it('ends an exec whose Start failed at once, and kills only the exec on kill --all (CRI ExecSync)', async () => {
    await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    const spec = (args: string[]) => ({
      typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
      value: Buffer.from(JSON.stringify({ args, env: ['PATH=/bin:/usr/bin'], cwd: '/' })),
    });
    // CRI's execInternal: Exec, Wait, then Start; after the failed Start, Delete(WithProcessKill): Wait, Kill
    // (all) and Delete. Each must answer at once, not at containerd's one-minute deadline.
    env.agent.failExecProcess = 'exec: "/no/such/binary": stat /no/such/binary: no such file or directory';
    const f = fifos('e1');
    const eout = readAll(f.stdout);
    await task.exec({ id: 'sb1', execId: 'e1', stdout: f.stdout, stderr: '', stdin: '', spec: spec(['/x']) });
    const waited = task.wait({ id: 'sb1', execId: 'e1' });
    await expect(task.start({ id: 'sb1', execId: 'e1' })).rejects.toThrow(/no such file or directory/);
    expect((await waited).exitStatus).toBe(255);
    expect((await task.wait({ id: 'sb1', execId: 'e1' })).exitStatus).toBe(255);
    // NotFound is what containerd's WithProcessKill takes for "already gone".
    await expect(task.kill({ id: 'sb1', execId: 'e1', signal: 9, all: true })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    expect((await task.delete({ id: 'sb1', execId: 'e1' })).exitStatus).toBe(255);
    expect(await eout).toBe('');
    expect(pub.topics()).not.toContain('/tasks/exit');
    env.agent.failExecProcess = undefined;

    // kill --all of a running exec signals that exec, never the container's init.
    const g = fifos('e2');
    void readAll(g.stdout);
    await task.exec({
      id: 'sb1',
      execId: 'e2',
      stdout: g.stdout,
      stderr: '',
      stdin: '',
      spec: spec(['sleep', '30']),
    });
    await task.start({ id: 'sb1', execId: 'e2' });
    await task.kill({ id: 'sb1', execId: 'e2', signal: 9, all: true });
    expect((await task.wait({ id: 'sb1', execId: 'e2' })).exitStatus).toBe(137);
    await task.delete({ id: 'sb1', execId: 'e2' });
    expect((await task.state({ id: 'sb1' })).status).toBe(Status.RUNNING);

    await task.kill({ id: 'sb1', signal: 9 });
    await task.wait({ id: 'sb1' });
    await task.delete({ id: 'sb1' });
  });

  it('delivers SIGTERM to a trapping process, pauses and resumes, reports stats', async () => {
    // The script says when its trap is set: a SIGTERM before that would end it with 143, not 42.
    const trapped = path.join(os.tmpdir(), `kts-trapped-${process.pid}-${Date.now()}`);
    await createAndStart('sb1', [
      'sh',
      '-c',
      `trap "exit 42" TERM; : > ${trapped}; while true; do sleep 0.1; done`,
    ]);
    await pollUntil(() => fs.existsSync(trapped), { timeoutMs: 10_000, what: 'the trap to be set' });
    fs.rmSync(trapped, { force: true });
    await task.pause({ id: 'sb1' });
    expect((await task.state({ id: 'sb1' })).status).toBe(Status.PAUSED);
    await expect(task.pause({ id: 'sb1' })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await task.resume({ id: 'sb1' });
    expect((await task.state({ id: 'sb1' })).status).toBe(Status.RUNNING);
    expect(pub.topics()).toEqual(expect.arrayContaining(['/tasks/paused', '/tasks/resumed']));

    const stats = await task.stats({ id: 'sb1' });
    expect(stats.stats?.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = fromBinary(MetricsSchema, stats.stats!.value);
    expect(m.cpu?.usage?.total).toBe(123n);
    expect(m.cpu?.usage?.perCpu).toEqual([100n, 23n]);
    expect(m.memory?.usage?.usage).toBe(4096n);
    expect(m.memory?.rss).toBe(77n);
    expect(m.memory?.totalCache).toBe(5n);
    expect(m.pids?.current).toBe(2n);

    await task.kill({ id: 'sb1', signal: 15 });
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(42);
    await task.delete({ id: 'sb1' });
  });

  it('answers NotFound, FailedPrecondition and Unimplemented like runc', async () => {
    await expect(task.state({ id: 'nope' })).rejects.toMatchObject({ code: Code.NotFound });
    await expect(task.start({ id: 'nope' })).rejects.toMatchObject({ code: Code.NotFound });
    await expect(task.checkpoint({ id: 'nope', path: '/x' })).rejects.toMatchObject({
      code: Code.Unimplemented,
    });
    await createAndStart('sb1', ['sh', '-c', 'exit 0']);
    await expect(task.start({ id: 'sb1' })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(task.state({ id: 'sb1', execId: 'missing' })).rejects.toMatchObject({ code: Code.NotFound });
    await task.wait({ id: 'sb1' });
    // Shutdown with a container still there does nothing.
    await task.shutdown({ id: 'sb1' });
    expect(shutdowns).toBe(0);
    await task.delete({ id: 'sb1' });
  });

  it('leaves nothing when the agent refuses the container', async () => {
    env.agent.failCreateContainer = 'no such image';
    const b = bundle('sb1', ['true']);
    const err = await task
      .create({ id: 'sb1', bundle: b.dir, stdin: '', stdout: '', stderr: '' })
      .catch((e) => e);
    expect(err.message).toMatch(/creating container sb1: no such image/);
    expect(env.hypervisors[0]!.stopped).toBe(true);
    expect(env.shared.cleanup).toBe(1);
    expect(env.shared.released).toEqual(['sb1']);
    expect(env.states.size).toBe(0);
    // containerd follows with Delete (NotFound is fine for it) and Shutdown, which must end the shim.
    await expect(task.delete({ id: 'sb1' })).rejects.toMatchObject({ code: Code.NotFound });
    await task.shutdown({ id: 'sb1' });
    expect(shutdowns).toBe(1);
  });

  it('names the cause when the VM does not start, and cleans up', async () => {
    env.failStart = 'could not load kernel /nope/vmlinuz';
    const b = bundle('sb1', ['true']);
    const err = await task
      .create({ id: 'sb1', bundle: b.dir, stdin: '', stdout: '', stderr: '' })
      .catch((e) => e);
    expect(err.message).toMatch(/could not load kernel \/nope\/vmlinuz/);
    expect(env.hypervisors[0]!.cleaned).toBe(true);
    expect(env.shared.cleanup).toBe(1);
    expect(env.states.size).toBe(0);
  });

  it('marks every process exited (255) when the VM dies', async () => {
    await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    env.hypervisors[0]!.crash();
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(255);
    expect(pub.events.find((e) => e.topic === '/tasks/exit')?.event).toMatchObject({ exitStatus: 255 });
    // With the VM gone a kill is runc's "process already finished", never a silent success.
    await expect(task.kill({ id: 'sb1', signal: 9 })).rejects.toMatchObject({ code: Code.NotFound });
    env.agent.killAll();
  });

  it('answers a kill racing the stop of the sandbox with NotFound "process already finished"', async () => {
    await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    // The sandbox stops (Shutdown now) while DestroySandbox is pending: the process is not marked exited yet,
    // and the VM is going. (A VM that dies on its own marks its processes exited at once: the test above.)
    let release!: () => void;
    const pending = new Promise<void>((r) => {
      release = r;
    });
    env.agent.holdDestroy = pending;
    const shutdown = task.shutdown({ id: 'sb1', now: true });
    await new Promise((r) => setTimeout(r, 20));
    const err = await task.kill({ id: 'sb1', signal: 15 }).catch((e) => e);
    expect(err).toMatchObject({ code: Code.NotFound });
    expect(err.message).toMatch(/process already finished \(the VM of sandbox sb1 is stopping\)/);
    release();
    await shutdown;
    expect((await task.wait({ id: 'sb1' })).exitStatus).toBe(255);
    env.agent.killAll();
  });

  it('groups pod containers in one sandbox and keeps it until the sandbox container goes', async () => {
    await createAndStart('sb1', ['sh', '-c', 'sleep 30']);
    const { out } = await createAndStart('c2', ['sh', '-c', 'echo second']);
    expect((await task.wait({ id: 'c2' })).exitStatus).toBe(0);
    expect(await out).toBe('second\n');
    expect(env.hypervisors.length).toBe(1);
    await task.delete({ id: 'c2' });
    expect(env.hypervisors[0]!.stopped).toBe(false);
    expect(env.agent.count('removeContainer')).toBe(1); // a container leaving a running sandbox goes in the guest
    await task.shutdown({ id: 'c2' });
    expect(shutdowns).toBe(0);
    await task.kill({ id: 'sb1', signal: 9 });
    await task.wait({ id: 'sb1' });
    await task.delete({ id: 'sb1' });
    expect(env.hypervisors[0]!.stopped).toBe(true);
    // The sandbox container's delete ends the sandbox: DestroySandbox alone tells the guest.
    expect(env.agent.count('removeContainer')).toBe(1);
    expect(env.agent.count('destroySandbox')).toBe(1);
  });
});

describe('runtime options', () => {
  it('reads ConfigPath from runtimeoptions.v1.Options', () => {
    const any = anyPack(OptionsSchema, create(OptionsSchema, { configPath: '/etc/kata/x.toml' }));
    expect(configPathOf({ ...any, typeUrl: 'runtimeoptions.v1.Options' })).toBe('/etc/kata/x.toml');
    expect(configPathOf(undefined)).toBeUndefined();
  });
});
