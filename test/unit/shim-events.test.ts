import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { afterEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import {
  TaskExitSchema,
  TaskOOMSchema,
} from '../../src/protocols/gen/github.com/containerd/containerd/api/events/task_pb.js';
import { Events } from '../../src/protocols/gen/github.com/containerd/containerd/api/services/ttrpc/events/v1/events_pb.js';
import { Code, TtrpcError, TtrpcServer } from '../../src/protocols/ttrpc/index.js';
import { EventPublisher, TOPICS } from '../../src/shim/events.js';

const log = logger('test').child({}, { level: 'silent' });

describe('EventPublisher', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'events-'));
  let server: TtrpcServer | undefined;
  afterEach(() => server?.close());

  /** An Events service that refuses the first `failures` forwards. */
  async function containerd(sock: string, failures: number) {
    const got: { topic: string; at: Date }[] = [];
    let calls = 0;
    server = new TtrpcServer().register(Events, {
      forward: (req) => {
        if (calls++ < failures) throw new TtrpcError(Code.Unavailable, 'containerd restarting');
        got.push({ topic: req.envelope!.topic, at: timestampDate(req.envelope!.timestamp!) });
        return {};
      },
    });
    await server.listen(sock);
    return got;
  }

  it('keeps retrying an exit past the retry limit, stamped when it happened', async () => {
    const sock = path.join(dir, 'a.sock');
    const got = await containerd(sock, 8);
    // 20 ms backoff: the eighth retry goes out ~0.7 s later, yet the event keeps its own time.
    const p = new EventPublisher(`unix://${sock}`, 'default', log, 20);
    const before = Date.now();
    p.publish(TOPICS.exit, TaskExitSchema, { containerId: 'c1', exitStatus: 3 });
    await p.flush(10_000);
    expect(got.map((g) => g.topic)).toEqual([TOPICS.exit]);
    expect(got[0]!.at.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(got[0]!.at.getTime()).toBeLessThanOrEqual(before + 50);
    expect(p.dropped).toBe(0);
    p.close();
  });

  it('drops other events after five failed forwards, and counts them', async () => {
    const sock = path.join(dir, 'b.sock');
    const got = await containerd(sock, 5);
    const p = new EventPublisher(`unix://${sock}`, 'default', log, 1);
    p.publish(TOPICS.oom, TaskOOMSchema, { containerId: 'c1' });
    p.publish(TOPICS.exit, TaskExitSchema, { containerId: 'c1' });
    await p.flush(10_000);
    expect(got.map((g) => g.topic)).toEqual([TOPICS.exit]);
    expect(p.dropped).toBe(1);
    p.close();
  });
});
