// The house rules of src/, read from the source: every import (static, `export ... from`, dynamic `import(...)`
// and type-position `import(...)`) between src files. (a) no import cycle between files, (b) a top-level folder
// imports only the folders its rule below allows (each folder's README.md says the same on its "May import:"
// line), (c) no hand-written file over MAX_LINES. Generated code (src/protocols/gen) is exempt from (a) and (c).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');
const GENERATED = 'protocols/gen/';
const MAX_LINES = 450;

/**
 * What each top-level folder of src/ may import. The layering (docs/DESIGN.md): data flows shim → runtime →
 * (hypervisor, resource, agent client) → VM → agent; `contract` is the host↔guest leaf; `common` is shared by
 * all; `native` holds the host's koffi bindings; the agent (guest side) imports no host code at all.
 */
const MAY_IMPORT: Record<string, readonly string[]> = {
  contract: [],
  common: ['contract'],
  native: ['common', 'contract'],
  protocols: ['common', 'contract'],
  config: ['common', 'contract'],
  persist: ['common', 'contract'],
  agent: ['common', 'contract', 'protocols'],
  hypervisor: ['common', 'config', 'contract', 'native'],
  // resource plugs its endpoints into the hypervisor's device types, as runtime-rs's resource crate does.
  resource: ['common', 'contract', 'hypervisor', 'native', 'persist', 'protocols'],
  runtime: ['common', 'config', 'contract', 'hypervisor', 'native', 'persist', 'protocols', 'resource'],
  shim: ['common', 'config', 'contract', 'native', 'persist', 'protocols', 'runtime'],
  image: ['common', 'contract', 'native'],
  ctl: ['common', 'config', 'contract', 'hypervisor', 'image', 'native', 'persist', 'runtime'],
};

/**
 * Imports that break a rule today and are being removed by another branch. Each entry must still exist:
 * once its import is gone, delete the entry (the test says so).
 */
const KNOWN_EXCEPTIONS = {
  /** file → file imports ignored when looking for cycles. */
  cycleEdges: [] as string[],
  /** file → file imports allowed across folders although the table says no. */
  layerEdges: [] as string[],
  /** Files allowed over MAX_LINES while they are split by other branches. */
  longFiles: [] as string[],
};

/**
 * The only files that bind libc (koffi): the guest's and the host's native modules, and the host's tap worker
 * (native/netns.ts: a worker thread that setns(2)s has its own module instances, so it binds its few calls).
 */
const LIBC_MODULES = ['agent/native.ts', 'native/libc.ts', 'native/netns.ts'];

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

const rel = (p: string) => path.relative(SRC, p).split(path.sep).join('/');
const folderOf = (f: string) => f.split('/')[0] ?? '';

/** src-relative file → the src-relative files it imports. Throws on a relative import that resolves to nothing. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const abs of walk(SRC)) {
    const info = ts.preProcessFile(fs.readFileSync(abs, 'utf8'), true, true);
    const targets: string[] = [];
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith('.')) continue; // packages and node: builtins
      const base = path.resolve(path.dirname(abs), fileName);
      const candidates = [base.replace(/\.js$/, '.ts'), `${base}.ts`, path.join(base, 'index.ts')];
      const hit = candidates.find((c) => fs.existsSync(c) && fs.statSync(c).isFile());
      if (!hit) throw new Error(`${rel(abs)}: import '${fileName}' resolves to no .ts file`);
      if (hit.startsWith(`${SRC}${path.sep}`)) targets.push(rel(hit));
    }
    graph.set(rel(abs), [...new Set(targets)]);
  }
  return graph;
}

/** Strongly connected components with more than one file (or a self-import): Tarjan's algorithm. */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) ?? 0, idx.get(w) ?? 0));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop();
        if (w === undefined) break;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

/** One concrete loop inside a component, for the message: a → b → ... → a. */
function loopIn(scc: string[], graph: Map<string, string[]>): string {
  const inScc = new Set(scc);
  const start = scc[0] ?? '';
  const seen = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift() ?? '';
    for (const w of graph.get(v) ?? []) {
      if (!inScc.has(w)) continue;
      if (w === start) {
        const pathBack = [v];
        for (let p = seen.get(v); p !== undefined && v !== start; p = seen.get(p)) {
          pathBack.push(p);
          if (p === start) break;
        }
        const loop = pathBack.reverse();
        if (loop[0] !== start) loop.unshift(start);
        return [...loop, start].join(' → ');
      }
      if (!seen.has(w)) {
        seen.set(w, v);
        queue.push(w);
      }
    }
  }
  return scc.join(', ');
}

const graph = importGraph();
const edges = [...graph].flatMap(([from, tos]) => tos.map((to) => `${from} -> ${to}`));

