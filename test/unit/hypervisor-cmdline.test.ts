import { describe, expect, it } from 'vitest';
import type { QemuConfig } from '../../src/config/types.js';
import { scsiAddress } from '../../src/hypervisor/qemu/block.js';
import {
  type QemuLaunchSpec,
  buildKernelParams,
  buildQemuCmdline,
  qemuEscape,
  qemuId,
  runDirPaths,
  splitKernelParams,
} from '../../src/hypervisor/qemu/cmdline.js';
import { pciPathOf } from '../../src/hypervisor/qemu/pci.js';
import { testQemuConfig } from './hypervisor-fixtures.js';

const RUN = '/run/vc/vm/sb1';

function spec(q: Partial<QemuConfig> = {}, over: Partial<QemuLaunchSpec> = {}): QemuLaunchSpec {
  return {
    sandboxId: 'sb1',
    runDir: RUN,
    qemu: testQemuConfig(q),
    accel: 'tcg',
    vcpus: 1,
    maxVcpus: 4,
    memoryMiB: 512,
    maxMemoryMiB: 2048,
    agent: { kind: 'virtio-serial', socketPath: `${RUN}/agent.sock` },
    fsShares: [],
    blocks: [],
    guestKernelParams: [],
    extraKernelParams: [],
    hotplugPorts: 2,
    ...over,
  };
}

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args[i + 1]!);
  });
  return out;
}

function one(args: string[], flag: string): string {
  const v = values(args, flag);
  expect(v, `${flag} once`).toHaveLength(1);
  return v[0]!;
}

