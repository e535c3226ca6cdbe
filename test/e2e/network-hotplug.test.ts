// A NIC hot-plugged into a running guest (Kata's rescan at Start, the Docker 26+ order): the pod netns is empty
// at Create, the caller adds its veth before Start, and the runtime hot-adds the NIC through QMP (getfd +
// netdev_add + device_add on a root port); the guest loads virtio-net only then, and is configured before the
// container runs. containerd's clients always Create and Start together, so the shim's Task service is driven
// in-process over ttrpc, with the real runtime, QEMU and guest. Addresses only inside the netns made here.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { OptionsSchema } from '../../src/protocols/gen/github.com/containerd/containerd/pkg/runtimeoptions/v1/api_pb.js';
import { Task } from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { type Client, TtrpcClient, TtrpcServer, createClient } from '../../src/protocols/ttrpc/index.js';
import { realDeps } from '../../src/runtime/wiring.js';
import { createTaskService } from '../../src/shim/task-service.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { TestNetns, sh } from '../integration/network-helpers.js';
import { CAPS, buildBusyboxRootfs } from './agent-fixtures.js';
import { baseOverrides, configText, guestImage, newId } from './shim-fixtures.js';

const netns = new TestNetns();
let dir: string;
let configPath: string;
const used: string[] = [];
useLeftoverCheck({ per: 'test', ids: () => used });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-hotplug-'));
  configPath = path.join(dir, 'configuration.toml');
  fs.writeFileSync(configPath, configText(baseOverrides(await guestImage())));
});
afterAll(() => {
  netns.destroyAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A bundle whose spec joins `netnsPath`, with a busybox root.path and a FIFO for stdout. */
function bundle(cid: string, netnsPath: string, script: string) {
  const b = path.join(dir, cid);
  buildBusyboxRootfs(path.join(b, 'rootfs'));
  fs.writeFileSync(
    path.join(b, 'config.json'),
    JSON.stringify({
      ociVersion: '1.0.2',
      process: {
        args: ['sh', '-c', script],
        env: ['PATH=/bin'],
        cwd: '/',
        user: { uid: 0, gid: 0 },
        capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS }, // CAP_NET_RAW for ping
      },
      root: { path: 'rootfs' },
      hostname: cid,
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ],
      linux: {
        namespaces: [
          { type: 'pid' },
          { type: 'uts' },
          { type: 'mount' },
          { type: 'network', path: netnsPath },
        ],
      },
    }),
  );
  const stdout = path.join(b, 'stdout');
  execFileSync('mkfifo', [stdout]);
  return { dir: b, stdout };
}

async function readFifo(p: string): Promise<string> {
  const fh = await fs.promises.open(p, 'r');
  const chunks: Buffer[] = [];
  for await (const c of fh.createReadStream()) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('a NIC added to the pod netns between Create and Start', () => {
  it('is hot-plugged, configured in the guest before the container runs, and removed after', async () => {
    const cid = newId('hotplug');
    used.push(cid);
    const pod = netns.add();
    const peer = netns.add();
    const mac = '0a:58:0a:e8:00:02';
    const b = bundle(
      cid,
      pod.path,
      'cat /sys/class/net/eth0/address; ip -o addr show dev eth0; ip route; ping -c 1 -W 5 10.232.0.1 >/dev/null && echo ping-ok',
    );
    const sock = path.join(dir, `${cid}.sock`);
    const server = new TtrpcServer().register(
      Task,
      createTaskService({
        sandboxId: cid,
        namespace: 'kata-ts-test',
        deps: realDeps(),
        publisher: { publish() {}, async flush() {}, close() {} },
        log: logger('hotplug-test'),
        onShutdown: () => {},
      }).impl,
    );
    await server.listen(sock);
    const conn = await TtrpcClient.connect(sock);
    const task: Client<typeof Task> = createClient(Task, conn);
    const out = readFifo(b.stdout);
    try {
      await task.create(
        {
          id: cid,
          bundle: b.dir,
          stdout: b.stdout,
          options: anyPack(OptionsSchema, create(OptionsSchema, { configPath })),
        },
        { timeoutMs: 240_000 },
      );
      // Only now does the pod netns get its interface.
      netns.veth(pod.name, 'eth0', peer.name, 'veth0', { mac });
      sh('ip', ['-n', pod.name, 'addr', 'add', '10.232.0.2/24', 'dev', 'eth0']);
      sh('ip', ['-n', pod.name, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', pod.name, 'route', 'add', 'default', 'via', '10.232.0.1']);
      sh('ip', ['-n', peer.name, 'addr', 'add', '10.232.0.1/24', 'dev', 'veth0']);
      sh('ip', ['-n', peer.name, 'link', 'set', 'veth0', 'up']);

      await task.start({ id: cid }, { timeoutMs: 120_000 });
      const waited = await task.wait({ id: cid }, { timeoutMs: 120_000 });
      const text = await out;
      expect(waited.exitStatus, text).toBe(0);
      expect(text).toContain(`${mac}\n`);
      expect(text).toContain('inet 10.232.0.2/24');
      expect(text).toMatch(/^default via 10\.232\.0\.1 dev eth0/m);
      expect(text).toContain('ping-ok');
      const links = sh('ip', ['-n', pod.name, '-o', 'link', 'show']);
      expect(links).toContain('tap0_kata');
    } finally {
      await task.delete({ id: cid }, { timeoutMs: 60_000 }).catch(() => {});
      await task.shutdown({ id: cid }).catch(() => {});
      conn.close();
      server.close();
      try {
        expect(sh('ip', ['-n', pod.name, '-o', 'link', 'show'])).not.toContain('tap0_kata');
        expect(sh('tc', ['-n', pod.name, 'qdisc', 'show', 'dev', 'eth0'])).not.toContain('ingress');
      } finally {
        netns.destroyAll(); // before the leftover check
      }
    }
  });
});
