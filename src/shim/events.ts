// Task events to containerd: Events.Forward on containerd's ttrpc socket (TTRPC_ADDRESS), as the Go shim library
// of containerd 1.6 does. Events go out in order from one queue, stamped when they happened. Exits and deletes are
// never dropped while the shim runs (containerd may be restarting and needs them to reap the task); other events
// are retried a few times, then dropped, and the queue drops (and counts) the oldest of those when it is full.
import { type DescMessage, type MessageInitShape, create, toBinary } from '@bufbuild/protobuf';
import { AnySchema, type Timestamp, timestampNow } from '@bufbuild/protobuf/wkt';
import type { Logger } from '../common/log.js';
import { sleep } from '../common/poll.js';
import { Events } from '../protocols/gen/github.com/containerd/containerd/api/services/ttrpc/events/v1/events_pb.js';
import { type Client, TtrpcClient, createClient } from '../protocols/ttrpc/index.js';

export const TOPICS = {
  create: '/tasks/create',
  start: '/tasks/start',
  exit: '/tasks/exit',
  delete: '/tasks/delete',
  execAdded: '/tasks/exec-added',
  execStarted: '/tasks/exec-started',
  paused: '/tasks/paused',
  resumed: '/tasks/resumed',
  oom: '/tasks/oom',
} as const;

interface Item {
  topic: string;
  typeUrl: string;
  value: Uint8Array;
  attempts: number;
  /** When the event happened, not when it was sent. */
  timestamp: Timestamp;
}

/** Events containerd cannot do without: the task's exit (Wait, reaping) and its delete. */
const KEPT_TOPICS: ReadonlySet<string> = new Set([TOPICS.exit, TOPICS.delete]);
const MAX_ATTEMPTS = 5;
const FORWARD_TIMEOUT_MS = 5000;
const MAX_BACKOFF_MS = 5000;
/** Droppable events queued at most; past it the oldest droppable one goes. */
export const MAX_QUEUED_DROPPABLE = 1000;

export interface Publisher {
  publish<D extends DescMessage>(topic: string, schema: D, event: MessageInitShape<D>): void;
  /** Waits (up to timeoutMs) until every queued event was sent or given up. */
  flush(timeoutMs: number): Promise<void>;
  close(): void;
}

export class EventPublisher implements Publisher {
  private readonly queue: Item[] = [];
  private running = false;
  private client: TtrpcClient | undefined;
  private events: Client<typeof Events> | undefined;
  private idle: (() => void)[] = [];
  private closed = false;
  /** Events given up on (retries exhausted or queue full), for logs and tests. */
  dropped = 0;

  constructor(
    /** containerd's ttrpc socket ("" when containerd gave none: events are only logged). */
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: Logger,
    /** First retry delay; later ones grow linearly up to MAX_BACKOFF_MS. */
    private readonly backoffMs = 200,
  ) {}

  publish<D extends DescMessage>(topic: string, schema: D, event: MessageInitShape<D>): void {
    const value = toBinary(schema, create(schema, event));
    // containerd's typeurl names protobuf events by their full name, without a type.googleapis.com/ prefix.
    const item = { topic, typeUrl: schema.typeName, value, attempts: 0, timestamp: timestampNow() };
    this.log.debug({ topic, event: schema.typeName }, 'publishing event');
    if (!this.address || this.closed) return;
    if (!KEPT_TOPICS.has(topic) && this.droppableQueued() >= MAX_QUEUED_DROPPABLE) {
      // The head may be in flight: drop the oldest droppable one behind it.
      const i = this.queue.findIndex((q, n) => n > 0 && !KEPT_TOPICS.has(q.topic));
      if (i > 0) {
        const [old] = this.queue.splice(i, 1);
        this.dropped++;
        this.log.warn(
          { topic: old!.topic, dropped: this.dropped },
          'event queue full: dropping the oldest event',
        );
      }
    }
    this.queue.push(item);
    void this.run();
  }

  flush(timeoutMs: number): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.idle.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private droppableQueued(): number {
    let n = 0;
    for (const q of this.queue) if (!KEPT_TOPICS.has(q.topic)) n++;
    return n;
  }

  close(): void {
    this.closed = true;
    this.client?.close();
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const item = this.queue[0]!;
        try {
          await this.forward(item);
          this.queue.shift();
        } catch (e) {
          item.attempts++;
          const kept = KEPT_TOPICS.has(item.topic);
          if (this.closed || (!kept && item.attempts >= MAX_ATTEMPTS)) {
            this.dropped++;
            this.log.error(
              {
                topic: item.topic,
                err: (e as Error).message,
                attempts: item.attempts,
                dropped: this.dropped,
              },
              this.closed ? 'dropping event: publisher closed' : 'dropping event after retries',
            );
            this.queue.shift();
          } else {
            this.log.warn(
              { topic: item.topic, err: (e as Error).message, attempt: item.attempts },
              'forward event failed',
            );
            await sleep(Math.min(this.backoffMs * item.attempts, MAX_BACKOFF_MS));
          }
        }
      }
    } finally {
      this.running = false;
      for (const f of this.idle.splice(0)) f();
    }
  }

  private async forward(item: Item): Promise<void> {
    if (!this.client || this.client.closed) {
      const path = this.address.replace(/^unix:\/\//, '');
      this.client = await TtrpcClient.connect(path, {
        timeoutMs: FORWARD_TIMEOUT_MS,
        peer: `containerd events (${path})`,
      });
      this.events = createClient(Events, this.client);
    }
    await this.events!.forward(
      {
        envelope: {
          timestamp: item.timestamp,
          namespace: this.namespace,
          topic: item.topic,
          event: create(AnySchema, { typeUrl: item.typeUrl, value: item.value }),
        },
      },
      { timeoutMs: FORWARD_TIMEOUT_MS },
    );
  }
}
