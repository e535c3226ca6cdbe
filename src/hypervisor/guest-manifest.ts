// The guest image's manifest.json (written by `kata-ctl image build` beside the kernel): the hypervisor only
// needs the kernel params the guest requires and, for a rootfs image, its filesystem type.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export interface GuestManifestInfo {
  file: string;
  kernelParams: string[];
  rootfsType?: string;
}

function asParams(v: unknown): string[] | undefined {
  if (typeof v === 'string') return v.split(/\s+/).filter((s) => s !== '');
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

/** Reads <dir of kernel>/manifest.json if present; a missing file means "no extra params". */
export async function readGuestManifest(kernelPath: string): Promise<GuestManifestInfo | undefined> {
  const file = path.join(path.dirname(kernelPath), 'manifest.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`reading guest image manifest ${file}: ${(err as Error).message}`);
  }
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`guest image manifest ${file} is not valid JSON: ${(err as Error).message}`);
  }
  // Accept snake_case (Kata style) and camelCase, as the image builder's format is young.
  const params = asParams(m.kernel_params ?? m.kernelParams) ?? [];
  const fsType = m.rootfs_type ?? m.rootfsType;
  return { file, kernelParams: params, rootfsType: typeof fsType === 'string' ? fsType : undefined };
}
