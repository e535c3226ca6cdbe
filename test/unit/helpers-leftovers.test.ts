// The diff logic of the e2e leftover check (test/helpers/leftovers.ts), on made-up snapshots.
import { describe, expect, it } from 'vitest';
import { type HostSnapshot, diffLeftovers, emptySnapshot } from '../helpers/leftovers.js';

function snap(over: Partial<HostSnapshot>): HostSnapshot {
  return { ...emptySnapshot(), ...over };
}

const before = snap({
  processes: ['100: /usr/bin/qemu-system-x86_64 -name other-sandbox'],
  mounts: ['/', '/proc', '/tmp/someone-else'],
  dirs: ['/run/vc/vm/other-sandbox'],
  cgroups: ['/sys/fs/cgroup/kata_other-sandbox'],
  vsockCids: ['7 other-sandbox'],
  links: ['lo device', 'eth0 device'],
  qdiscs: ['eth0 0: noqueue'],
  netns: ['cni-1234'],
});

describe('diffLeftovers', () => {
  it('finds nothing when the host is as before', () => {
    expect(diffLeftovers(before, before, ['kts-a-1'])).toEqual([]);
  });

  it('reports what names an id, even if it was there before, with its kind', () => {
    const s = snap({
      ...before,
      dirs: [...before.dirs, '/run/kata/kts-a-1'],
      cgroups: ['/sys/fs/cgroup/kata_kts-a-1'],
    });
    const both = snap({ ...s, vsockCids: ['9 kts-a-1'] });
    expect(diffLeftovers(both, both, ['kts-a-1'])).toEqual([
      'dirs: /run/kata/kts-a-1',
      'cgroups: /sys/fs/cgroup/kata_kts-a-1',
      'vsockCids: 9 kts-a-1',
    ]);
  });

  it('reports every new cgroup, CID record, link, qdisc and netns, whoever made them', () => {
    const after = snap({
      ...before,
      cgroups: [...before.cgroups, '/sys/fs/cgroup/cpu/kata_unknown'],
      vsockCids: [...before.vsockCids, '8 unknown'],
      links: [...before.links, 'tap0_kata tun'],
      qdiscs: [...before.qdiscs, 'eth0 ffff: ingress'],
      netns: [...before.netns, 'kata-net-1'],
    });
    expect(diffLeftovers(before, after, [])).toEqual([
      'cgroups: /sys/fs/cgroup/cpu/kata_unknown',
      'vsockCids: 8 unknown',
      'links: tap0_kata tun',
      'qdiscs: eth0 ffff: ingress',
      'netns: kata-net-1',
    ]);
  });

  it('reports new kata-ts processes and dirs, but new mounts only under kata-ts roots or naming an id', () => {
    const after = snap({
      ...before,
      processes: [
        ...before.processes,
        '200: /usr/lib/qemu/virtiofsd --socket-path=/run/vc/vm/x/vhost-fs.sock',
      ],
      mounts: [
        ...before.mounts,
        '/tmp/another-test',
        '/run/kata-containers/shared/sandboxes/x/shared',
        '/tmp/kts-a-1-rootfs',
      ],
      dirs: [...before.dirs, '/run/vc/vm/x'],
    });
    expect(diffLeftovers(before, after, ['kts-a-1'])).toEqual([
      'processes: 200: /usr/lib/qemu/virtiofsd --socket-path=/run/vc/vm/x/vhost-fs.sock',
      'mounts: /run/kata-containers/shared/sandboxes/x/shared',
      'mounts: /tmp/kts-a-1-rootfs',
      'dirs: /run/vc/vm/x',
    ]);
  });

  it('does not report what went away, and ignores empty ids', () => {
    expect(diffLeftovers(before, emptySnapshot(), ['', 'kts-a-1'])).toEqual([]);
    expect(diffLeftovers(emptySnapshot(), snap({ mounts: ['/'] }), [''])).toEqual([]);
  });
});
