// A CRI v1 client for tests: plays kubelet against containerd's CRI plugin over its unix socket. The proto is
// cri-api's own (protos/cri/api.proto, upstream field numbers), loaded at run time; every call has a deadline.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { REPO } from '../containerd.js';
import type {
  Container,
  ContainerConfig,
  ContainerState,
  ContainerStats,
  ContainerStatusResponse,
  ExecSyncResponse,
  Image,
  KeyValue,
  LinuxContainerResources,
  PodSandbox,
  PodSandboxConfig,
  PodSandboxStats,
  PodSandboxStatusResponse,
  VersionResponse,
} from './types.js';

export type * from './types.js';

export const CRI_PROTO = path.join(REPO, 'protos/cri/api.proto');

/** Default deadline of a call; RunPodSandbox and friends boot a VM under TCG and get more (see below). */
const DEFAULT_TIMEOUT_MS = 30_000;
/** A kata pod takes ~15 s to start here; containerd's own CRI timeouts are minutes. */
export const SLOW_TIMEOUT_MS = 180_000;

/** An env entry (KeyValue.value is `bytes` in current cri-api). */
export function kv(key: string, value: string): KeyValue {
  return { key, value: Buffer.from(value) };
}

/** A CRI timestamp (int64 ns as a decimal string) as a Date; undefined when unset (0). */
export function criTime(ns: string): Date | undefined {
  const n = BigInt(ns || '0');
  return n === 0n ? undefined : new Date(Number(n / 1_000_000n));
}