describe('QEMU command line', () => {
  it('maps machine type, accelerators, accel and cpu', () => {
    const { args } = buildQemuCmdline(spec({ machine_accelerators: 'nvdimm=on', cpu_features: 'pmu=off' }));
    expect(one(args, '-machine')).toBe('q35,nvdimm=on');
    expect(one(args, '-accel')).toBe('tcg');
    expect(one(args, '-cpu')).toBe('max,pmu=off');
    const kvm = buildQemuCmdline(spec({ machine_type: '' }, { accel: 'kvm' })).args;
    expect(one(kvm, '-machine')).toBe('q35');
    expect(one(kvm, '-accel')).toBe('kvm');
    expect(one(kvm, '-cpu')).toBe('host');
  });

  it('maps vcpus and memory with hotplug room', () => {
    const { args } = buildQemuCmdline(spec({ memory_slots: 7 }, { vcpus: 2, maxVcpus: 6 }));
    expect(one(args, '-smp')).toBe('2,cores=1,threads=1,sockets=6,maxcpus=6');
    expect(one(args, '-m')).toBe('512M,slots=7,maxmem=2048M');
    const noHotplug = buildQemuCmdline(spec({}, { maxMemoryMiB: 512 })).args;
    expect(one(noHotplug, '-m')).toBe('512M');
    const noSlots = buildQemuCmdline(spec({ memory_slots: 0 })).args;
    expect(one(noSlots, '-m')).toBe('512M');
  });

  it('uses a shared memfd backend only when virtio-fs is used, or the configured file backend', () => {
    const plain = buildQemuCmdline(spec()).args;
    expect(values(plain, '-numa')).toEqual([]);
    const fs = buildQemuCmdline(
      spec({}, { fsShares: [{ qemuId: 'fs-x', tag: 'kataShared', socketPath: `${RUN}/vhost-fs.sock` }] }),
    ).args;
    expect(values(fs, '-object')).toContain('memory-backend-memfd,id=mem,size=512M,share=on');
    expect(one(fs, '-numa')).toBe('node,memdev=mem');
    expect(values(fs, '-chardev')).toContain(`socket,id=char-vfs0,path=${RUN}/vhost-fs.sock`);
    expect(values(fs, '-device')).toContain(
      'vhost-user-fs-pci,id=fs-x,chardev=char-vfs0,tag=kataShared,queue-size=1024',
    );
    const file = buildQemuCmdline(spec({ file_mem_backend: '/dev/hugepages' })).args;
    expect(values(file, '-object')).toContain(
      'memory-backend-file,id=mem,size=512M,mem-path=/dev/hugepages,share=on',
    );
  });

  it('has the fixed knobs, QMP, pidfile and console in the run dir', () => {
    const { args } = buildQemuCmdline(spec());
    for (const flag of ['-nodefaults', '-nographic', '-no-user-config', '-no-reboot'])
      expect(args).toContain(flag);
    expect(args).not.toContain('-daemonize');
    expect(one(args, '-display')).toBe('none');
    expect(one(args, '-sandbox')).toBe(
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    );
    expect(one(args, '-qmp')).toBe(`unix:${RUN}/qmp.sock,server=on,wait=off`);
    expect(one(args, '-pidfile')).toBe(`${RUN}/pid`);
    expect(values(args, '-chardev')).toContain(`file,id=console,path=${RUN}/console.log`);
    expect(one(args, '-serial')).toBe('chardev:console');
    expect(one(args, '-name')).toBe('sandbox-sb1');
    expect(one(args, '-rtc')).toBe('base=utc,driftfix=slew,clock=host');
  });

  it('maps entropy_source to virtio-rng', () => {
    const { args } = buildQemuCmdline(spec({ entropy_source: '/dev/random' }));
    expect(values(args, '-object')).toContain('rng-random,id=rng0,filename=/dev/random');
    expect(values(args, '-device')).toContain('virtio-rng-pci,rng=rng0');
  });

  it('builds the virtio-serial agent channel', () => {
    const { args } = buildQemuCmdline(spec());
    expect(values(args, '-device')).toContain('virtio-serial-pci,id=serial0');
    expect(values(args, '-chardev')).toContain(`socket,id=charch0,path=${RUN}/agent.sock,server=on,wait=off`);
    expect(values(args, '-device')).toContain(
      'virtserialport,bus=serial0.0,chardev=charch0,id=channel0,name=agent.channel.0',
    );
  });

  it('builds the vsock agent channel with the given cid', () => {
    const { args } = buildQemuCmdline(spec({}, { agent: { kind: 'vsock', cid: 77 } }));
    expect(values(args, '-device')).toContain('vhost-vsock-pci,id=vsock-77,guest-cid=77');
    expect(values(args, '-device').some((d) => d.startsWith('virtio-serial'))).toBe(false);
  });

  it('reserves pci bridges (default_bridges) and empty root ports for hotplug', () => {
    const r = buildQemuCmdline(spec({ default_bridges: 2 }, { hotplugPorts: 3 }));
    const devs = values(r.args, '-device');
    expect(r.bridgeIds).toEqual(['pci-bridge-0', 'pci-bridge-1']);
    expect(devs[0]).toBe(
      'pci-bridge,bus=pcie.0,id=pci-bridge-0,chassis_nr=1,shpc=off,addr=2,io-reserve=4k,mem-reserve=1m,pref64-reserve=1m',
    );
    expect(devs[1]).toContain('id=pci-bridge-1,chassis_nr=2,shpc=off,addr=3');
    expect(r.hotplugPortIds).toEqual(['rp0', 'rp1', 'rp2']);
    expect(devs).toContain('pcie-root-port,id=rp2,bus=pcie.0,chassis=3,slot=3,port=3,io-reserve=0');
    const pc = buildQemuCmdline(spec({ machine_type: 'pc', default_bridges: 1 }));
    expect(pc.hotplugPortIds).toEqual([]);
    expect(values(pc.args, '-device')[0]).toContain('pci-bridge,bus=pci.0');
  });

  it('boots kernel + initrd', () => {
    const { args } = buildQemuCmdline(spec());
    expect(one(args, '-kernel')).toBe('/kata/vmlinuz.container');
    expect(one(args, '-initrd')).toBe('/kata/kata-containers-initrd.img');
    expect(values(args, '-blockdev')).toEqual([]);
  });

  it('boots kernel + rootfs image as a read-only virtio-blk disk with root=/dev/vda', () => {
    const s = spec({ initrd: '', image: '/kata/a,b.img' }, { rootfsType: 'erofs' });
    const r = buildQemuCmdline(s);
    expect(values(r.args, '-initrd')).toEqual([]);
    expect(one(r.args, '-blockdev')).toBe(
      'node-name=drive-image,driver=raw,read-only=on,file.driver=file,file.filename=/kata/a,,b.img,file.aio=threads',
    );
    expect(values(r.args, '-device')).toContain(
      'virtio-blk-pci,id=image,drive=drive-image,config-wce=off,share-rw=on,serial=image',
    );
    expect(r.kernelParams).toContain('root=/dev/vda ro rootfstype=erofs');
  });

  it('rejects both or neither of initrd and image, and commas in the run dir', () => {
    expect(() => buildQemuCmdline(spec({ image: '/x.img' }))).toThrow(/exclusive/);
    expect(() => buildQemuCmdline(spec({ initrd: '' }))).toThrow(/neither initrd nor image/);
    expect(() => buildQemuCmdline(spec({}, { runDir: '/run/a,b' }))).toThrow(/comma/);
  });

  it('adds boot block devices (virtio-blk file and host device, virtio-scsi) with aio/cache/sector settings', () => {
    const { args } = buildQemuCmdline(
      spec(
        {
          block_device_aio: 'io_uring',
          block_device_cache_set: true,
          block_device_cache_direct: true,
          block_device_cache_noflush: false,
          block_device_logical_sector_size: 512,
          block_device_physical_sector_size: 4096,
        },
        {
          blocks: [
            {
              qemuId: 'blk-d1',
              path: '/dev/sdz',
              readOnly: false,
              hostDevice: true,
              driver: 'virtio-blk-pci',
            },
            {
              qemuId: 'blk-d2',
              path: '/x.img',
              readOnly: true,
              hostDevice: false,
              driver: 'virtio-scsi',
              scsi: { scsiId: 0, lun: 1 },
            },
          ],
        },
      ),
    );
    expect(values(args, '-blockdev')).toEqual([
      'node-name=drive-blk-d1,driver=raw,read-only=off,file.driver=host_device,file.filename=/dev/sdz,' +
        'file.aio=io_uring,cache.direct=on,cache.no-flush=off',
      'node-name=drive-blk-d2,driver=raw,read-only=on,file.driver=file,file.filename=/x.img,' +
        'file.aio=io_uring,cache.direct=on,cache.no-flush=off',
    ]);
    const devs = values(args, '-device');
    expect(devs).toContain(
      'virtio-blk-pci,id=blk-d1,drive=drive-blk-d1,serial=blk-d1,logical_block_size=512,physical_block_size=4096',
    );
    // A SCSI disk brings the controller even when block_device_driver is virtio-blk.
    expect(devs).toContain('virtio-scsi-pci,id=scsi0');
    expect(devs).toContain(
      'scsi-hd,id=blk-d2,drive=drive-blk-d2,bus=scsi0.0,scsi-id=0,lun=1,serial=blk-d2,logical_block_size=512,physical_block_size=4096',
    );
  });

  it('adds the virtio-scsi controller for block_device_driver = virtio-scsi, with an iothread if enabled', () => {
    const plain = buildQemuCmdline(spec({ block_device_driver: 'virtio-scsi' })).args;
    expect(values(plain, '-device')).toContain('virtio-scsi-pci,id=scsi0');
    const io = buildQemuCmdline(spec({ block_device_driver: 'virtio-scsi', enable_iothreads: true })).args;
    expect(values(io, '-object')).toContain('iothread,id=scsi-io-thread');
    expect(values(io, '-device')).toContain('virtio-scsi-pci,id=scsi0,iothread=scsi-io-thread');
    const blk = buildQemuCmdline(spec({ block_device_driver: 'virtio-blk-pci' })).args;
    expect(values(blk, '-device').some((d) => d.startsWith('virtio-scsi'))).toBe(false);
  });

  it('SCSI addresses follow Kata (index / 256, index % 256)', () => {
    expect(scsiAddress(0)).toEqual({ scsiId: 0, lun: 0, addr: '0:0' });
    expect(scsiAddress(257)).toEqual({ scsiId: 1, lun: 1, addr: '1:1' });
  });

  it('puts the kernel command line together in order', () => {
    const s = spec(
      { kernel_params: 'a=1 "b=x y"', enable_debug: false },
      { guestKernelParams: ['init=/sbin/kata-agent'], extraKernelParams: ['agent.log=debug'] },
    );
    // Kata's x86 guest params follow the base ones (their reboot=k repeat is dropped).
    const x86 =
      'tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 ' +
      'i8042.noaux=1 noreplace-smp cryptomgr.notests net.ifnames=0 pci=lastbus=0';
    expect(buildKernelParams(s)).toBe(
      `console=ttyS0 reboot=k panic=1 ${x86} quiet init=/sbin/kata-agent a=1 "b=x y" agent.log=debug`,
    );
    expect(buildKernelParams(spec({ enable_debug: true }))).toBe(
      `console=ttyS0 reboot=k panic=1 ${x86} debug`,
    );
    // Exact repeats from the image's manifest are dropped; distinct values stay.
    const repeats = spec({}, { guestKernelParams: ['console=ttyS0', 'quiet', 'panic=1', 'console=hvc0'] });
    expect(buildKernelParams(repeats)).toBe(`console=ttyS0 reboot=k panic=1 ${x86} quiet console=hvc0`);
    // A manifest that names the root device wins over the default root=/dev/vda.
    const img = spec({ initrd: '', image: '/i.img' }, { guestKernelParams: ['root=/dev/vda1'] });
    expect(buildKernelParams(img)).not.toContain('root=/dev/vda ');
    expect(one(buildQemuCmdline(s).args, '-append')).toBe(buildKernelParams(s));
  });

  it('helpers: escape, ids, kernel param split, run dir paths', () => {
    expect(qemuEscape('a,b,,c')).toBe('a,,b,,,,c');
    expect(qemuId('blk', 'my disk/1')).toBe('blk-my_disk_1');
    expect(splitKernelParams('  a  b="c d" e ')).toEqual(['a', 'b="c d"', 'e']);
    const p = runDirPaths(RUN);
    expect([
      p.qmpSocket,
      p.agentSocket,
      p.consoleLog,
      p.pidFile,
      p.virtiofsdSocket(0),
      p.virtiofsdSocket(1),
    ]).toEqual([
      `${RUN}/qmp.sock`,
      `${RUN}/agent.sock`,
      `${RUN}/console.log`,
      `${RUN}/pid`,
      `${RUN}/vhost-fs.sock`,
      `${RUN}/vhost-fs-1.sock`,
    ]);
  });
});

describe('PCI path from query-pci', () => {
  it('walks bridges and formats slots as hex', () => {
    const buses = [
      {
        bus: 0,
        devices: [
          { bus: 0, slot: 1, function: 0, qdev_id: 'rng', class_info: { class: 255 } },
          {
            bus: 0,
            slot: 0x1a,
            function: 0,
            qdev_id: 'rp0',
            class_info: { class: 1540 },
            pci_bridge: {
              bus: { number: 1 },
              devices: [{ bus: 1, slot: 0, function: 0, qdev_id: 'blk-d1', class_info: { class: 256 } }],
            },
          },
        ],
      },
    ];
    expect(pciPathOf(buses, 'rng')).toBe('01');
    expect(pciPathOf(buses, 'blk-d1')).toBe('1a/00');
    expect(pciPathOf(buses, 'nope')).toBeUndefined();
  });
});
