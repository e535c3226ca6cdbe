// The shim's event publisher against a real containerd (no VM): events forwarded on containerd's ttrpc socket
// come out of `ctr events` decoded, i.e. containerd accepts the envelope and knows the type URLs.
import path from 'node:path';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import {
  TaskExitSchema,
  TaskOOMSchema,
  TaskStartSchema,
} from '../../src/protocols/gen/github.com/containerd/containerd/api/events/task_pb.js';
import { EventPublisher, TOPICS } from '../../src/shim/events.js';
import { type Containerd, startContainerd } from '../helpers/containerd.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';

// First hook of the file: its after-hook runs last, after the file's own clean-up.
useLeftoverCheck({ per: 'file' });

let ctrd: Containerd;
beforeAll(async () => {
  ctrd = await startContainerd();
});
afterAll(async () => {
  await ctrd?.stop();
});

describe('task events to containerd', () => {
  it('are accepted and decoded by containerd', async () => {
    const sub = ctrd.ctrSpawn(['events']);
    let out = '';
    sub.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    await new Promise((r) => setTimeout(r, 500)); // subscribed
    const pub = new EventPublisher(
      path.join(ctrd.dir, 'containerd.sock.ttrpc'),
      ctrd.namespace,
      logger('events-test'),
    );
    pub.publish(TOPICS.start, TaskStartSchema, { containerId: 'c1', pid: 42 });
    pub.publish(TOPICS.exit, TaskExitSchema, {
      containerId: 'c1',
      id: 'c1',
      pid: 42,
      exitStatus: 7,
      exitedAt: timestampNow(),
    });
    pub.publish(TOPICS.oom, TaskOOMSchema, { containerId: 'c1' });
    await pub.flush(10_000);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !out.includes('/tasks/oom')) await new Promise((r) => setTimeout(r, 50));
    sub.kill();
    pub.close();
    const lines = out.trim().split('\n');
    expect(lines.find((l) => l.includes('/tasks/start'))).toMatch(/"container_id":"c1".*"pid":42/);
    expect(lines.find((l) => l.includes('/tasks/exit'))).toMatch(/"exit_status":7/);
    expect(lines.find((l) => l.includes('/tasks/oom'))).toMatch(/"container_id":"c1"/);
    // In order, as published.
    expect(lines.findIndex((l) => l.includes('/tasks/start'))).toBeLessThan(
      lines.findIndex((l) => l.includes('/tasks/exit')),
    );
  });
});
