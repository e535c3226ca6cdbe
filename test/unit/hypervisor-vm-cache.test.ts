// The VM cache's slot bookkeeping (src/hypervisor/qemu/vm-cache.ts) and the adopted-process watch
// (src/hypervisor/adopted.ts), with `sleep` standing in for a parked QEMU. Hermetic: temp dirs, own processes.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AdoptedProcess } from '../../src/hypervisor/adopted.js';
import { processIdentity } from '../../src/hypervisor/proc.js';
import {
  type CachedVmMeta,
  destroySlot,
  listSlots,
  lockFilling,
  newSlot,
  slotPaths,
  stopFiller,
  takeCachedVm,
} from '../../src/hypervisor/qemu/vm-cache.js';

const log = pino({ level: 'silent' });
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-vmcache-'));
  dirs.push(d);
  return d;
}

async function fakeQemu(): Promise<{ child: ChildProcess; id: { pid: number; startTime: number } }> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(child);
  const id = await processIdentity(child.pid!);
  if (!id) throw new Error('sleep did not start');
  return { child, id };
}

/** A slot holding a parked "VM" (a sleep) of this fingerprint. */
async function parked(cache: string, fingerprint = 'fp1') {
  const dir = await newSlot(cache);
  const q = await fakeQemu();
  const meta: CachedVmMeta = {
    format: 1,
    createdAt: new Date().toISOString(),
    fingerprint,
    vcpus: 1,
    memoryMiB: 1024,
    qemu: q.id,
  };
  fs.writeFileSync(slotPaths(dir).meta, JSON.stringify(meta));
  fs.rmSync(slotPaths(dir).filler);
  fs.writeFileSync(slotPaths(dir).output, 'qemu: last words\n');
  return { dir, ...q };
}

const want = { fingerprint: 'fp1', vcpus: 1, memoryMiB: 1024 };

describe('VM cache slots', () => {
  it('lists ready, filling and dead slots', async () => {
    const cache = tmp();
    const ready = await parked(cache);
    const gone = await parked(cache);
    gone.child.kill('SIGKILL');
    await new Promise((r) => gone.child.once('exit', r));
    const filling = await newSlot(cache); // its filler is this process: alive
    const states = Object.fromEntries((await listSlots(cache)).map((s) => [s.dir, s.state]));
    expect(states).toEqual({ [ready.dir]: 'ready', [gone.dir]: 'dead', [filling]: 'filling' });
  });

  it('a taker gets the matching VM by renaming its slot into the run dir', async () => {
    const cache = tmp();
    const other = await parked(cache, 'another-template');
    const vm = await parked(cache);
    const runDir = path.join(tmp(), 'sandbox');
    const taken = await takeCachedVm(cache, want, runDir, log);
    expect(taken?.qemu.pid).toBe(vm.id.pid);
    expect(fs.existsSync(vm.dir)).toBe(false);
    expect(fs.existsSync(slotPaths(runDir).meta)).toBe(true);
    // The VM of another template stays, and nothing else fits.
    expect(fs.existsSync(other.dir)).toBe(true);
    expect(await takeCachedVm(cache, want, path.join(tmp(), 'sb2'), log)).toBeUndefined();
  });

  it('two takers racing for one VM: exactly one gets it', async () => {
    const cache = tmp();
    await parked(cache);
    const root = tmp();
    const got = await Promise.all(
      ['a', 'b', 'c'].map((n) => takeCachedVm(cache, want, path.join(root, n), log)),
    );
    expect(got.filter((t) => t !== undefined)).toHaveLength(1);
  });

  it('destroy stops the parked process and removes the slot', async () => {
    const cache = tmp();
    const vm = await parked(cache);
    const [slot] = await listSlots(cache);
    const exited = new Promise((r) => vm.child.once('exit', r));
    await destroySlot(slot!, log);
    await exited;
    expect(fs.readdirSync(cache)).toEqual([]);
  });

  it('one filler at a time; a dead holder loses the lock', async () => {
    const cache = tmp();
    const release = await lockFilling(cache);
    expect(release).toBeDefined();
    expect(await lockFilling(cache)).toBeUndefined();
    await release?.();
    // A lock whose holder is gone (a pid no process has) is taken over.
    const again = await lockFilling(cache);
    await again?.();
    fs.mkdirSync(path.join(cache, '.filling'));
    fs.writeFileSync(
      path.join(cache, '.filling', 'owner.json'),
      JSON.stringify({ pid: 2 ** 22 + 7, startTime: 1 }),
    );
    const takeover = await lockFilling(cache);
    expect(takeover).toBeDefined();
    await takeover?.();
  });
});

describe('stopFiller', () => {
  it('stops the filler holding the lock, so nothing is parked after a destroy', async () => {
    const cache = tmp();
    const filler = await fakeQemu(); // any live process of ours plays the filler
    fs.mkdirSync(path.join(cache, '.filling'));
    fs.writeFileSync(path.join(cache, '.filling', 'owner.json'), JSON.stringify(filler.id));
    const exited = new Promise((r) => filler.child.once('exit', r));
    await stopFiller(cache, log);
    await exited;
    expect(fs.existsSync(path.join(cache, '.filling'))).toBe(false);
  });
});

describe('AdoptedProcess', () => {
  it('sees the end of a process that is not its child, with the tail of its output file', async () => {
    const cache = tmp();
    const vm = await parked(cache);
    const p = new AdoptedProcess('qemu', vm.id, slotPaths(vm.dir).output);
    expect(p.running).toBe(true);
    vm.child.kill('SIGKILL');
    const e = await p.exited;
    expect(e).toMatchObject({ code: null, signal: null, statusUnknown: true });
    expect(e.stderrTail).toContain('last words');
    expect(p.running).toBe(false);
  });

  it('terminate sends SIGTERM, then SIGKILL to one that ignores it', async () => {
    const stubborn = spawn('sh', ['-c', 'trap "" TERM; while :; do sleep 0.1; done'], { stdio: 'ignore' });
    children.push(stubborn);
    await new Promise((r) => setTimeout(r, 100));
    const id = await processIdentity(stubborn.pid!);
    const p = new AdoptedProcess('qemu', id!, '/nonexistent');
    const killed = new Promise<NodeJS.Signals | null>((r) => stubborn.once('exit', (_c, sig) => r(sig)));
    await p.terminate(300);
    expect(await killed).toBe('SIGKILL');
  });
});
