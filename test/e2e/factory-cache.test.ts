// The VM cache through containerd ([factory] vm_cache_number, with enable_template): `kata-ctl factory init`
// makes the template and parks N clones, restored and paused, in its cache; a sandbox takes one (rename of its
// slot into the sandbox's run dir), continues it, hotplugs its share, renews entropy and clock, and a detached
// `kata-ctl factory fill` parks a replacement. A taken VM's QEMU is not the shim's child: its death must still
// end the task. `factory destroy` stops every cached VM. The leftover check is per file: cached VMs outlive tests.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { KATA_RUNTIME } from '../helpers/containerd.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { type KataSetup, kataCtl as ctl, newId, setupKata } from './shim-fixtures.js';

useLeftoverCheck({ per: 'file', timeoutMs: 60_000 });

const CACHED = 2;

let k: KataSetup;
let templateDir = '';
let conf = '';

const kataCtl = (...args: string[]) => ctl(args);

interface Slot {
  slot: string;
  state: 'ready' | 'filling' | 'dead';
  pid?: number;
}

async function slots(): Promise<Slot[]> {
  const out = await kataCtl('factory', 'status', '--config', conf);
  return (JSON.parse(out) as { cache: { slots: Slot[] } }).cache.slots;
}

/** Waits until the cache holds CACHED ready VMs again (the refill after a take is in the background). */
async function waitCacheFull(): Promise<Slot[]> {
  let last: Slot[] = [];
  return pollUntil(
    async () => {
      last = await slots();
      return last.filter((s) => s.state === 'ready').length === CACHED ? last : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 500, what: `${CACHED} ready cached VMs` },
  ).catch((e: Error) => {
    throw new Error(`${e.message}; slots: ${JSON.stringify(last)}`);
  });
}

function shimLines(cid: string): string[] {
  return k.ctrd
    .readLog()
    .split('\n')
    .filter((l) => l.includes(cid));
}

function explain(r: { code: number | null; stdout: string; stderr: string }): string {
  const filler = path.join(templateDir, 'cache', 'filler.log');
  const fills = fs.existsSync(filler) ? fs.readFileSync(filler, 'utf8').slice(-6000) : '(none)';
  return `ctr exit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}\n--- containerd log ---\n${k.ctrd.readLog().slice(-8000)}\n--- filler.log ---\n${fills}`;
}

async function runInSandbox(name: string, script: string): Promise<{ cid: string; out: string }> {
  const cid = newId(name);
  const r = await k.ctrd.ctr(
    [
      'run',
      '--rm',
      '--runtime',
      KATA_RUNTIME,
      '--runtime-config-path',
      conf,
      k.image,
      cid,
      'sh',
      '-c',
      script,
    ],
    { timeoutMs: 300_000 },
  );
  expect(r.code, explain(r)).toBe(0);
  return { cid, out: r.stdout };
}

beforeAll(async () => {
  k = await setupKata();
  templateDir = fs.mkdtempSync('/run/kata-ts-test-template-');
  conf = k.writeConfig('cache.toml', {
    factory: { enable_template: true, template_path: templateDir, vm_cache_number: CACHED },
  });
  const out = await kataCtl('factory', 'init', '--config', conf);
  const res = JSON.parse(out.slice(out.indexOf('{\n  "path"'))) as { cached: string[] };
  expect(res.cached).toHaveLength(CACHED);
}, 900_000);

afterAll(async () => {
  if (templateDir) {
    // A refill may still be at work: destroy stops it too, and every parked QEMU.
    await kataCtl('factory', 'destroy', '--config', conf);
    expect(fs.existsSync(templateDir), 'factory destroy left the template dir').toBe(false);
  }
  await k?.close();
}, 120_000);

describe('VM cache', () => {
  it('factory status shows the parked VMs, each a live QEMU', async () => {
    const s = await slots();
    expect(s.map((x) => x.state)).toEqual(Array(CACHED).fill('ready'));
    for (const x of s) expect(fs.existsSync(`/proc/${x.pid}`)).toBe(true);
  });

  it('a sandbox takes a cached VM, runs its container, and the cache is refilled', async () => {
    const before = new Set((await slots()).map((s) => s.pid));
    const { cid, out } = await runInSandbox('cached', 'ls /bin/busybox && echo ok');
    expect(out).toContain('ok');
    const lines = shimLines(cid);
    expect(
      lines.find((l) => l.includes('"msg":"VM started"')),
      lines.join('\n'),
    ).toContain('"from":"cache"');
    const after = await waitCacheFull();
    // One VM was taken and replaced by a new one; the other stayed.
    expect(after.filter((s) => before.has(s.pid)).length).toBe(CACHED - 1);
  });

  it('two sandboxes from the cache get different random bytes and boot ids, and the host clock', async () => {
    const probe =
      'cat /proc/sys/kernel/random/boot_id; date +%s; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo';
    const a = await runInSandbox('rand-a', probe);
    const b = await runInSandbox('rand-b', probe);
    for (const x of [a, b])
      expect(shimLines(x.cid).find((l) => l.includes('"msg":"VM started"'))).toContain('"from":"cache"');
    const [la, lb] = [a.out.trim().split('\n'), b.out.trim().split('\n')];
    expect(la[0]).not.toBe(lb[0]);
    expect(la[2]).not.toBe(lb[2]);
    for (const x of [la, lb]) expect(Math.abs(Number(x[1]) - Date.now() / 1000)).toBeLessThan(120);
    await waitCacheFull();
  });

  it('the death of a taken VM (not the shim child) is the task exiting', async () => {
    const cid = newId('kill');
    const ctr = k.ctrd.ctr;
    const r = await ctr(
      ['run', '-d', '--runtime', KATA_RUNTIME, '--runtime-config-path', conf, k.image, cid, 'sleep', '600'],
      { timeoutMs: 300_000 },
    );
    expect(r.code, explain(r)).toBe(0);
    try {
      expect(shimLines(cid).find((l) => l.includes('"msg":"VM started"'))).toContain('"from":"cache"');
      const ls = await ctr(['task', 'ls']);
      const pid = Number(new RegExp(`^${cid}\\s+(\\d+)`, 'm').exec(ls.stdout)?.[1]);
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('qemu-system');
      process.kill(pid, 'SIGKILL');
      await pollUntil(
        async () =>
          /STOPPED/.test((await ctr(['task', 'ls'])).stdout.split('\n').find((l) => l.startsWith(cid)) ?? ''),
        { timeoutMs: 30_000, intervalMs: 250, what: `${cid} to stop after its QEMU was killed` },
      );
      expect((await ctr(['task', 'delete', cid])).code).toBe(0);
    } finally {
      await ctr(['task', 'delete', '--force', cid]);
      await ctr(['container', 'delete', cid]);
    }
    await waitCacheFull();
  });
});
