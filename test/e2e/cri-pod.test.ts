// Kubernetes' view of a kata-ts pod: the test plays kubelet against the CRI plugin of a private containerd.
// Every scenario runs for the RuntimeClass handler `kata` and, as a control, `runc`: a test that fails on both
// is a test bug. One pod (one VM for kata) per handler, shared by the scenarios, then removed and checked gone.
// These pods use the node's network namespace (no CNI conf here; the VM then has loopback only); pod networking
// through CNI is test/e2e/cri-network.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { buildShim } from '../helpers/containerd.js';
import { type ContainerConfig, type PodSandboxConfig, criTime, kv } from '../helpers/cri/client.js';
import {
  type CriContainerd,
  type RuntimeHandler,
  startCriContainerd,
  waitPodsGone,
} from '../helpers/cri/containerd-cri.js';
import { runStream } from '../helpers/cri/stream.js';
import {
  type DefaultConfig,
  configWriter,
  defaultConfig,
  guestImage,
  guestKernelVersion,
} from './shim-fixtures.js';

let env: CriContainerd | undefined;
let confDir: string | undefined;
let kataConfig: DefaultConfig | undefined;
let kernelWanted: string | undefined;

function cri(): CriContainerd {
  if (!env) throw new Error('the CRI containerd is not set up');
  return env;
}

/** containerd's log tail (the kata shim logs there), for failure messages. */
function ctrdLog(): string {
  return `--- containerd log ---\n${env?.ctrd.readLog().slice(-12_000) ?? ''}`;
}

beforeAll(async () => {
  buildShim();
  const guest = await guestImage();
  kernelWanted = guestKernelVersion(guest);
  confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-cri-conf-'));
  // In the template tier (KATA_TS_E2E_TEMPLATE=1) every kata pod is a clone of a VM template.
  kataConfig = await defaultConfig(configWriter(confDir, guest));
  env = await startCriContainerd({ kataConfigPath: kataConfig.config });
});

afterAll(async () => {
  const log = env?.ctrd.readLog() ?? '';
  await env?.stop();
  await kataConfig?.destroy();
  kataConfig?.checkCloned(log);
  if (confDir) fs.rmSync(confDir, { recursive: true, force: true });
});

/** The lines of a CRI log file: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`. */
function criLogLines(file: string): { time: Date; stream: string; tag: string; text: string }[] {
  const out = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const m = /^(\S+) (stdout|stderr) ([FP]) (.*)$/.exec(line);
    if (!m) throw new Error(`${file}: not a CRI log line: ${JSON.stringify(line)}`);
    out.push({ time: new Date(m[1]!), stream: m[2]!, tag: m[3]!, text: m[4]! });
  }
  return out;
}

