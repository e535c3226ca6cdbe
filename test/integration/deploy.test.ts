// The Kubernetes deployment (deploy/): the manifests parse and say what kata-deploy says (RuntimeClass `kata`
// with overhead and nodeSelector, a privileged DaemonSet that installs and, at preStop, cleans up), the payload
// builds from this tree, and kata-deploy.sh installs into a temporary node root, registers the runtime with
// containerd (which merges the drop-in: `containerd config dump`), and cleanup leaves the root exactly as found.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { REPO } from '../helpers/containerd.js';

const DEPLOY = path.join(REPO, 'deploy');
let tmp: string;
let payload: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-deploy-'));
  payload = path.join(tmp, 'payload');
  execFileSync('bash', [path.join(DEPLOY, 'scripts/build-payload.sh'), payload], {
    stdio: 'pipe',
    timeout: 120_000,
  });
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

type Doc = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string } };
function manifests(file: string): Doc[] {
  return parseAllDocuments(fs.readFileSync(path.join(DEPLOY, file), 'utf8')).map((d) => {
    expect(d.errors, `${file}: YAML errors`).toEqual([]);
    return d.toJS() as Doc;
  });
}

/** Runs kata-deploy.sh from the payload against `root`; never restarts a containerd. */
function deploy(action: string, root: string, extra: Record<string, string> = {}) {
  return spawnSync('bash', [path.join(payload, 'scripts/kata-deploy.sh'), action], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH, KATA_TS_HOST_ROOT: root, KATA_TS_RESTART_CONTAINERD: 'false', ...extra },
  });
}

/** Every path under `dir` with its content (files), link target (symlinks) or "dir". */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (e.isSymbolicLink()) out[rel] = `-> ${fs.readlinkSync(p)}`;
      else if (e.isDirectory()) {
        out[rel] = 'dir';
        walk(p);
      } else out[rel] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

function nodeRoot(name: string, containerdConfig?: string): string {
  const root = path.join(tmp, name);
  // What the DaemonSet's hostPath mounts (DirectoryOrCreate) guarantee.
  for (const d of ['usr/local/bin', 'etc/containerd', 'opt'])
    fs.mkdirSync(path.join(root, d), { recursive: true });
  if (containerdConfig !== undefined) {
    fs.writeFileSync(path.join(root, 'etc/containerd/config.toml'), containerdConfig);
  }
  return root;
}

describe('deploy manifests', () => {
  it('RuntimeClass kata: handler kata, pod overhead, nodeSelector on the kata-deploy label', () => {
    const [rc] = manifests('kata-runtimeClass.yaml');
    expect(rc).toMatchObject({
      apiVersion: 'node.k8s.io/v1',
      kind: 'RuntimeClass',
      metadata: { name: 'kata' },
      handler: 'kata',
      overhead: { podFixed: { memory: '160Mi', cpu: '250m' } },
      scheduling: { nodeSelector: { 'katacontainers.io/kata-runtime': 'true' } },
    });
  });

  it('the DaemonSet installs, cleans up at preStop, runs privileged with its service account', () => {
    const [ds] = manifests('kata-deploy.yaml') as (Doc & {
      spec: { template: { spec: Record<string, unknown> } };
    })[];
    expect(ds).toMatchObject({
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { namespace: 'kube-system' },
    });
    const pod = ds!.spec.template.spec as {
      serviceAccountName: string;
      hostPID: boolean;
      containers: {
        command: string[];
        lifecycle: { preStop: { exec: { command: string[] } } };
        securityContext: { privileged: boolean };
        volumeMounts: { mountPath: string }[];
      }[];
    };
    expect(pod.hostPID).toBe(true);
    const c = pod.containers[0]!;
    expect(c.command.join(' ')).toContain('kata-deploy.sh install');
    expect(c.lifecycle.preStop.exec.command.join(' ')).toContain('kata-deploy.sh cleanup');
    expect(c.securityContext.privileged).toBe(true);
    expect(c.volumeMounts.map((m) => m.mountPath)).toEqual(
      expect.arrayContaining(['/host/etc/containerd', '/host/opt', '/host/usr/local/bin']),
    );
    const rbac = manifests('kata-rbac.yaml');
    expect(rbac.map((d) => `${d.kind}/${d.metadata.name}`)).toContain(
      `ServiceAccount/${pod.serviceAccountName}`,
    );
    const role = rbac.find((d) => d.kind === 'ClusterRole') as Doc & {
      rules: { resources: string[]; verbs: string[] }[];
    };
    expect(role.rules).toEqual([expect.objectContaining({ resources: ['nodes'], verbs: ['get', 'patch'] })]);
  });

  it('kustomize (kubectl, offline) builds the set, when kubectl is on this machine', () => {
    const k = spawnSync('kubectl', ['kustomize', DEPLOY], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, KUBECONFIG: '/dev/null' },
    });
    if (k.error) return; // no kubectl here: the YAML checks above still ran
    expect(k.status, k.stderr).toBe(0);
    expect(k.stdout.match(/^kind: \w+/gm)).toEqual([
      'kind: ServiceAccount',
      'kind: ClusterRole',
      'kind: ClusterRoleBinding',
      'kind: DaemonSet',
      'kind: RuntimeClass',
    ]);
  });
});

