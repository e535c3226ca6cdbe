// Block devices, one description for both places QEMU takes them: the command line (cold plug, flattened
// "a=b,file.c=d" with on/off) and QMP blockdev-add / device_add (nested JSON with real booleans).
import type { QemuConfig } from '../../config/types.js';
import type { JsonValue } from './qmp.js';

export type QemuOpts = { [k: string]: string | number | boolean | QemuOpts };

/** The virtio-scsi controller every SCSI disk hangs off. */
export const SCSI_CONTROLLER_ID = 'scsi0';
export const SCSI_BUS = `${SCSI_CONTROLLER_ID}.0`;

export interface BlockBackend {
  nodeName: string;
  path: string;
  readOnly: boolean;
  /** a host block device (driver host_device) rather than a regular file */
  hostDevice: boolean;
  /** aio= override (the guest image always uses threads) */
  aio?: string;
}

/** blockdev options: raw format over a file or host device, with the config's aio and cache settings. */
export function blockdevOptions(q: QemuConfig, b: BlockBackend): QemuOpts {
  const opts: QemuOpts = {
    'node-name': b.nodeName,
    driver: 'raw',
    'read-only': b.readOnly,
    file: {
      driver: b.hostDevice ? 'host_device' : 'file',
      filename: b.path,
      aio: b.aio ?? (q.block_device_aio || 'threads'),
    },
  };
  if (q.block_device_cache_set) {
    opts.cache = { direct: q.block_device_cache_direct, 'no-flush': q.block_device_cache_noflush };
  }
  return opts;
}

export type BlockFrontend =
  | { driver: 'virtio-blk-pci'; id: string; nodeName: string; bus?: string }
  | { driver: 'virtio-scsi'; id: string; nodeName: string; scsiId: number; lun: number };

/** device properties (including driver) for a disk frontend. */
export function blockDeviceProps(q: QemuConfig, f: BlockFrontend): QemuOpts & { driver: string; id: string } {
  const sizes: QemuOpts = {};
  if (q.block_device_logical_sector_size > 0) sizes.logical_block_size = q.block_device_logical_sector_size;
  if (q.block_device_physical_sector_size > 0)
    sizes.physical_block_size = q.block_device_physical_sector_size;
  if (f.driver === 'virtio-scsi') {
    return {
      driver: 'scsi-hd',
      id: f.id,
      drive: f.nodeName,
      bus: SCSI_BUS,
      'scsi-id': f.scsiId,
      lun: f.lun,
      serial: f.id.slice(0, 20),
      ...sizes,
    };
  }
  const props: QemuOpts & { driver: string; id: string } = {
    driver: 'virtio-blk-pci',
    id: f.id,
    drive: f.nodeName,
    serial: f.id.slice(0, 20),
    ...sizes,
  };
  if (f.bus) {
    props.bus = f.bus;
    props.addr = '0';
  }
  return props;
}

/** Kata's SCSI addressing: index → (scsi-id, lun) = (index / 256, index % 256), written "id:lun". */
export function scsiAddress(index: number): { scsiId: number; lun: number; addr: string } {
  const scsiId = Math.floor(index / 256);
  const lun = index % 256;
  return { scsiId, lun, addr: `${scsiId}:${lun}` };
}

/** Flattens nested options for the command line: {file: {driver: 'file'}} → "file.driver=file". */
export function flattenOpts(o: QemuOpts, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'object') out.push(...flattenOpts(v, `${prefix}${k}.`));
    else
      out.push(
        `${prefix}${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v).replaceAll(',', ',,')}`,
      );
  }
  return out;
}

/** "-device" value: the driver first, then the properties. */
export function deviceArg(props: QemuOpts & { driver: string }): string {
  const { driver, ...rest } = props;
  return [driver, ...flattenOpts(rest)].join(',');
}

/** QMP wants the same options as JSON. */
export function toJson(o: QemuOpts): { [k: string]: JsonValue } {
  return o as { [k: string]: JsonValue };
}
