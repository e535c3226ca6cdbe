// Shared set-up of the shim e2e tests and the start-up benchmark: the guest image, a Kata configuration.toml for
// it (TCG: this host's KVM cannot boot a stock kernel), a private containerd with the shim on PATH and the busybox
// image imported. With KATA_TS_E2E_TEMPLATE=1 every sandbox of the default configuration is a clone of a VM
// template ([factory] enable_template, made once per file with `kata-ctl factory init`), so the same tests run
// in template mode. The check for "nothing left on the host" is test/helpers/leftovers.ts.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importBusybox } from '../helpers/busybox-image.js';
import {
  type Containerd,
  type CtrOptions,
  type CtrResult,
  KATA_RUNTIME,
  REPO,
  buildShim,
  startContainerd,
} from '../helpers/containerd.js';
import { type GuestImageFiles, ensureGuestImage } from '../helpers/guest-image.js';

/** The e2e run is in template mode (scripts/test.sh runs the shim tests once more with it). */
export const TEMPLATE_MODE = process.env.KATA_TS_E2E_TEMPLATE === '1';

export type GuestImage = GuestImageFiles;

/** The guest image (test/helpers/guest-image.ts builds build/guest once and reuses it). */
export function guestImage(): Promise<GuestImage> {
  return ensureGuestImage();
}

