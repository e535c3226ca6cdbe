// The VM factory (Kata's [factory] enable_template): making the template VM (`kata-ctl factory init`), telling
// what is there (`status`), removing it (`destroy`), and making a restored clone its own machine before any
// container runs in it. The hypervisor driver owns how a template is saved and restored; this owns when.
import { randomBytes } from 'node:crypto';
import type { Logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import type { VmConfig } from '../hypervisor/hypervisor.js';
import {
  type TemplateMeta,
  destroyTemplateFiles,
  readTemplateMeta,
  templateFiles,
} from '../hypervisor/index.js';
import type { AgentClient } from './agent.js';
import type { RuntimeDeps } from './deps.js';
import { errorMessage } from './errors.js';
import { sandboxVmConfig } from './vm-config.js';

/** The entropy a clone gets before anything else runs in it (Linux's CRNG needs 32 bytes to be seeded). */
const RESEED_BYTES = 512;
const TEMPLATE_START_TIMEOUT_MS = 120_000;
const TEMPLATE_SAVE_TIMEOUT_MS = 60_000;
/** The sandbox id the template VM uses for its logs and QEMU name (not a sandbox anyone can address). */
export const TEMPLATE_VM_ID = 'factory-template';

/** The template request a sandbox's VmConfig carries when templating is on. */
export function templateRequest(config: KataConfig): VmConfig['template'] {
  return config.factory.enable_template ? { dir: config.factory.template_path, role: 'clone' } : undefined;
}

/**
 * A clone starts with the template's random state and clock: feed the guest fresh host entropy (agent
 * ReseedRandomDev: mixed in, CRNG reseeded; QEMU's vmgenid made the kernel reseed on restore already) and set
 * its clock (SetGuestDateTime). Done before CreateSandbox, so no container ever sees the template's state.
 */
export async function renewClone(agent: AgentClient, log: Logger): Promise<void> {
  const now = Date.now();
  // Both in flight at once (one round trip): both are done before the caller goes on to CreateSandbox.
  await Promise.all([
    agent.reseedRandomDev({ data: randomBytes(RESEED_BYTES) }),
    agent.setGuestDateTime({ Sec: BigInt(Math.floor(now / 1000)), Usec: BigInt((now % 1000) * 1000) }),
  ]);
  log.debug({ bytes: RESEED_BYTES }, 'clone reseeded and its clock set');
}

export type FactoryDeps = Pick<RuntimeDeps, 'createHypervisor' | 'connectAgent'>;

/**
 * `kata-ctl factory init`: boots a VM of the sandboxes' default shape with no devices, waits until its agent
 * serves (modules loaded: any agent call but Health waits for them), closes the agent channel, pauses and saves
 * it, and stops it. An existing template is replaced (running clones hold their own RAM copy and state).
 */
export async function initTemplate(
  config: KataConfig,
  deps: FactoryDeps,
  log: Logger,
): Promise<TemplateMeta> {
  const files = templateFiles(config.factory.template_path);
  await destroyTemplateFiles(files);
  const base = sandboxVmConfig({
    sandboxId: TEMPLATE_VM_ID,
    config,
    hostSharedDir: '',
    persistState: undefined,
  });
  const vm: VmConfig = {
    ...base,
    runDir: files.runDir,
    devices: [],
    template: { dir: files.dir, role: 'template' },
  };
  const hv = deps.createHypervisor(config, log);
  try {
    await hv.prepareVm(vm);
    await hv.startVm(TEMPLATE_START_TIMEOUT_MS);
    const conn = await deps.connectAgent(hv.agentEndpoint(), {
      timeoutMs: Math.max(config.agent.dial_timeout * 1000, TEMPLATE_START_TIMEOUT_MS),
      log,
    });
    try {
      await conn.agent.getGuestDetails({});
    } finally {
      conn.close();
    }
    await hv.saveTemplate(TEMPLATE_SAVE_TIMEOUT_MS);
  } catch (e) {
    await destroyTemplateFiles(files).catch((err: unknown) =>
      log.error({ err: errorMessage(err) }, 'removing a half-made VM template'),
    );
    throw new Error(`making the VM template at ${files.dir}: ${errorMessage(e)}`, { cause: e });
  } finally {
    await hv.stopVm();
    await hv.cleanup();
  }
  const meta = await readTemplateMeta(files.dir);
  if (!meta) throw new Error(`making the VM template at ${files.dir}: no template.json after the save`);
  return meta;
}

export interface TemplateStatus {
  path: string;
  exists: boolean;
  meta?: TemplateMeta;
}

export async function templateStatus(config: KataConfig): Promise<TemplateStatus> {
  const meta = await readTemplateMeta(config.factory.template_path);
  return { path: config.factory.template_path, exists: meta !== undefined, meta };
}

export async function destroyTemplate(config: KataConfig): Promise<void> {
  await destroyTemplateFiles(templateFiles(config.factory.template_path));
}
