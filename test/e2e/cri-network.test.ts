// Pod networking the way kubelet gets it: the CRI plugin makes the pod netns and runs CNI (Debian's bridge +
// host-local) in it, then hands the netns to the runtime. A kata pod and a runc pod (the control) on one bridge:
// each reports its IP in PodSandboxStatus, sees it on eth0, and serves HTTP to the other. The bridge has no
// address and nothing forwards or masquerades: pods reach only each other. Nothing is left after removal.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import type { PodSandboxConfig } from '../helpers/cri/client.js';
import {
  type RuntimeHandler,
  podCgroupParent,
  removePodCgroup,
  waitPodsGone,
} from '../helpers/cri/containerd-cri.js';
import { useCriSuite } from '../helpers/cri/suite.js';
import { diffLeftovers, snapshotHost } from '../helpers/leftovers.js';

const SUBNET_THIRD = 100 + (process.pid % 100);
const BRIDGE = `kt-br${process.pid % 10000}`;
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

let before = snapshotHost();
let forwardBefore = '';
beforeAll(() => {
  before = snapshotHost();
  forwardBefore = fs.readFileSync(IP_FORWARD, 'utf8');
});
const suite = useCriSuite({ podNetwork: { bridge: BRIDGE, subnet: `10.234.${SUBNET_THIRD}.0/24` } });
const cri = () => suite.cri();
const ctrdLog = () => suite.log();

interface Pod {
  handler: RuntimeHandler;
  id: string;
  ip: string;
  web: string;
  cgroupParent: string;
}

