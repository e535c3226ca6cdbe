import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { SyscallError, errnoName, finitModuleSyscall } from '../../src/agent/native.js';

describe('agent native: errno names and syscall numbers', () => {
  it('names errno values as os.constants.errno does', () => {
    const { ENOENT, EBUSY, EEXIST, EPERM } = os.constants.errno;
    expect(errnoName(ENOENT)).toBe('ENOENT');
    expect(errnoName(EBUSY)).toBe('EBUSY');
    expect(errnoName(EEXIST)).toBe('EEXIST');
    expect(errnoName(EPERM)).toBe('EPERM');
    expect(errnoName(99999)).toBe('errno 99999');
  });

  it('builds a SyscallError with context, code and errno, without loading libc', () => {
    const e = new SyscallError('mount proc on /proc', os.constants.errno.EBUSY);
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SyscallError');
    expect(e.code).toBe('EBUSY');
    expect(e.errno).toBe(os.constants.errno.EBUSY);
    expect(e.what).toBe('mount proc on /proc');
    expect(e.message).toMatch(/^mount proc on \/proc: EBUSY( \(.+\))?$/);
    expect(new SyscallError('x', 99999).message).toBe('x: errno 99999');
  });

  it("picks finit_module's syscall number by CPU architecture", () => {
    expect(finitModuleSyscall('x64')).toBe(313);
    expect(finitModuleSyscall('arm64')).toBe(273);
    expect(() => finitModuleSyscall('riscv64')).toThrow(
      /finit_module: no syscall number known for .*riscv64/,
    );
  });
});
