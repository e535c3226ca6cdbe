// The guest image in a real VM (QEMU, TCG): the agent is PID 1, does its init duties, serves Health and
// Version over virtio-serial across host reconnects, and powers the VM off so that QEMU exits by itself.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostCpuFeatures } from '../../src/image/snapshot.js';
import { AgentService } from '../../src/protocols/gen/agent_pb.js';
import { Health } from '../../src/protocols/gen/health_pb.js';
import { MessageType, TtrpcClient, createClient, encodeFrame } from '../../src/protocols/ttrpc/index.js';
import { type GuestImageFiles, ensureGuestImage } from '../helpers/guest-image.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { type BootedVm, bootVm, processExists } from '../helpers/vm.js';

// First hook of the file: its after-hook runs last, after the file's own clean-up.
useLeftoverCheck({ per: 'file' });

const canRun = process.getuid?.() === 0 && fs.existsSync('/usr/bin/qemu-system-x86_64');

/** A root shell on the guest's debug console: runs one command line and returns its output. */
class DebugShell {
  private buf = '';
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
    });
  }

  static async open(socketPath: string): Promise<DebugShell> {
    const sock = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    return new DebugShell(sock);
  }

  /** The markers are split with quotes so that the terminal's echo of the typed line does not match. */
  async run(cmd: string, timeoutMs = 60_000): Promise<string> {
    const id = Math.random().toString(36).slice(2, 8);
    this.buf = '';
    this.sock.write(`echo B"EGIN-${id}"; ${cmd}; echo E"ND-${id}"\n`);
    const re = new RegExp(`BEGIN-${id}\\r?\\n([\\s\\S]*?)END-${id}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) return m[1]!.replace(/\r/g, '');
      if (Date.now() > deadline)
        throw new Error(
          `debug shell: no answer to ${JSON.stringify(cmd)}; got ${JSON.stringify(this.buf.slice(-500))}`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  send(line: string): void {
    this.sock.write(`${line}\n`);
  }

  close(): void {
    this.sock.destroy();
  }
}

function qemuProcesses(runDir: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(runDir) && !l.includes(' ps '));
}

/** The JSON log line with this message on the guest console. */
function consoleRecord(consoleText: string, msg: string): Record<string, unknown> | undefined {
  for (const line of consoleText.split('\n')) {
    const start = line.indexOf('{');
    if (start < 0 || !line.includes(`"msg":"${msg}"`)) continue;
    try {
      return JSON.parse(line.slice(start)) as Record<string, unknown>;
    } catch {
      // a line mixed with kernel output: keep looking
    }
  }
  return undefined;
}

describe.skipIf(!canRun)('guest image boot', () => {
  let image: GuestImageFiles;
  const vms: BootedVm[] = [];

  beforeAll(async () => {
    image = await ensureGuestImage();
  });

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
  });

  it('is built with versioned files, links and a manifest, and reused when current', async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(image.dir, 'manifest.json'), 'utf8'));
    expect(path.basename(image.kernel)).toBe(manifest.kernel.file);
    expect(path.basename(image.initrd)).toBe(manifest.initrd.file);
    expect(fs.readlinkSync(path.join(image.dir, 'vmlinuz.container'))).toBe(manifest.kernel.file);
    expect(fs.readlinkSync(path.join(image.dir, 'kata-containers-initrd.img'))).toBe(manifest.initrd.file);
    expect(fs.statSync(image.initrd).size).toBe(manifest.initrd.size);
    expect(manifest.kernelParams).toContain('console=ttyS0');
    expect(manifest.kernel.release).toMatch(/cloud-amd64$/);
    expect(manifest.nodeVersion).toBe(
      execFileSync('/usr/bin/node', ['--version'], { encoding: 'utf8' }).trim(),
    );
    expect(manifest.kernelModules.loadedAtBoot).toEqual(
      expect.arrayContaining(['virtio_pci', 'virtio_console', 'virtiofs']),
    );
    // A second build with the same inputs reuses the image.
    const { buildGuestImage } = await import('../../src/image/index.js');
    const lines: string[] = [];
    const again = await buildGuestImage({ outDir: image.dir, onProgress: (l) => lines.push(l) });
    expect(again.reused).toBe(true);
    expect(again.initrd).toBe(image.initrd);
    expect(lines.some((l) => l.startsWith('reused:'))).toBe(true);
  });

  it('boots to an agent that is PID 1, answers over virtio-serial, and powers off on SIGTERM', async () => {
    const vm = await bootVm({
      memoryMiB: 512,
      debugConsole: true,
      kernelParams: ['agent.log=debug', 'agent.hostname=guest-test'],
    });
    vms.push(vm);
    const client = await vm.connectAgent();
    const health = createClient(Health, client);
    expect((await health.check({})).status).toBe(1); // SERVING
    const version = await health.version({});
    expect(version.agentVersion).not.toBe('');

    // PID-1 duties, as the agent reported them on the console.
    await vm.waitForConsole(/"msg":"agent ready"/);
    const init = consoleRecord(vm.console(), 'guest init done');
    expect(init).toBeDefined();
    expect(init!.pid).toBe(1);
    expect(init!.mounted).toEqual(
      expect.arrayContaining(['/proc', '/sys', '/dev', '/dev/pts', '/dev/shm', '/run', '/sys/fs/cgroup']),
    );
    expect(init!.modules).toEqual(expect.arrayContaining(['virtio_pci', 'virtio_console']));
    const later = consoleRecord(
      await vm.waitForConsole(/"msg":"kernel modules loaded"/).then(() => vm.console()),
      'kernel modules loaded',
    );
    expect(later!.modules).toEqual(expect.arrayContaining(['virtiofs', 'overlay', 'virtio_blk']));
    // This VM has no NIC: virtio-net's driver is left out (src/agent/nic-driver.ts).
    expect(later!.modules).not.toContain('virtio_net');
    expect(init!.cgroupControllers).toEqual(expect.arrayContaining(['cpu', 'memory', 'pids']));
    expect(init!.hostname).toBe('guest-test');
    expect(init!.loopback).toBe(true);
    const ready = consoleRecord(vm.console(), 'agent ready')!;
    expect(ready.pid).toBe(1);
    const manifest = JSON.parse(fs.readFileSync(path.join(image.dir, 'manifest.json'), 'utf8'));

    // And as the guest itself shows them, through the debug console.
    const shell = await DebugShell.open(vm.debugConsoleSocket!);
    // The snapshot is used exactly when the guest's CPU has the V8 features of the build host (this host).
    const guestFlags = new Set(
      (await shell.run('grep -m1 ^flags /proc/cpuinfo')).split(':')[1]?.trim().split(/\s+/),
    );
    const built = hostCpuFeatures();
    const fits = built.has.every((f) => guestFlags.has(f)) && built.lacks.every((f) => !guestFlags.has(f));
    expect(ready.startedFrom).toBe(manifest.agentStart === 'snapshot' && fits ? 'snapshot' : 'bundle');
    expect((await shell.run('cat /proc/1/comm')).trim()).toBe('node');
    expect((await shell.run('hostname')).trim()).toBe('guest-test');
    const mounts = await shell.run('cat /proc/mounts');
    for (const m of [
      ' /proc proc ',
      ' /sys sysfs ',
      ' /dev devtmpfs ',
      ' /dev/pts devpts ',
      ' /run tmpfs ',
      ' /sys/fs/cgroup cgroup2 ',
    ]) {
      expect(mounts).toContain(m);
    }
    expect(await shell.run('cat /sys/fs/cgroup/cgroup.subtree_control')).toMatch(/memory/);
    expect(await shell.run('ip link show lo')).toMatch(/UP/);
    // An orphan the shell leaves behind is reaped: no zombie stays.
    await shell.run('(sleep 1 &) ; sleep 3');
    expect(await shell.run('ps -o stat,comm | grep -c "^Z" || true')).toMatch(/^0/);

    // The host disconnects (a shim restart), even in the middle of a frame: the next host gets a fresh session.
    client.close();
    const half = net.createConnection(vm.agentSocket);
    await new Promise<void>((r) => half.once('connect', () => r()));
    const frame = encodeFrame(1, MessageType.Request, new Uint8Array(64));
    half.write(frame.subarray(0, 20));
    await new Promise((r) => setTimeout(r, 500));
    half.destroy();
    // virtio-serial shows the host's disconnect to the guest asynchronously: give it a moment to notice.
    await new Promise((r) => setTimeout(r, 1000));
    const again = await TtrpcClient.connect(vm.agentSocket, { timeoutMs: 5000 });
    expect((await createClient(Health, again).check({}, { timeoutMs: 60_000 })).status).toBe(1);
    again.close();

    // SIGTERM to PID 1: the agent shuts down, syncs and powers off; QEMU exits on its own.
    shell.send('kill -TERM 1');
    const exit = await Promise.race([
      vm.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`QEMU still running:\n${vm.console().slice(-2000)}`)), 120_000),
      ),
    ]);
    shell.close();
    expect(exit.code).toBe(0);
    expect(vm.console()).toMatch(/"reason":"SIGTERM"[^\n]*"msg":"shutting down"/);
    expect(vm.console()).toMatch(/"msg":"powering off"/);
    await vm.stop();
    expect(processExists(vm.pid)).toBe(false);
    expect(qemuProcesses(vm.runDir)).toEqual([]);
    expect(fs.existsSync(vm.runDir)).toBe(false);
  });

  it('shares a directory over virtio-fs and powers off on DestroySandbox', async () => {
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-share-'));
    try {
      fs.writeFileSync(path.join(share, 'hello.txt'), 'hello from the host\n');
      const vm = await bootVm({ memoryMiB: 512, shareDir: share, debugConsole: true });
      vms.push(vm);
      expect(vm.virtiofsdPid).toBeGreaterThan(0);
      const client = await vm.connectAgent();
      // The shell is not an RPC: it does not wait for the modules the agent loads in the background.
      await vm.waitForConsole(/"msg":"kernel modules loaded"/);
      const shell = await DebugShell.open(vm.debugConsoleSocket!);
      const out = await shell.run(
        'mkdir -p /mnt/share && mount -t virtiofs kataShared /mnt/share && cat /mnt/share/hello.txt',
      );
      expect(out).toContain('hello from the host');
      await shell.run('umount /mnt/share');
      shell.close();

      await createClient(AgentService, client).destroySandbox({});
      client.close();
      const exit = await Promise.race([
        vm.exited,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`QEMU still running:\n${vm.console().slice(-2000)}`)), 120_000),
        ),
      ]);
      expect(exit.code).toBe(0);
      expect(vm.console()).toMatch(/"reason":"DestroySandbox"/);
      await vm.stop();
      expect(processExists(vm.pid)).toBe(false);
      expect(processExists(vm.virtiofsdPid!)).toBe(false);
      expect(qemuProcesses(vm.runDir)).toEqual([]);
    } finally {
      fs.rmSync(share, { recursive: true, force: true });
    }
  });

  it('starts the agent from its bundle on a CPU the snapshot was not made for', async () => {
    const vm = await bootVm({ memoryMiB: 512, extraArgs: ['-cpu', 'qemu64'] });
    vms.push(vm);
    const client = await vm.connectAgent();
    expect((await createClient(Health, client).check({})).status).toBe(1);
    client.close();
    await vm.waitForConsole(/"msg":"agent ready"/);
    expect(consoleRecord(vm.console(), 'agent ready')!.startedFrom).toBe('bundle');
    await vm.stop();
    expect(processExists(vm.pid)).toBe(false);
  });

  it('names the step and the package when an input is missing, and writes nothing', async () => {
    const { buildGuestImage, ImageBuildError } = await import('../../src/image/index.js');
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-image-bad-'));
    try {
      const err = await buildGuestImage({ outDir: out, busyboxBinary: '/nonexistent/busybox' }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ImageBuildError);
      expect((err as Error).message).toMatch(
        /at step "inputs": busybox \(Debian package busybox-static\) not found at \/nonexistent\/busybox/,
      );
      expect(fs.readdirSync(out)).toEqual([]);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('rejects a missing share directory and leaves nothing behind', async () => {
    const runDir = path.join(os.tmpdir(), `kata-vm-bad-share-${process.pid}`);
    await expect(bootVm({ shareDir: '/nonexistent/share', runDir })).rejects.toThrow(
      /shareDir \/nonexistent\/share is not a directory/,
    );
    expect(fs.existsSync(runDir)).toBe(false);
  });
});
