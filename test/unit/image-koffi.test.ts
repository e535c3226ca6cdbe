import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { findSourceRoot, koffiInputs, koffiNativePath } from '../../src/image/inputs.js';
import { koffiIndex } from '../../src/image/rootfs.js';

describe('koffi in the guest image', () => {
  const root = findSourceRoot();

  it('ships the native module of the guest arch (the host node is the guest node)', () => {
    for (const arch of ['x64', 'arm64']) {
      const { native } = koffiInputs(root, arch);
      expect(native.path).toMatch(new RegExp(`/linux_${arch}/koffi\\.node$`));
      expect(fs.existsSync(native.source), native.source).toBe(true);
      expect(koffiIndex(arch)).toContain(`require('./${koffiNativePath(arch)}')`);
    }
    expect(path.basename(path.dirname(koffiInputs(root).native.source))).toBe(`linux_${process.arch}`);
  });

  it('refuses an arch koffi has no module for, naming it', () => {
    expect(() => koffiNativePath('s390x')).toThrow(/cannot be built on s390x.*x64, arm64/);
  });
});