/** The guest kernel version (from the image's manifest.json), when it says. */
export function guestKernelVersion(img: GuestImage): string | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(img.dir, 'manifest.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const k = m.kernel as Record<string, unknown> | undefined;
    const v = k?.release ?? m.kernelVersion ?? k?.version;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

type TomlValue = string | number | boolean | string[];
export type ConfigOverrides = Record<string, Record<string, TomlValue>>;

function tomlValue(v: TomlValue): string {
  if (Array.isArray(v)) return `[${v.map((s) => JSON.stringify(s)).join(', ')}]`;
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** The shipped configuration with keys replaced (or added) per section. */
export function configText(overrides: ConfigOverrides): string {
  const base = fs.readFileSync(path.join(REPO, 'config/configuration-qemu.toml'), 'utf8').split('\n');
  const out: string[] = [];
  let section = '';
  const pending = new Map(Object.entries(overrides).map(([s, kv]) => [s, new Map(Object.entries(kv))]));
  const flush = () => {
    const left = pending.get(section);
    if (left) for (const [k, v] of left) out.push(`${k} = ${tomlValue(v)}`);
    pending.delete(section);
  };
  for (const line of base) {
    const header = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (header) {
      flush();
      section = header[1]!;
      out.push(line);
      continue;
    }
    const kv = /^(\s*)([A-Za-z0-9_]+)\s*=/.exec(line);
    const want = kv ? pending.get(section)?.get(kv[2]!) : undefined;
    if (kv && want !== undefined) {
      out.push(`${kv[1]}${kv[2]} = ${tomlValue(want)}`);
      pending.get(section)!.delete(kv[2]!);
    } else {
      out.push(line);
    }
  }
  flush();
  for (const [s, kv] of pending) {
    out.push(`[${s}]`);
    for (const [k, v] of kv) out.push(`${k} = ${tomlValue(v)}`);
  }
  return `${out.join('\n')}\n`;
}

export interface KataSetup {
  ctrd: Containerd;
  image: string;
  guest: GuestImage;
  /** The default configuration (KATA_CONF_FILE of containerd). */
  configPath: string;
  confDir: string;
  /** Writes another configuration (the default plus `overrides`) and returns its path. */
  writeConfig(name: string, overrides: ConfigOverrides): string;
  /** `ctr run --runtime io.containerd.kata.v2 ...` */
  run(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  close(): Promise<void>;
}

export function baseOverrides(guest: GuestImage): ConfigOverrides {
  return {
    // The stable names (symlinks to the current build), so a rebuild during a run does not strand the config.
    'hypervisor.qemu': {
      kernel: path.join(guest.dir, 'vmlinuz.container'),
      initrd: path.join(guest.dir, 'kata-containers-initrd.img'),
      accel: 'tcg',
      default_memory: 1024,
    },
    'agent.kata': { dial_timeout: 90 },
  };
}

function merge(a: ConfigOverrides, b: ConfigOverrides): ConfigOverrides {
  const out: ConfigOverrides = structuredClone(a);
  for (const [s, kv] of Object.entries(b)) out[s] = { ...(out[s] ?? {}), ...kv };
  return out;
}

export async function setupKata(opts: { level?: 'debug' | 'info' } = {}): Promise<KataSetup> {
  buildShim();
  const guest = await guestImage();
  const confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-conf-'));
  const writeConfig = configWriter(confDir, guest);
  const template = await defaultConfig(writeConfig);
  const configPath = template.config;
  let ctrd: Containerd;
  let image: string;
  try {
    ctrd = await startContainerd({ env: { KATA_CONF_FILE: configPath }, level: opts.level });
  } catch (e) {
    await template.destroy();
    throw e;
  }
  try {
    image = await importBusybox(ctrd.ctr, ctrd.dir);
  } catch (e) {
    await ctrd.stop();
    await template.destroy();
    throw e;
  }
  return {
    ctrd,
    image,
    guest,
    configPath,
    confDir,
    writeConfig,
    run: (args, o) => ctrd.ctr(['run', '--runtime', KATA_RUNTIME, ...args], o),
    close: async () => {
      const log = ctrd.readLog();
      await ctrd.stop();
      await template.destroy();
      template.checkCloned(log);
      fs.rmSync(confDir, { recursive: true, force: true });
    },
  };
}

/** Writes configurations into `confDir`: the shipped one, the guest image's keys, then `overrides`. */
export function configWriter(confDir: string, guest: GuestImage): KataSetup['writeConfig'] {
  return (name, overrides) => {
    const file = path.join(confDir, name);
    fs.writeFileSync(file, configText(merge(baseOverrides(guest), overrides)));
    return file;
  };
}

export interface DefaultConfig {
  /** configuration.toml of the file's containerd */
  config: string;
  /** Destroys the template, if there is one. */
  destroy(): Promise<void>;
  /** In template mode, fails unless containerd's log shows a sandbox cloned from the template. */
  checkCloned(containerdLog: string): void;
}

/**
 * The default configuration.toml; in template mode with [factory] enable_template under a fresh template_path,
 * and the template made from it. Configurations tests write on top (writeConfig) have no [factory] unless they
 * ask for it, so they boot.
 */
export async function defaultConfig(writeConfig: KataSetup['writeConfig']): Promise<DefaultConfig> {
  if (!TEMPLATE_MODE) {
    return { config: writeConfig('configuration.toml', {}), destroy: async () => {}, checkCloned: () => {} };
  }
  const t = await makeTemplate(writeConfig, 'configuration.toml');
  return {
    ...t,
    checkCloned: (log) => {
      // The shim's "VM started" line says where the VM came from; without a clone this tier tested nothing new.
      if (!/"msg":"VM started"[^\n]*"from":"template"|"from":"template"[^\n]*"msg":"VM started"/.test(log)) {
        throw new Error(
          `template mode: no sandbox was cloned from the template (${t.dir}); see the shim's "VM template not used" lines`,
        );
      }
    },
  };
}

export interface TestTemplate {
  /** the configuration file with [factory] enable_template */
  config: string;
  /** its template_path */
  dir: string;
  /** `kata-ctl factory destroy`, then the dir goes */
  destroy(): Promise<void>;
}

/** Runs the built kata-ctl (dist/kata-ctl.mjs): its stdout, or an error that carries its stderr. */
export function kataCtl(args: string[], timeoutMs = 300_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [path.join(REPO, 'dist/kata-ctl.mjs'), ...args],
      { timeout: timeoutMs, maxBuffer: 64 << 20 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`kata-ctl ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/**
 * A configuration `name` (the default plus [factory] enable_template under a fresh template_path) and the
 * template `kata-ctl factory init` makes from it.
 */
export async function makeTemplate(
  writeConfig: KataSetup['writeConfig'],
  name: string,
): Promise<TestTemplate> {
  const dir = fs.mkdtempSync('/run/kata-ts-test-template-');
  const config = writeConfig(name, { factory: { enable_template: true, template_path: dir } });
  const ctl = (verb: string) => kataCtl(['factory', verb, '--config', config]);
  try {
    await ctl('init');
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    config,
    dir,
    destroy: async () => {
      await ctl('destroy');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
/** A container id unique to this test run (ids show up in host paths, so they tell tests apart). */
export function newId(prefix: string): string {
  return `kts-${prefix}-${process.pid}-${++seq}`;
}