describe('kata-deploy.sh', () => {
  it('installs the runtime into a node root; containerd merges the drop-in; cleanup restores the root', () => {
    const original = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause:3.9"\n';
    const root = nodeRoot('node-a', original);
    const before = tree(root);
    const r = deploy('install', root);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: \/usr\/bin\/qemu-system-x86_64 is missing on the node/);

    const shim = path.join(root, 'opt/kata/bin/containerd-shim-kata-v2');
    expect(fs.readFileSync(shim, 'utf8')).toBe(
      '#!/bin/sh\nexec /opt/kata/bin/node /opt/kata/lib/dist/containerd-shim-kata-v2.mjs "$@"\n',
    );
    expect(fs.readlinkSync(path.join(root, 'usr/local/bin/containerd-shim-kata-v2'))).toBe(
      '/opt/kata/bin/containerd-shim-kata-v2',
    );
    // The installed Node.js runs the installed bundle.
    const v = spawnSync(
      path.join(root, 'opt/kata/bin/node'),
      [path.join(root, 'opt/kata/lib/dist/containerd-shim-kata-v2.mjs'), '-v'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(v.stdout, v.stderr).toMatch(/containerd-shim-kata-v2 \(kata-ts\)/);
    // The configuration names the installed guest image.
    const conf = parseToml(
      fs.readFileSync(path.join(root, 'opt/kata/share/defaults/kata-containers/configuration.toml'), 'utf8'),
    ) as { hypervisor: { qemu: { kernel: string; initrd: string } } };
    for (const p of [conf.hypervisor.qemu.kernel, conf.hypervisor.qemu.initrd]) {
      expect(p.startsWith('/opt/kata/share/kata-containers/')).toBe(true);
      expect(fs.existsSync(path.join(root, p)), p).toBe(true);
    }
    // imports goes right after version (a top-level key must precede every table).
    const ctrdConf = fs.readFileSync(path.join(root, 'etc/containerd/config.toml'), 'utf8');
    expect(ctrdConf).toBe(
      original.replace('version = 2\n', 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n'),
    );
    expect(parseToml(ctrdConf)).toMatchObject({ imports: ['/etc/containerd/conf.d/*.toml'] });

    // containerd itself reads the drop-in (the real one imports it by glob; here by its path in the temp root).
    const probe = path.join(tmp, 'probe.toml');
    fs.writeFileSync(
      probe,
      `version = 2\nimports = [${JSON.stringify(path.join(root, 'etc/containerd/conf.d/kata-ts.toml'))}]\n`,
    );
    const dump = spawnSync('containerd', ['--config', probe, 'config', 'dump'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(dump.status, dump.stderr).toBe(0);
    const merged = parseToml(dump.stdout) as {
      plugins: Record<
        string,
        {
          containerd: {
            runtimes: Record<string, { runtime_type: string; options: Record<string, unknown> }>;
          };
        }
      >;
    };
    const kata = merged.plugins['io.containerd.grpc.v1.cri']!.containerd.runtimes.kata!;
    expect(kata.runtime_type).toBe('io.containerd.kata.v2');
    expect(kata.options.ConfigPath).toBe('/opt/kata/share/defaults/kata-containers/configuration-qemu.toml');

    // Installing again (a DaemonSet restart) changes nothing more.
    expect(deploy('install', root).status).toBe(0);
    expect(fs.readFileSync(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toBe(ctrdConf);

    const c = deploy('cleanup', root);
    expect(c.status, c.stderr).toBe(0);
    expect(tree(root)).toEqual(before);
  });

  it('creates a containerd config when the node has none, and removes it at cleanup', () => {
    const root = nodeRoot('node-b');
    const before = tree(root);
    expect(deploy('install', root).status).toBe(0);
    expect(fs.readFileSync(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toBe(
      'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n',
    );
    expect(deploy('cleanup', root).status).toBe(0);
    expect(tree(root)).toEqual(before);
  });

  it('adds the glob to an existing imports line and takes it out again', () => {
    const original = 'version = 2\nimports = ["/etc/containerd/other.toml"]\n';
    const root = nodeRoot('node-c', original);
    expect(deploy('install', root).status).toBe(0);
    const conf = parseToml(fs.readFileSync(path.join(root, 'etc/containerd/config.toml'), 'utf8'));
    expect(conf.imports).toEqual(['/etc/containerd/conf.d/*.toml', '/etc/containerd/other.toml']);
    expect(deploy('cleanup', root).status).toBe(0);
    expect(fs.readFileSync(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toBe(original);
  });

  it('refuses a payload that lacks a part, naming it, and touches nothing', () => {
    const root = nodeRoot('node-d', 'version = 2\n');
    const before = tree(root);
    const broken = path.join(tmp, 'broken');
    fs.cpSync(path.join(payload, 'scripts'), path.join(broken, 'scripts'), { recursive: true });
    const r = deploy('install', root, { KATA_TS_PAYLOAD: broken });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`the payload ${broken} lacks bin/node`);
    expect(tree(root)).toEqual(before);
  });

  it('refuses a version 1 containerd config (drop-ins need version 2), naming the file', () => {
    const root = nodeRoot('node-e', '[plugins.cri]\n');
    const r = deploy('install', root);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('/etc/containerd/config.toml is not a version 2 config');
  });
});
