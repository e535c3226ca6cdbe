// One id grammar (src/contract): an id the shim accepts on its command line or in a Task request is one every
// layer below accepts (resource, persist, agent), and one it refuses is refused everywhere with a clear error.
import os from 'node:os';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { checkId as agentCheckId } from '../../src/agent/safe-path.js';
import { logger } from '../../src/common/log.js';
import { InvalidIdError, MAX_ID_LENGTH, checkId, idProblem } from '../../src/contract/index.js';
import { sandboxStateDir } from '../../src/persist/index.js';
import {
  CreateTaskRequestSchema,
  ExecProcessRequestSchema,
  type Task,
} from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { Code, type ServiceImpl, TtrpcError } from '../../src/protocols/ttrpc/index.js';
import { SharedFs } from '../../src/resource/index.js';
import { checkRequestIds, parseArgs, validateArgs } from '../../src/shim/args.js';
import { createTaskService } from '../../src/shim/task-service.js';
import { type FakeEnv, fakeEnv } from './runtime-fakes.js';

const root = path.join(os.tmpdir(), 'kata-ids-never-created');

function accepts(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

/** Whether each layer accepts id; none of these touches the file system. */
function verdicts(id: string) {
  return {
    shimStart: accepts(() => validateArgs(parseArgs(['-id', id, '-namespace', 'k8s.io', 'start']), false)),
    shimDaemon: accepts(() => validateArgs(parseArgs(['-id', id, '-namespace', 'k8s.io']), false)),
    shimNamespace: accepts(() => validateArgs(parseArgs(['-id', 'a', '-namespace', id]), false)),
    taskCreate: accepts(() => checkRequestIds({ container: id })),
    taskExec: accepts(() => checkRequestIds({ container: 'c1', exec: id })),
    contract: idProblem(id) === undefined,
    sharedFs: accepts(() => new SharedFs(id, { root })),
    persist: accepts(() => sandboxStateDir(id, root)),
    agent: accepts(() => agentCheckId(id)),
  };
}

function expectAgreement(id: string): void {
  const v = verdicts(id);
  const want = v.contract;
  expect(v, `verdicts for ${JSON.stringify(id)}`).toEqual({
    shimStart: want,
    shimDaemon: want,
    shimNamespace: want,
    taskCreate: want,
    taskExec: want,
    contract: want,
    sharedFs: want,
    persist: want,
    agent: want,
  });
}

describe('the id grammar', () => {
  it('is one: the shim, resource, persist and the agent agree on the ids the shim once let through', () => {
    const cases = [
      'abc',
      'A-1.b_2',
      'x'.repeat(MAX_ID_LENGTH),
      // Accepted by the shim's old grammar, refused by Create's:
      'a..b',
      'a_',
      'a-',
      'x'.repeat(MAX_ID_LENGTH + 1),
      'a'.repeat(255),
      // Refused by every old grammar:
      '',
      '../x',
      'a/b',
      '-x',
      '.x',
      'a b',
      'a\0b',
    ];
    for (const id of cases) expectAgreement(id);
    expect(idProblem('a..b')).toBe('want letters and digits, with single . _ or - between them');
    expect(idProblem('x'.repeat(MAX_ID_LENGTH + 1))).toBe(`it is longer than ${MAX_ID_LENGTH} characters`);
  });

  it('agrees everywhere on arbitrary strings (property)', () => {
    const chars = fc.constantFrom(...'aZ09._-/ :'.split(''));
    fc.assert(
      fc.property(fc.stringOf(chars, { maxLength: 90 }), (id) => expectAgreement(id)),
      { numRuns: 500 },
    );
    // Long valid ids around the limit.
    fc.assert(fc.property(fc.integer({ min: 60, max: 90 }), (n) => expectAgreement('a'.repeat(n))));
  });

  it('names the id, its kind and the problem', () => {
    expect(() => checkId('container', '../x')).toThrow(InvalidIdError);
    expect(() => checkId('container', '../x')).toThrow(
      'invalid container id "../x": want letters and digits, with single . _ or - between them',
    );
    expect(() => validateArgs(parseArgs(['-id', 'a..b', '-namespace', 'n']), false)).toThrow(
      'invalid id "a..b" (-id, the sandbox id): want letters and digits, with single . _ or - between them',
    );
    expect(() => validateArgs(parseArgs(['-id', 'a..b', '-namespace', 'n', 'start']), false)).toThrow(
      /\(-id, the container id\)/,
    );
    expect(() => checkRequestIds({ container: 'c1', exec: '' })).toThrow('invalid exec id "": it is empty');
    expect(() => new SharedFs('a..b', { root })).toThrow(/invalid sandbox id "a\.\.b": want letters/);
    expect(() => agentCheckId('a..b', 'sandbox id')).toThrow(/invalid sandbox id "a\.\.b": want letters/);
  });
});

describe('Task requests', () => {
  let env: FakeEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  async function taskService(): Promise<ServiceImpl<typeof Task>> {
    env = await fakeEnv();
    const { impl } = createTaskService({
      sandboxId: 'sb1',
      namespace: 'test',
      deps: env.deps,
      publisher: { publish: () => {}, flush: async () => {}, close: () => {} },
      log: logger('shim-test'),
      onShutdown: () => {},
    });
    return impl;
  }

  const ctx = {
    service: 'containerd.task.v2.Task',
    method: 'test',
    metadata: new Map<string, string[]>(),
    signal: new AbortController().signal,
  };

  it('Create and Exec answer InvalidArgument for an id the grammar refuses, before touching anything', async () => {
    const impl = await taskService();
    const created = impl.create?.(
      create(CreateTaskRequestSchema, { id: 'a..b', bundle: '/nonexistent' }),
      ctx,
    );
    await expect(created).rejects.toBeInstanceOf(TtrpcError);
    await expect(created).rejects.toMatchObject({
      code: Code.InvalidArgument,
      message: 'invalid container id "a..b": want letters and digits, with single . _ or - between them',
    });
    const exec = impl.exec?.(create(ExecProcessRequestSchema, { id: 'sb1', execId: 'e/1' }), ctx);
    await expect(exec).rejects.toMatchObject({
      code: Code.InvalidArgument,
      message: /invalid exec id "e\/1"/,
    });
    expect(env?.shared.setup).toBe(0);
    expect(env?.hypervisors).toEqual([]);
  });
});
