import { describe, expect, it } from 'vitest';
import { sandboxCgroupPath } from '../../src/resource/cgroups.js';

describe('sandboxCgroupPath (the sandbox spec cgroupsPath -> the sandbox host cgroup)', () => {
  it("takes the CRI plugin's cgroupfs path, absolute from the root", () => {
    expect(sandboxCgroupPath('/kubepods/besteffort/pod123/abc')).toEqual({
      path: '/kubepods/besteffort/pod123/abc',
    });
    expect(sandboxCgroupPath('/default//abc/')).toEqual({ path: '/default/abc' });
  });

  it('keeps a relative path relative (runc: under the runtime own cgroup)', () => {
    expect(sandboxCgroupPath('pods/abc')).toEqual({ path: 'pods/abc' });
  });

  it('gives no path (the default kata_<sid>) without one', () => {
    expect(sandboxCgroupPath(undefined)).toEqual({});
    expect(sandboxCgroupPath('  ')).toEqual({});
  });

  it("ignores the systemd driver's slice:prefix:name, saying why", () => {
    const r = sandboxCgroupPath('kubepods-besteffort-pod123.slice:cri-containerd:abc');
    expect(r.path).toBeUndefined();
    expect(r.ignored).toMatch(/systemd driver/);
  });

  it('refuses paths that climb or name the root', () => {
    expect(sandboxCgroupPath('/a/../../etc').ignored).toMatch(/names no cgroup/);
    expect(sandboxCgroupPath('/').ignored).toMatch(/names no cgroup/);
  });
});
