import { describe, expect, it } from 'vitest';
import { type TemplateMeta, fingerprintOf, templateMismatch } from '../../src/hypervisor/qemu/template.js';

const inputs = { qemu: 'q 1', kernel: 'k 1', initrd: 'i 1', image: '', commandLine: '-m 1024M' };
const meta: TemplateMeta = {
  format: 1,
  createdAt: '2026-12-05T00:00:00Z',
  fingerprint: fingerprintOf(inputs),
  inputs,
  vcpus: 1,
  memoryMiB: 1024,
};

describe('VM template staleness', () => {
  it('accepts a VM of the same inputs and shape', () => {
    expect(templateMismatch(meta, { ...inputs }, { vcpus: 1, memoryMiB: 1024 })).toBeUndefined();
  });
  it('names the input that changed (a rebuilt kernel, another QEMU)', () => {
    expect(templateMismatch(meta, { ...inputs, kernel: 'k 2' }, { vcpus: 1, memoryMiB: 1024 })).toContain(
      'kernel differs',
    );
    expect(templateMismatch(meta, { ...inputs, qemu: 'q 2' }, { vcpus: 1, memoryMiB: 1024 })).toContain(
      'qemu',
    );
  });
  it('refuses another size', () => {
    expect(templateMismatch(meta, inputs, { vcpus: 2, memoryMiB: 1024 })).toContain('2 and 1024');
  });
  it('a fingerprint does not depend on key order', () => {
    const reversed = Object.fromEntries(Object.entries(inputs).reverse());
    expect(fingerprintOf(reversed)).toBe(meta.fingerprint);
  });
});
