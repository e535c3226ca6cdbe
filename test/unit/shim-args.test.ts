import { describe, expect, it } from 'vitest';
import { socketAddress, socketPath } from '../../src/shim/address.js';
import { parseArgs, validateArgs } from '../../src/shim/args.js';
import { groupId } from '../../src/shim/start.js';

describe('shim command line', () => {
  it('parses the flags containerd passes, Go style', () => {
    const a = parseArgs([
      '-namespace',
      'k8s.io',
      '-address',
      '/run/containerd/containerd.sock',
      '-publish-binary',
      '/usr/bin/containerd',
      '-id',
      'abc',
      '-debug',
      'start',
    ]);
    expect(a).toMatchObject({
      namespace: 'k8s.io',
      address: '/run/containerd/containerd.sock',
      id: 'abc',
      debug: true,
      action: 'start',
    });
    expect(parseArgs(['--id=x', '-namespace=n', '-bundle', '/b', 'delete'])).toMatchObject({
      id: 'x',
      namespace: 'n',
      bundle: '/b',
      action: 'delete',
    });
    expect(parseArgs(['-id', 'x', '-namespace', 'n']).action).toBe('');
    expect(parseArgs(['-debug=false', '-v']).debug).toBe(false);
    expect(() => parseArgs(['-id'])).toThrow(/flag needs an argument: -id/);
    expect(() => parseArgs(['-nope', 'x'])).toThrow(/not defined: -nope/);
  });

  it('validates ids and required flags', () => {
    expect(() => validateArgs(parseArgs(['-id', 'a']), false)).toThrow(/-namespace/);
    expect(() => validateArgs(parseArgs(['-id', '../x', '-namespace', 'n']), false)).toThrow(/invalid id/);
    expect(() => validateArgs(parseArgs(['-id', 'a', '-namespace', 'n']), true)).toThrow(/-bundle/);
    validateArgs(parseArgs(['-id', 'a.b_c-1', '-namespace', 'n']), false);
  });

  it('computes containerd socket addresses and pod grouping', () => {
    // sha256("/run/containerd/containerd.sock/default/abc"), as containerd's shim library computes it.
    expect(socketAddress('/run/containerd/containerd.sock', 'default', 'abc')).toBe(
      'unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59',
    );
    expect(socketAddress('/a', 'n', 'x')).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    expect(socketAddress('/a', 'n', 'x')).not.toBe(socketAddress('/a', 'n', 'y'));
    expect(socketPath('unix:///run/x')).toBe('/run/x');
    expect(socketPath('abstract')).toBe('\0abstract');
    expect(groupId('c1', {})).toBe('c1');
    expect(
      groupId('c1', {
        'io.kubernetes.cri.sandbox-id': 'sb',
        'io.kubernetes.cri.container-type': 'container',
      }),
    ).toBe('sb');
    expect(
      groupId('sb', { 'io.kubernetes.cri.sandbox-id': 'sb', 'io.kubernetes.cri.container-type': 'sandbox' }),
    ).toBe('sb');
  });
});
