// One test pod as kubelet makes it: RunPodSandbox in the node's network namespace (no CNI), busybox containers
// created and started in it with kubelet's log layout, and its removal checked to leave nothing behind.
import fs from 'node:fs';
import path from 'node:path';
import type { ContainerConfig, PodSandboxConfig } from './client.js';
import { type CriContainerd, type RuntimeHandler, waitPodsGone } from './containerd-cri.js';

/** kubelet's default namespaces without CNI: the node's network, a pid namespace per container, the pod's IPC. */
export const NODE_NAMESPACES = { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } as const;

export interface TestPod {
  readonly id: string;
  readonly config: PodSandboxConfig;
  readonly handler: RuntimeHandler;
  /** Creates and starts a busybox container running `sh -c script`; its CRI log is at the returned path. */
  start(name: string, script: string, extra?: Partial<ContainerConfig>): Promise<{ id: string; log: string }>;
  /** StopPodSandbox + RemovePodSandbox; resolves to what is left of the pod and its containers (none is right). */
  remove(): Promise<string[]>;
}

export async function runTestPod(
  env: CriContainerd,
  handler: RuntimeHandler,
  name: string,
  linux: NonNullable<PodSandboxConfig['linux']> = {},
  annotations: Record<string, string> = {},
): Promise<TestPod> {
  const logDir = path.join(env.podLogDir, name);
  fs.mkdirSync(logDir, { recursive: true });
  const config: PodSandboxConfig = {
    metadata: { name, uid: `uid-${name}`, namespace: 'kata-ts-test', attempt: 0 },
    logDirectory: logDir,
    annotations,
    linux: {
      ...linux,
      securityContext: { namespaceOptions: NODE_NAMESPACES, ...linux.securityContext },
    },
  };
  const id = await env.cri.runPodSandbox(config, handler);
  const containers: string[] = [];
  return {
    id,
    config,
    handler,
    async start(cname, script, extra = {}) {
      fs.mkdirSync(path.join(logDir, cname), { recursive: true });
      const cid = await env.cri.createContainer(
        id,
        {
          metadata: { name: cname, attempt: 0 },
          image: { image: env.images.busybox },
          command: ['sh', '-c', script],
          logPath: `${cname}/0.log`,
          ...extra,
          linux: {
            ...extra.linux,
            securityContext: { namespaceOptions: NODE_NAMESPACES, ...extra.linux?.securityContext },
          },
        },
        config,
      );
      containers.push(cid);
      await env.cri.startContainer(cid);
      return { id: cid, log: path.join(logDir, cname, '0.log') };
    },
    async remove() {
      await env.cri.stopPodSandbox(id);
      await env.cri.removePodSandbox(id);
      return waitPodsGone(env.ctrd, [id, ...containers]);
    },
  };
}
