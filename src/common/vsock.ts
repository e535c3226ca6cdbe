// AF_VSOCK's address layout, shared by the host's agent dialer (src/native) and the guest agent's listener
// (src/agent/native.ts). Node has no AF_VSOCK: each side makes its sockets through its own libc binding and
// hands the fd to libuv (common/node-internals.ts).

export const AF_VSOCK = 40;
/** Bind to any CID: the guest's own, whatever the host gave it. */
export const VMADDR_CID_ANY = 0xffffffff;

/** struct sockaddr_vm: family u16, reserved u16, port u32, cid u32, flags u8, zero[3]. */
export function sockaddrVm(cid: number, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_VSOCK, 0);
  sa.writeUInt32LE(port >>> 0, 4);
  sa.writeUInt32LE(cid >>> 0, 8);
  return sa;
}