async function startPod(handler: RuntimeHandler): Promise<Pod> {
  const name = `crinet-${handler}-${process.pid}`;
  const logDir = path.join(cri().podLogDir, name);
  fs.mkdirSync(path.join(logDir, 'web'), { recursive: true });
  const uid = `uid-${name}`;
  const podConfig: PodSandboxConfig = {
    metadata: { name, uid, namespace: 'kata-ts-test', attempt: 0 },
    logDirectory: logDir,
    linux: {
      // As kubelet always sets it: the pod's cgroup, which containerd's PodSandboxStats reads.
      cgroupParent: podCgroupParent(uid),
      securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
  let id: string;
  try {
    id = await cri().cri.runPodSandbox(podConfig, handler);
  } catch (e) {
    throw new Error(`RunPodSandbox (${handler}): ${(e as Error).message}\n${ctrdLog()}`);
  }
  const { status } = await cri().cri.podSandboxStatus(id);
  expect(status.state).toBe('SANDBOX_READY');
  const ip = status.network?.ip ?? '';
  const web = await cri().cri.createContainer(
    id,
    {
      metadata: { name: 'web', attempt: 0 },
      image: { image: cri().images.busybox },
      command: [
        'sh',
        '-c',
        `mkdir -p /w && echo hello-from-${handler} > /w/index.html && exec httpd -f -p 8080 -h /w`,
      ],
      logPath: 'web/0.log',
      linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    },
    podConfig,
  );
  await cri().cri.startContainer(web);
  return { handler, id, ip, web, cgroupParent: podCgroupParent(uid) };
}

/** `wget` from a pod's container to another pod, retried while its httpd starts. */
async function fetchFrom(from: Pod, to: Pod): Promise<string> {
  return pollUntil(
    async () => {
      const r = await cri().cri.execSync(from.web, ['wget', '-q', '-O', '-', `http://${to.ip}:8080/`], 20);
      return r.exitCode === 0 ? r.stdout.toString() : undefined;
    },
    {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: `${from.handler} pod to fetch from the ${to.handler} pod at ${to.ip}`,
    },
  );
}

describe('pods on a CNI bridge network', () => {
  const pods: Partial<Record<RuntimeHandler, Pod>> = {};

  it('RunPodSandbox gives each pod an IP from the CNI range, on eth0 of its container', async () => {
    pods.kata = await startPod('kata');
    pods.runc = await startPod('runc');
    for (const p of [pods.kata, pods.runc]) {
      expect(p.ip, `${p.handler} pod IP`).toMatch(new RegExp(`^10\\.234\\.${SUBNET_THIRD}\\.\\d+$`));
      const r = await cri().cri.execSync(p.web, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'], 20);
      expect(r.exitCode, r.stderr.toString()).toBe(0);
      expect(r.stdout.toString()).toContain(`inet ${p.ip}/24`);
    }
    expect(pods.kata.ip).not.toBe(pods.runc.ip);
  });

  it('a kata pod and a runc pod serve HTTP to each other', async () => {
    const { kata, runc } = pods;
    if (!kata || !runc) throw new Error('the pods did not start');
    expect(await fetchFrom(kata, runc)).toBe('hello-from-runc\n');
    expect(await fetchFrom(runc, kata)).toBe('hello-from-kata\n');
  });

  // containerd reads a pod's CPU and memory from its host cgroup (cgroup_parent): with kata the VM's, whose
  // cgroup is the sandbox spec's cgroupsPath below it; the network from the pod netns's eth0; the containers'
  // figures from the runtime (with kata, from the guest).
  it('PodSandboxStats and ListPodSandboxStats report CPU, memory, network and containers of each pod', async () => {
    const listed = await cri().cri.listPodSandboxStats();
    for (const p of Object.values(pods)) {
      const s = await cri()
        .cri.podSandboxStats(p.id)
        .catch((e: Error) => {
          throw new Error(`${p.handler}: ${e.message}\n${ctrdLog()}`);
        });
      const l = s.linux;
      const figures = {
        cpu: Number(l?.cpu?.usageCoreNanoSeconds?.value ?? 0),
        memory: Number(l?.memory?.workingSetBytes?.value ?? 0),
        rx: Number(l?.network?.defaultInterface?.rxBytes?.value ?? 0),
        tx: Number(l?.network?.defaultInterface?.txBytes?.value ?? 0),
      };
      console.log(`PodSandboxStats (${p.handler}): ${JSON.stringify(figures)}`);
      expect(s.attributes?.id).toBe(p.id);
      expect(l?.network?.defaultInterface?.name).toBe('eth0');
      for (const [k, v] of Object.entries(figures)) expect(v, `${p.handler} pod ${k}`).toBeGreaterThan(0);
      expect(l?.containers.map((c) => c.attributes?.id)).toContain(p.web);
      expect(listed.map((x) => x.attributes?.id)).toContain(p.id);
    }
  });

  it('ContainerStats reports CPU and memory of each pod container', async () => {
    for (const p of Object.values(pods)) {
      const c = await cri().cri.containerStats(p.web);
      expect(c.attributes?.id).toBe(p.web);
      expect(Number(c.cpu?.usageCoreNanoSeconds?.value ?? 0), `${p.handler} container CPU`).toBeGreaterThan(
        0,
      );
      expect(Number(c.memory?.workingSetBytes?.value ?? 0), `${p.handler} container memory`).toBeGreaterThan(
        0,
      );
    }
  });

  it('removing the pods leaves nothing: no VM, tap, veth, cgroup or state; no sysctl changed', async () => {
    const ids: string[] = [];
    for (const p of Object.values(pods)) {
      await cri().cri.stopPodSandbox(p.id);
      await cri().cri.removePodSandbox(p.id);
      ids.push(p.id, p.web);
    }
    expect(await waitPodsGone(cri().ctrd, ids), ctrdLog()).toEqual([]);
    for (const p of Object.values(pods)) removePodCgroup(p.cgroupParent); // kubelet's part
    expect(fs.readFileSync(IP_FORWARD, 'utf8')).toBe(forwardBefore);
    await suite.stop();
    // The bridge is gone too; every host link, qdisc and netns is as before the file began.
    expect(diffLeftovers(before, snapshotHost(), ids)).toEqual([]);
  });
});
