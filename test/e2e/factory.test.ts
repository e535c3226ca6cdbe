// VM templating through containerd (config [factory] enable_template): `kata-ctl factory init` boots and saves a
// template once; each sandbox is then a clone of it (RAM copied, device state restored, virtio-fs share and NICs
// hotplugged, entropy and clock renewed) and runs containers as a booted one does. A stale or missing template
// means a plain boot, logged; `factory destroy` leaves nothing.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kataCtl as ctl } from './shim-fixtures.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const id = (prefix: string) => suite.id(prefix);

let templateDir = '';
let conf = '';

const kataCtl = async (...args: string[]) => ({ stdout: await ctl(args) });

/** The shim's log lines (in containerd's log) that name this sandbox id. */
function shimLines(cid: string): string[] {
  return suite.k.ctrd
    .readLog()
    .split('\n')
    .filter((l) => l.includes(cid));
}

/** Runs `sh -c script` in a fresh sandbox with the template config; returns stdout. */
async function runInSandbox(
  name: string,
  script: string,
  config = conf,
): Promise<{ cid: string; out: string }> {
  const cid = id(name);
  const r = await suite.k.run(
    ['--rm', '--runtime-config-path', config, suite.k.image, cid, 'sh', '-c', script],
    {
      timeoutMs: 300_000,
    },
  );
  expect(r.code, suite.explain(r)).toBe(0);
  return { cid, out: r.stdout };
}

const PROBE =
  'cat /proc/sys/kernel/random/boot_id; date +%s; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo';

beforeAll(async () => {
  templateDir = fs.mkdtempSync('/run/kata-ts-test-template-');
  conf = suite.k.writeConfig('template.toml', {
    factory: { enable_template: true, template_path: templateDir },
  });
  const { stdout } = await kataCtl('factory', 'init', '--config', conf);
  // The result is the last thing printed (pretty JSON); log lines may come before it.
  expect(JSON.parse(stdout.slice(stdout.indexOf('{\n  "path"')))).toMatchObject({
    path: templateDir,
    format: 1,
  });
}, 600_000);

afterAll(async () => {
  if (!templateDir) return;
  await kataCtl('factory', 'destroy', '--config', conf);
  expect(fs.existsSync(templateDir), 'factory destroy left the template dir').toBe(false);
});

describe('VM templating', () => {
  it('factory status shows the template', async () => {
    const st = JSON.parse((await kataCtl('factory', 'status', '--config', conf)).stdout) as Record<
      string,
      unknown
    >;
    expect(st).toMatchObject({ enable_template: true, exists: true, path: templateDir });
  });

  it('a clone runs a container from the template, with the shared fs, and says so in its log', async () => {
    const { cid, out } = await runInSandbox(
      'clone',
      'cat /etc/hostname >/dev/null; ls /bin/busybox && echo ok',
    );
    expect(out).toContain('ok');
    const started = shimLines(cid).find((l) => l.includes('"msg":"VM started"'));
    expect(started, shimLines(cid).join('\n')).toContain('"from":"template"');
  });

  it('two clones get different random bytes and boot ids, and the host clock', async () => {
    const a = (await runInSandbox('rand-a', PROBE)).out.trim().split('\n');
    const b = (await runInSandbox('rand-b', PROBE)).out.trim().split('\n');
    expect(a).toHaveLength(3);
    expect(b).toHaveLength(3);
    expect(a[0]).not.toBe(b[0]); // boot_id
    expect(a[2]).not.toBe(b[2]); // 32 bytes of /dev/urandom
    for (const x of [a, b]) expect(Math.abs(Number(x[1]) - Date.now() / 1000)).toBeLessThan(120);
  });

  it('exec, stdin and exit codes work in a clone', async () => {
    const cid = id('exec');
    const ctr = suite.k.ctrd.ctr;
    const r = await suite.k.run(['-d', '--runtime-config-path', conf, suite.k.image, cid, 'sleep', '600'], {
      timeoutMs: 300_000,
    });
    expect(r.code, suite.explain(r)).toBe(0);
    try {
      const e = await ctr(
        ['task', 'exec', '--exec-id', 'e1', cid, 'sh', '-c', 'read x; echo got $x; exit 3'],
        {
          input: 'hello\n',
        },
      );
      expect(e.stdout).toBe('got hello\n');
      expect(e.code).toBe(3);
    } finally {
      await ctr(['task', 'kill', '-s', 'SIGKILL', cid]);
      await suite.waitTaskStatus(cid, 'STOPPED', 60_000);
      await ctr(['task', 'delete', cid]);
      await ctr(['container', 'delete', cid]);
    }
  });

  it('a template of another shape is not used: the sandbox boots, and the log says why', async () => {
    const other = suite.k.writeConfig('template-stale.toml', {
      'hypervisor.qemu': { kernel_params: 'kata_ts_template_test=1' },
      factory: { enable_template: true, template_path: templateDir },
    });
    const { cid, out } = await runInSandbox('stale', 'echo booted', other);
    expect(out).toBe('booted\n');
    const lines = shimLines(cid);
    expect(
      lines.find((l) => l.includes('VM template not used')),
      lines.join('\n'),
    ).toContain('commandLine differs');
    expect(lines.find((l) => l.includes('"msg":"VM started"'))).toContain('"from":"boot"');
  });
});