/** A failed CRI call: the method, the gRPC status and containerd's message. */
export class CriError extends Error {
  override name = 'CriError';
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`CRI ${method} failed: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Unary = (
  req: object,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;

interface ServiceCtor {
  new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ClientOptions): grpc.Client;
}

let loaded: { runtime: ServiceCtor; image: ServiceCtor } | undefined;

function services(): { runtime: ServiceCtor; image: ServiceCtor } {
  if (loaded) return loaded;
  const def = protoLoader.loadSync(CRI_PROTO, {
    keepCase: false,
    longs: String, // timestamps are int64 nanoseconds: beyond 2^53
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    runtime: { v1: { RuntimeService: ServiceCtor; ImageService: ServiceCtor } };
  };
  loaded = { runtime: pkg.runtime.v1.RuntimeService, image: pkg.runtime.v1.ImageService };
  return loaded;
}

export interface CallOptions {
  /** Deadline of this call in ms (default 30 s). */
  timeoutMs?: number;
}

export class CriClient {
  private readonly runtime: grpc.Client;
  private readonly image: grpc.Client;

  constructor(readonly socket: string) {
    const s = services();
    // grpc-js resolves `unix:` targets itself; no proxy, plain text on a local socket.
    const opts: grpc.ClientOptions = { 'grpc.max_receive_message_length': 64 << 20 };
    this.runtime = new s.runtime(`unix:${socket}`, grpc.credentials.createInsecure(), opts);
    this.image = new s.image(`unix:${socket}`, grpc.credentials.createInsecure(), opts);
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }

  private call<T>(client: grpc.Client, method: string, req: object, o: CallOptions = {}): Promise<T> {
    const fn = (client as unknown as Record<string, Unary>)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`CRI client has no method ${method}`));
    const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res as T);
      });
    });
  }

  private rt<T>(method: string, req: object, o?: CallOptions): Promise<T> {
    return this.call<T>(this.runtime, method, req, o);
  }

  version(o?: CallOptions): Promise<VersionResponse> {
    return this.rt('version', { version: 'v1' }, o);
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string, o?: CallOptions): Promise<string> {
    const r = await this.rt<{ podSandboxId: string }>(
      'runPodSandbox',
      { config, runtimeHandler },
      { timeoutMs: SLOW_TIMEOUT_MS, ...o },
    );
    return r.podSandboxId;
  }

  async stopPodSandbox(podSandboxId: string, o?: CallOptions): Promise<void> {
    await this.rt('stopPodSandbox', { podSandboxId }, { timeoutMs: SLOW_TIMEOUT_MS, ...o });
  }

  async removePodSandbox(podSandboxId: string, o?: CallOptions): Promise<void> {
    await this.rt('removePodSandbox', { podSandboxId }, { timeoutMs: SLOW_TIMEOUT_MS, ...o });
  }

  podSandboxStatus(
    podSandboxId: string,
    verbose = false,
    o?: CallOptions,
  ): Promise<PodSandboxStatusResponse> {
    return this.rt('podSandboxStatus', { podSandboxId, verbose }, o);
  }

  async listPodSandbox(filter: { id?: string } = {}, o?: CallOptions): Promise<PodSandbox[]> {
    const r = await this.rt<{ items: PodSandbox[] }>('listPodSandbox', { filter }, o);
    return r.items;
  }

  async createContainer(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
    o?: CallOptions,
  ): Promise<string> {
    const r = await this.rt<{ containerId: string }>(
      'createContainer',
      { podSandboxId, config, sandboxConfig },
      { timeoutMs: SLOW_TIMEOUT_MS, ...o },
    );
    return r.containerId;
  }

  async startContainer(containerId: string, o?: CallOptions): Promise<void> {
    await this.rt('startContainer', { containerId }, { timeoutMs: SLOW_TIMEOUT_MS, ...o });
  }

  /** Stops with a grace period of `timeoutSec` (SIGTERM, then SIGKILL); the call's deadline allows for it. */
  async stopContainer(containerId: string, timeoutSec: number, o?: CallOptions): Promise<void> {
    await this.rt(
      'stopContainer',
      { containerId, timeout: timeoutSec },
      { timeoutMs: timeoutSec * 1000 + DEFAULT_TIMEOUT_MS, ...o },
    );
  }

  async removeContainer(containerId: string, o?: CallOptions): Promise<void> {
    await this.rt('removeContainer', { containerId }, { timeoutMs: SLOW_TIMEOUT_MS, ...o });
  }

  containerStatus(containerId: string, verbose = false, o?: CallOptions): Promise<ContainerStatusResponse> {
    return this.rt('containerStatus', { containerId, verbose }, o);
  }

  async listContainers(
    filter: { id?: string; podSandboxId?: string; state?: ContainerState } = {},
    o?: CallOptions,
  ): Promise<Container[]> {
    const { state, ...rest } = filter;
    const r = await this.rt<{ containers: Container[] }>(
      'listContainers',
      { filter: { ...rest, ...(state ? { state: { state } } : {}) } },
      o,
    );
    return r.containers;
  }

  /** ExecSync with a command timeout of `timeoutSec` (0: none); the call's deadline is that plus 30 s. */
  execSync(containerId: string, cmd: string[], timeoutSec = 0, o?: CallOptions): Promise<ExecSyncResponse> {
    return this.rt(
      'execSync',
      { containerId, cmd, timeout: timeoutSec },
      { timeoutMs: (timeoutSec || 60) * 1000 + DEFAULT_TIMEOUT_MS, ...o },
    );
  }

  /** Exec through the streaming server: the URL to open with a stream client (test/helpers/cri/stream.ts). */
  async exec(
    req: {
      containerId: string;
      cmd: string[];
      tty?: boolean;
      stdin?: boolean;
      stdout?: boolean;
      stderr?: boolean;
    },
    o?: CallOptions,
  ): Promise<string> {
    return (await this.rt<{ url: string }>('exec', req, o)).url;
  }

  /** Attach to a container's process through the streaming server: the URL to open. */
  async attach(
    req: { containerId: string; tty?: boolean; stdin?: boolean; stdout?: boolean; stderr?: boolean },
    o?: CallOptions,
  ): Promise<string> {
    return (await this.rt<{ url: string }>('attach', req, o)).url;
  }

  async updateContainerResources(
    containerId: string,
    linux: LinuxContainerResources,
    o?: CallOptions,
  ): Promise<void> {
    await this.rt('updateContainerResources', { containerId, linux }, { timeoutMs: SLOW_TIMEOUT_MS, ...o });
  }

  async containerStats(containerId: string, o?: CallOptions): Promise<ContainerStats> {
    return (await this.rt<{ stats: ContainerStats }>('containerStats', { containerId }, o)).stats;
  }

  async podSandboxStats(podSandboxId: string, o?: CallOptions): Promise<PodSandboxStats> {
    return (await this.rt<{ stats: PodSandboxStats }>('podSandboxStats', { podSandboxId }, o)).stats;
  }

  async listContainerStats(
    filter: { podSandboxId?: string } = {},
    o?: CallOptions,
  ): Promise<ContainerStats[]> {
    return (await this.rt<{ stats: ContainerStats[] }>('listContainerStats', { filter }, o)).stats;
  }

  async listPodSandboxStats(o?: CallOptions): Promise<PodSandboxStats[]> {
    return (await this.rt<{ stats: PodSandboxStats[] }>('listPodSandboxStats', { filter: {} }, o)).stats;
  }

  /** kubelet's log rotation: the container's log file was renamed; containerd opens a new one at logPath. */
  async reopenContainerLog(containerId: string, o?: CallOptions): Promise<void> {
    await this.rt('reopenContainerLog', { containerId }, o);
  }

  async listImages(o?: CallOptions): Promise<Image[]> {
    const r = await this.call<{ images: Image[] }>(this.image, 'listImages', {}, o);
    return r.images;
  }

  async imageStatus(image: string, o?: CallOptions): Promise<Image | null> {
    const r = await this.call<{ image: Image | null }>(this.image, 'imageStatus', { image: { image } }, o);
    return r.image;
  }
}