describe('architecture of src/', () => {
  it('has no import cycle between files (generated code aside)', () => {
    const ignored = new Set(KNOWN_EXCEPTIONS.cycleEdges);
    const handWritten = new Map(
      [...graph]
        .filter(([f]) => !f.startsWith(GENERATED))
        .map(([f, tos]) => [f, tos.filter((t) => !t.startsWith(GENERATED) && !ignored.has(`${f} -> ${t}`))]),
    );
    const found = cycles(handWritten).map((scc) => `import cycle: ${loopIn(scc, handWritten)}`);
    expect(found, 'break each cycle (a leaf module for what both sides need, or invert the call)').toEqual(
      [],
    );
  });

  it('imports across top-level folders only as each folder may (the table here and its README)', () => {
    const allowedEdges = new Set(KNOWN_EXCEPTIONS.layerEdges);
    const bad: string[] = [];
    for (const [from, tos] of graph) {
      const a = folderOf(from);
      const may = MAY_IMPORT[a];
      if (!may) {
        bad.push(
          `src/${a}/ has no rule: add it to MAY_IMPORT in test/unit/architecture.test.ts and its README`,
        );
        continue;
      }
      for (const to of tos) {
        const b = folderOf(to);
        if (b === a || may.includes(b) || allowedEdges.has(`${from} -> ${to}`)) continue;
        bad.push(`src/${from} imports src/${to}: ${a} may import only ${may.join(', ') || 'nothing'}`);
      }
    }
    expect([...new Set(bad)]).toEqual([]);
  });

  it('has a README per top-level folder whose "May import:" line matches the table', () => {
    const folders = fs
      .readdirSync(SRC, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
    const bad: string[] = [];
    for (const f of folders) {
      const readme = path.join(SRC, f, 'README.md');
      if (!fs.existsSync(readme)) {
        bad.push(`src/${f}/README.md is missing (say what the folder owns and what it may import)`);
        continue;
      }
      const line = fs
        .readFileSync(readme, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('May import:'));
      if (line === undefined) {
        bad.push(`src/${f}/README.md has no "May import:" line`);
        continue;
      }
      // The backticked folder names before "Imported by", if the line says that too.
      const said = [...(line.split('Imported by')[0] ?? '').matchAll(/`([a-z]+)\/?`/g)].map(
        (m) => m[1] ?? '',
      );
      const want = [...(MAY_IMPORT[f] ?? [])];
      if (said.sort().join(',') !== want.sort().join(','))
        bad.push(`src/${f}/README.md says "${line}" but the rule is: ${want.join(', ') || 'nothing'}`);
    }
    expect(bad).toEqual([]);
  });

  it(`has no hand-written file over ${MAX_LINES} lines`, () => {
    const long = [...graph.keys()]
      .filter((f) => !f.startsWith(GENERATED))
      .map((f) => ({ f, n: fs.readFileSync(path.join(SRC, f), 'utf8').split('\n').length - 1 }))
      .filter(({ f, n }) => n > MAX_LINES && !KNOWN_EXCEPTIONS.longFiles.includes(f))
      .map(({ f, n }) => `src/${f} has ${n} lines: split it by responsibility`);
    expect(long).toEqual([]);
  });

  it('binds libc through koffi in one module per side, and reaches Node internals in one module', () => {
    const code = (f: string) =>
      fs
        .readFileSync(path.join(SRC, f), 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/^\s*\/\/.*$/gm, '');
    const files = [...graph.keys()].filter((f) => !f.startsWith(GENERATED));
    const binders = files.filter((f) => /\.load\('libc\.so\.6'\)/.test(code(f)));
    expect(binders.sort(), 'libc is bound only by the host and guest native modules').toEqual(LIBC_MODULES);
    const internals = files.filter((f) => /process\.binding\(|\b_handle\b/.test(code(f)));
    expect(internals, 'Node internals only in common/node-internals.ts').toEqual([
      'common/node-internals.ts',
    ]);
  });

  it('lists only exceptions that still apply (delete an entry once its branch has merged)', () => {
    const stale = [
      ...KNOWN_EXCEPTIONS.cycleEdges.filter((e) => !edges.includes(e)).map((e) => `cycleEdges: ${e}`),
      ...KNOWN_EXCEPTIONS.layerEdges.filter((e) => !edges.includes(e)).map((e) => `layerEdges: ${e}`),
      ...KNOWN_EXCEPTIONS.longFiles
        .filter((f) => {
          const p = path.join(SRC, f);
          return !fs.existsSync(p) || fs.readFileSync(p, 'utf8').split('\n').length - 1 <= MAX_LINES;
        })
        .map((f) => `longFiles: ${f}`),
    ];
    expect(stale, 'remove these from KNOWN_EXCEPTIONS in test/unit/architecture.test.ts').toEqual([]);
  });
});