/** Pids of QEMU processes whose command line names `id` (a kata VM names its sandbox id in its paths). */
function vmsNaming(id: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    if (/(^|\/)qemu-system/.test(cmd) && cmd.includes(id)) out.push(Number(pid));
  }
  return out;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  try {
    return await pollUntil(probe, { timeoutMs, intervalMs: 200, what });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${ctrdLog()}`, { cause: e });
  }
}

describe.each<RuntimeHandler>(['kata', 'runc'])('a pod with runtime_handler %s', (handler) => {
  const name = `cri-${handler}-${process.pid}`;
  let podId = '';
  let podConfig: PodSandboxConfig;
  let logDir = '';
  const containerIds: string[] = [];
  let runPodMs = 0;

  /** A busybox container of this pod; its log at <logDir>/<name>/0.log, as kubelet lays it out. */
  async function startContainer(
    cname: string,
    script: string,
    extra: Partial<ContainerConfig> = {},
  ): Promise<{ id: string; log: string }> {
    fs.mkdirSync(path.join(logDir, cname), { recursive: true });
    const config: ContainerConfig = {
      metadata: { name: cname, attempt: 0 },
      image: { image: cri().images.busybox },
      command: ['sh', '-c', script],
      envs: [kv('POD_HANDLER', handler)],
      logPath: `${cname}/0.log`,
      ...extra,
      // kubelet's default: a pid namespace of the container's own (no shareProcessNamespace).
      linux: {
        ...extra.linux,
        securityContext: {
          namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' },
          ...extra.linux?.securityContext,
        },
      },
    };
    const id = await cri().cri.createContainer(podId, config, podConfig);
    containerIds.push(id);
    await cri().cri.startContainer(id);
    return { id, log: path.join(logDir, cname, '0.log') };
  }

  beforeAll(async () => {
    logDir = path.join(cri().podLogDir, name);
    fs.mkdirSync(logDir, { recursive: true });
    podConfig = {
      metadata: { name, uid: `uid-${name}`, namespace: 'kata-ts-test', attempt: 0 },
      logDirectory: logDir,
      labels: { app: 'kata-ts-cri-test' },
      linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    const t0 = Date.now();
    try {
      // The sandbox container is the pause image: /pause only, USER 65535, and CRI makes its root read-only.
      podId = await cri().cri.runPodSandbox(podConfig, handler);
    } catch (e) {
      throw new Error(`RunPodSandbox (${handler}): ${(e as Error).message}\n${ctrdLog()}`);
    }
    runPodMs = Date.now() - t0;
  });

  afterAll(async () => {
    // Normally the last test removed the pod; after a failure this keeps it from leaking into the next one.
    if (!podId) return;
    await cri()
      .cri.stopPodSandbox(podId)
      .then(() => cri().cri.removePodSandbox(podId))
      .catch(() => {}); // already gone: the removal test passed
  });

  it('RunPodSandbox gives a READY pod running the read-only pause image', async () => {
    const { status, info } = await cri().cri.podSandboxStatus(podId, true);
    expect(status.state).toBe('SANDBOX_READY');
    expect(status.runtimeHandler).toBe(handler);
    expect(status.metadata.name).toBe(name);
    const spec = JSON.parse(info.info ?? '{}').runtimeSpec as { root?: { readonly?: boolean } } | undefined;
    expect(spec?.root?.readonly).toBe(true);
    expect((await cri().cri.listPodSandbox({ id: podId })).map((p) => p.id)).toEqual([podId]);
    console.log(`RunPodSandbox (${handler}): ${runPodMs} ms`);
  });

  let main = { id: '', log: '' };

  it('runs a busybox container in the pod (in its VM with kata) with a read-only rootfs', async () => {
    main = await startContainer(
      'main',
      'echo out-line; echo err-line >&2; trap "echo got-term; exit 7" TERM; while :; do sleep 0.2; done',
      { linux: { securityContext: { readonlyRootfs: true } } },
    );
    const st = await cri().cri.containerStatus(main.id);
    expect(st.status.state).toBe('CONTAINER_RUNNING');
    const uname = await cri().cri.execSync(main.id, ['uname', '-r'], 20);
    expect(uname.exitCode, uname.stderr.toString()).toBe(0);
    const release = uname.stdout.toString().trim();
    if (handler === 'kata') {
      expect(release).not.toBe(os.release());
      if (kernelWanted) expect(release).toBe(kernelWanted);
    } else {
      expect(release).toBe(os.release());
    }
    // Read-only means what it means for runc: the container cannot write its rootfs, but its mounts exist.
    const w = await cri().cri.execSync(
      main.id,
      ['sh', '-c', 'touch /probe; echo "rc=$?"; cat /proc/1/comm'],
      20,
    );
    expect(w.stdout.toString()).toMatch(/rc=1\n/);
    expect(w.stderr.toString()).toMatch(/Read-only file system/);
    expect(w.stdout.toString()).toMatch(/\bsh\n$/);
    const tmpfs = await cri().cri.execSync(
      main.id,
      ['sh', '-c', 'echo x > /dev/shm/ok && cat /dev/shm/ok'],
      20,
    );
    expect(tmpfs.stdout.toString()).toBe('x\n');
  });

  it('writes stdout and stderr to the CRI log file in CRI format', async () => {
    const lines = await waitFor('both log lines', async () => {
      if (!fs.existsSync(main.log)) return undefined;
      const l = criLogLines(main.log);
      return l.length >= 2 ? l : undefined;
    });
    expect(lines.map((l) => [l.stream, l.tag, l.text])).toEqual(
      expect.arrayContaining([
        ['stdout', 'F', 'out-line'],
        ['stderr', 'F', 'err-line'],
      ]),
    );
    for (const l of lines) expect(Math.abs(l.time.getTime() - Date.now())).toBeLessThan(600_000);
  });

  it("ReopenContainerLog after kubelet's log rotation: new lines go to the new file, none lost", async () => {
    const ticker = await startContainer(
      'ticker',
      'i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.1; done',
    );
    const ticks = (file: string) => criLogLines(file).map((l) => Number(l.text.replace('tick ', '')));
    await waitFor('ticks in the log', async () => (ticks(ticker.log).length >= 3 ? true : undefined));
    fs.renameSync(ticker.log, `${ticker.log}.1`);
    await cri().cri.reopenContainerLog(ticker.id);
    await waitFor('ticks in the reopened log', async () =>
      fs.existsSync(ticker.log) && ticks(ticker.log).length >= 3 ? true : undefined,
    );
    await cri().cri.stopContainer(ticker.id, 0);
    const all = [...ticks(`${ticker.log}.1`), ...ticks(ticker.log)];
    expect(all, ctrdLog()).toEqual(all.map((_, i) => i));
    await cri().cri.removeContainer(ticker.id);
  });

  it('ExecSync returns stdout, stderr and the exit code', async () => {
    const r = await cri().cri.execSync(
      main.id,
      ['sh', '-c', 'echo to-out; echo to-err >&2; echo "$POD_HANDLER"; exit 5'],
      20,
    );
    expect(r.stdout.toString()).toBe(`to-out\n${handler}\n`);
    expect(r.stderr.toString()).toBe('to-err\n');
    expect(r.exitCode).toBe(5);
  });

  it('ExecSync honours its timeout', async () => {
    const t0 = Date.now();
    const err = await cri()
      .cri.execSync(main.id, ['sleep', '60'], 2)
      .then(
        () => undefined,
        (e: Error) => e,
      );
    const ms = Date.now() - t0;
    expect(err?.message).toMatch(/timeout 2s exceeded/);
    expect(ms).toBeGreaterThanOrEqual(2_000);
    expect(ms).toBeLessThan(15_000);
    // The timed-out process is gone and the container still serves execs.
    const ps = await cri().cri.execSync(
      main.id,
      ['sh', '-c', 'ps -o args | grep -c "^sleep 60" || true'],
      20,
    );
    expect(ps.stdout.toString().trim()).toBe('0');
  });

  it('ExecSync of a missing binary fails at once (a liveness probe must not stall for a minute)', async () => {
    const t0 = Date.now();
    const err = await cri()
      .cri.execSync(main.id, ['/no/such/binary'], 10)
      .then(
        (r) => new Error(`ExecSync succeeded: exit ${r.exitCode}, stderr ${r.stderr.toString()}`),
        (e: Error) => e,
      );
    const ms = Date.now() - t0;
    console.log(`ExecSync of a missing binary (${handler}): ${ms} ms: ${err.message}`);
    expect(err.message).toMatch(/no such file|not found/i);
    expect(ms, ctrdLog()).toBeLessThan(5_000);
    // And the container is unharmed.
    expect((await cri().cri.execSync(main.id, ['true'], 20)).exitCode).toBe(0);
  });

  it('Exec streams stdin, stdout, stderr and the exit code through the streaming server (kubectl exec)', async () => {
    const url = await cri().cri.exec({
      containerId: main.id,
      cmd: ['sh', '-c', 'head -c 5; echo; echo to-err >&2; exit 3'],
      stdin: true,
      stdout: true,
      stderr: true,
    });
    const r = await runStream(url, { stdin: 'hello', timeoutMs: 30_000 });
    expect({ out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode }, ctrdLog()).toEqual({
      out: 'hello\n',
      err: 'to-err\n',
      code: 3,
    });
  });

  it('Exec with a tty takes the terminal size from the resize channel (kubectl exec -it)', async () => {
    const url = await cri().cri.exec({
      containerId: main.id,
      cmd: ['sh', '-c', 'sleep 1; stty size'],
      tty: true,
      stdin: true,
      stdout: true,
    });
    const r = await runStream(url, { resize: { width: 111, height: 33 }, timeoutMs: 30_000 });
    expect({ out: r.stdout.toString(), code: r.exitCode }, ctrdLog()).toEqual({ out: '33 111\r\n', code: 0 });
  });

  it("Attach streams a running container's stdin and stdout (kubectl attach -i)", async () => {
    const echoer = await startContainer('echoer', 'while read l; do echo "got $l"; done', { stdin: true });
    const url = await cri().cri.attach({ containerId: echoer.id, stdin: true, stdout: true, stderr: true });
    const r = await runStream(url, {
      stdin: 'ping\n',
      until: (o) => o.stdout.toString().includes('got ping\n'),
      timeoutMs: 30_000,
    });
    expect(r.stdout.toString(), ctrdLog()).toBe('got ping\n');
    // Detaching leaves it running.
    expect((await cri().cri.containerStatus(echoer.id)).status.state).toBe('CONTAINER_RUNNING');
  });

  it('reports exit code and times of a finished container', async () => {
    const t0 = Date.now();
    const short = await startContainer('short', 'echo short-lived; exit 3');
    const st = await waitFor('container short to exit', async () => {
      const s = (await cri().cri.containerStatus(short.id)).status;
      return s.state === 'CONTAINER_EXITED' ? s : undefined;
    });
    expect(st.exitCode).toBe(3);
    expect(st.reason).toBe('Error');
    const created = criTime(st.createdAt)!;
    const started = criTime(st.startedAt)!;
    const finished = criTime(st.finishedAt)!;
    expect(created.getTime()).toBeGreaterThanOrEqual(t0 - 1_000);
    expect(started.getTime()).toBeGreaterThanOrEqual(created.getTime());
    // containerd stamps startedAt itself once Start returns, finishedAt is the shim's exit time: a process that
    // exits at once (seen with runc) can "finish" a millisecond before containerd marked it started.
    expect(finished.getTime()).toBeGreaterThanOrEqual(started.getTime() - 50);
    expect(finished.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
    expect(criLogLines(short.log).map((l) => l.text)).toEqual(['short-lived']);
    await cri().cri.removeContainer(short.id);
    expect(await cri().cri.listContainers({ id: short.id })).toEqual([]);
  });

  it('StopContainer sends SIGTERM and, at the end of the grace period, SIGKILL', async () => {
    const stubborn = await startContainer(
      'stubborn',
      'trap "" TERM; echo ready; while :; do sleep 0.2; done',
    );
    if (handler === 'kata') {
      // One VM per pod: the pod's containers joined the sandbox's VM, none got one of its own.
      expect(vmsNaming(podId)).toHaveLength(1);
      for (const c of containerIds) expect(vmsNaming(c)).toEqual([]);
    }
    // The trapping one exits on SIGTERM well within its grace period, and its last line reaches the log.
    let t0 = Date.now();
    await cri().cri.stopContainer(main.id, 20);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const m = (await cri().cri.containerStatus(main.id)).status;
    expect(m.state).toBe('CONTAINER_EXITED');
    expect(m.exitCode).toBe(7);
    expect(criLogLines(main.log).map((l) => l.text)).toContain('got-term');
    // The one ignoring SIGTERM is killed when the grace period ends.
    t0 = Date.now();
    await cri().cri.stopContainer(stubborn.id, 2);
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(2_000);
    expect(ms).toBeLessThan(15_000);
    const s = (await cri().cri.containerStatus(stubborn.id)).status;
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exitCode).toBe(137);
  });

  it('StopPodSandbox and RemovePodSandbox leave nothing behind', async () => {
    await cri().cri.stopPodSandbox(podId);
    expect((await cri().cri.podSandboxStatus(podId)).status.state).toBe('SANDBOX_NOTREADY');
    await cri().cri.removePodSandbox(podId);
    expect(await cri().cri.listPodSandbox({ id: podId })).toEqual([]);
    expect(await cri().cri.listContainers({ podSandboxId: podId })).toEqual([]);
    const left = await waitPodsGone(cri().ctrd, [podId, ...containerIds]);
    expect(left, ctrdLog()).toEqual([]);
    // Idempotent, as kubelet relies on.
    await cri()
      .cri.stopPodSandbox(podId)
      .catch((e: Error) => expect(e.message).toMatch(/not found/i));
    podId = '';
  });
});
