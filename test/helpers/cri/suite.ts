// The per-file harness of the CRI e2e tests: a private containerd with CRI (and, if asked, a CNI pod network),
// the Kata configuration the `kata` handler uses, and containerd's log tail for failure messages.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import {
  type ConfigOverrides,
  type GuestImage,
  baseOverrides,
  configText,
  guestImage,
} from '../../e2e/shim-fixtures.js';
import { buildShim } from '../containerd.js';
import { type CriContainerd, type CriContainerdOptions, startCriContainerd } from './containerd-cri.js';

export interface CriSuiteOptions {
  /** The Kata configuration: what to change from the test default. */
  kata?: (base: ConfigOverrides, guest: GuestImage) => ConfigOverrides;
  podNetwork?: CriContainerdOptions['podNetwork'];
}

export interface CriSuite {
  cri(): CriContainerd;
  /** containerd's log tail (the kata shim logs there). */
  log(): string;
  /** Stops containerd now (afterAll then has nothing left to do). */
  stop(): Promise<void>;
}

export function useCriSuite(o: CriSuiteOptions = {}): CriSuite {
  let env: CriContainerd | undefined;
  let confDir = '';
  beforeAll(async () => {
    buildShim();
    confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-cri-'));
    const guest = await guestImage();
    const base = baseOverrides(guest);
    const kataConfigPath = path.join(confDir, 'configuration.toml');
    fs.writeFileSync(kataConfigPath, configText(o.kata ? o.kata(base, guest) : base));
    env = await startCriContainerd({ kataConfigPath, podNetwork: o.podNetwork });
  });
  const stop = async () => {
    const e = env;
    env = undefined;
    await e?.stop();
  };
  afterAll(async () => {
    await stop();
    if (confDir) fs.rmSync(confDir, { recursive: true, force: true });
  });
  return {
    cri() {
      if (!env) throw new Error('the CRI containerd is not set up');
      return env;
    },
    log: () => `--- containerd log ---\n${env?.ctrd.readLog().slice(-12_000) ?? ''}`,
    stop,
  };
}
