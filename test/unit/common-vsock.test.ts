import { describe, expect, it } from 'vitest';
import { AF_VSOCK, VMADDR_CID_ANY, sockaddrVm } from '../../src/common/vsock.js';

describe('sockaddr_vm', () => {
  it('lays out family, port and cid as the kernel reads them', () => {
    const sa = sockaddrVm(3, 1024);
    expect(sa.length).toBe(16);
    expect(sa.readUInt16LE(0)).toBe(AF_VSOCK);
    expect(sa.readUInt32LE(4)).toBe(1024);
    expect(sa.readUInt32LE(8)).toBe(3);
    expect(sockaddrVm(VMADDR_CID_ANY, 1).readUInt32LE(8)).toBe(0xffffffff);
  });
});
