// Fuzz targets for every decoder that reads bytes from the far side of a trust boundary. Each target turns an
// arbitrary input into a call that must either succeed or fail with a clean error: an Error of the decoder's
// own class with a message, never a TypeError/RangeError (a bug), never a hang. Run with few cases in the unit
// suite (test/unit/fuzz.test.ts) and with 10^5 from bench/fuzz.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import {
  ConfigError,
  applyAnnotations,
  defaultConfig,
  knownAnnotations,
  loadConfiguration,
} from '../../src/config/index.js';
import { AgentService } from '../../src/protocols/gen/agent_pb.js';
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from '../../src/protocols/ttrpc/index.js';

export interface FuzzTarget<T> {
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** Runs one case; throws only errors `isClean` accepts. */
  run(input: T): void | Promise<void>;
  isClean(e: unknown): boolean;
}

const cleanConfigError = (e: unknown) => e instanceof ConfigError && e.message.length > 0;

/** Lines of a plausible configuration.toml: real section and key names, random values and garbage. */
const tomlLine = fc.oneof(
  fc.constantFrom(
    '[hypervisor.qemu]',
    '[agent.kata]',
    '[runtime]',
    '[factory]',
    '[hypervisor.qemu',
    '[[runtime]]',
  ),
  fc
    .tuple(
      fc.constantFrom(
        'default_vcpus',
        'default_memory',
        'kernel',
        'path',
        'shared_fs',
        'enable_debug',
        'internetworking_model',
        'dial_timeout',
        'kernel_modules',
        'enable_annotations',
        'accel',
        'agent_channel',
        'memory_slots',
      ),
      fc.oneof(
        fc.integer().map(String),
        fc.double().map(String),
        fc.string().map((s) => JSON.stringify(s)),
        fc.constantFrom('true', 'false', '[]', '["a"]', '{}', '"virtio-fs"', '"tcfilter"', '1e999', '-1'),
        fc.string(),
      ),
    )
    .map(([k, v]) => `${k} = ${v}`),
  fc.string(),
);

export const configBody: FuzzTarget<string> = {
  name: 'configuration.toml (config_body)',
  arbitrary: fc.array(tomlLine, { maxLength: 20 }).map((l) => l.join('\n')),
  run(body) {
    loadConfiguration({ configBody: body, env: {} });
  },
  isClean: cleanConfigError,
};

const annotationNames = knownAnnotations();
export const annotations: FuzzTarget<Record<string, string>> = {
  name: 'io.katacontainers.config.* annotations',
  arbitrary: fc.dictionary(
    fc.oneof(
      fc.constantFrom(...annotationNames),
      fc.string().map((s) => `io.katacontainers.config.${s}`),
    ),
    fc.oneof(
      fc.string(),
      fc.integer().map(String),
      fc.constantFrom('true', 'false', '0', '-1', '99999999999999999999', '1Gi', '/bin/sh', '', ' '),
    ),
    { maxKeys: 6 },
  ),
  run(a) {
    const config = defaultConfig();
    // Let every annotation through the allow-list so the parsers behind it are reached.
    config.hypervisor.enable_annotations = ['.*'];
    applyAnnotations(config, a);
  },
  isClean: cleanConfigError,
};

// The agent's request decoding, as the agent's ttrpc server does it: a request for any AgentService method with
// random bytes, or a real message truncated anywhere. Handlers answer {} (what runs after decoding is the
// agent's own code, tested elsewhere); the decode path must answer InvalidArgument, never crash or hang.
const methods = AgentService.methods;
let agentPeer: Promise<{ client: TtrpcClient; close(): void }> | undefined;
function agentServer(): Promise<{ client: TtrpcClient; close(): void }> {
  agentPeer ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fuzz-agent-'));
    const sock = path.join(dir, 'agent.sock');
    const impl = Object.fromEntries(methods.map((m) => [m.localName, () => ({})]));
    const server = new TtrpcServer().register(AgentService, impl);
    await server.listen(sock);
    const client = await TtrpcClient.connect(sock, { timeoutMs: 5000 });
    return {
      client,
      close() {
        client.close();
        void server.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  })();
  return agentPeer;
}
export async function closeAgentServer(): Promise<void> {
  const p = agentPeer;
  agentPeer = undefined;
  (await p)?.close();
}

function sample(schemaIndex: number, seed: number): Uint8Array {
  const m = methods[schemaIndex % methods.length]!;
  // A message with a few fields set from the seed, so truncation cuts through real field encodings.
  const msg = create(m.input) as Record<string, unknown>;
  for (const f of m.input.fields) {
    if (f.fieldKind === 'scalar' && typeof msg[f.localName] === 'string')
      msg[f.localName] = `v${seed}`.repeat(seed % 7);
    if (f.fieldKind === 'scalar' && typeof msg[f.localName] === 'number') msg[f.localName] = seed % 100_000;
  }
  return toBinary(m.input, msg as never);
}

export const agentRequests: FuzzTarget<{ method: number; bytes: Uint8Array }> = {
  name: 'agent.proto requests (random and truncated)',
  arbitrary: fc.oneof(
    fc.record({ method: fc.nat(), bytes: fc.uint8Array({ maxLength: 256 }) }),
    fc.tuple(fc.nat(), fc.nat(), fc.nat()).map(([method, seed, cut]) => {
      const full = sample(method, seed);
      return { method, bytes: full.subarray(0, full.length === 0 ? 0 : cut % full.length) };
    }),
  ),
  async run({ method, bytes }) {
    const m = methods[method % methods.length]!;
    const { client } = await agentServer();
    await client.callRaw(AgentService.typeName, m.name, bytes, { timeoutMs: 5000 });
  },
  isClean: (e) => e instanceof TtrpcError && e.code === Code.InvalidArgument && e.message.length > 0,
};

export const ALL_TARGETS: FuzzTarget<never>[] = [
  configBody,
  annotations,
  agentRequests,
] as unknown as FuzzTarget<never>[];

/** One property per target: success, or a clean rejection. */
export async function fuzz<T>(t: FuzzTarget<T>, numRuns: number, seed?: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(t.arbitrary, async (input) => {
      try {
        await t.run(input);
      } catch (e) {
        if (!t.isClean(e))
          throw new Error(`${t.name}: unclean rejection: ${(e as Error)?.stack ?? String(e)}`);
      }
    }),
    { numRuns, seed },
  );
}
