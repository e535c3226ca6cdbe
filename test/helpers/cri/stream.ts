// A client of containerd's CRI streaming server, as kubectl exec/attach reach it through the API server: a
// WebSocket with Kubernetes' channel protocol v4 (v4.channel.k8s.io). Every binary message starts with its
// channel: 0 stdin, 1 stdout, 2 stderr, 3 the final status (a metav1.Status as JSON), 4 terminal resize.
import WebSocket from 'ws';

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const RESIZE = 4;

export interface StreamStatus {
  status?: string;
  reason?: string;
  message?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

export interface StreamResult {
  stdout: Buffer;
  stderr: Buffer;
  /** The server's final status; undefined when the client closed first (see `until`). */
  status?: StreamStatus;
  /** From the status: 0 on Success, the NonZeroExitCode cause otherwise; undefined without a status. */
  exitCode?: number;
}

export interface StreamOptions {
  /** Sent on stdin once the stream is open (v4 has no stdin EOF: the command must stop reading by itself). */
  stdin?: string | Buffer;
  /** Sent on the resize channel once the stream is open. */
  resize?: { width: number; height: number };
  /** Closes the stream from this side as soon as this holds for the output so far (attach never ends by itself). */
  until?: (r: { stdout: Buffer; stderr: Buffer }) => boolean;
  timeoutMs: number;
}

function exitCodeOf(s: StreamStatus): number | undefined {
  if (s.status === 'Success') return 0;
  const cause = s.details?.causes?.find((c) => c.reason === 'ExitCode');
  return cause?.message !== undefined ? Number(cause.message) : undefined;
}

/** Runs one exec or attach stream at `url` (from the CRI Exec or Attach call) to its end. */
export function runStream(url: string, o: StreamOptions): Promise<StreamResult> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v4.channel.k8s.io']);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let status: StreamStatus | undefined;
  const result = (): StreamResult => {
    const r: StreamResult = { stdout: Buffer.concat(out), stderr: Buffer.concat(err), status };
    if (status) r.exitCode = exitCodeOf(status);
    return r;
  };
  return new Promise<StreamResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      const r = result();
      reject(
        new Error(
          `stream ${url}: no end within ${o.timeoutMs} ms (stdout so far ${JSON.stringify(r.stdout.toString())})`,
        ),
      );
    }, o.timeoutMs);
    const send = (channel: number, data: string | Buffer) =>
      ws.send(Buffer.concat([Buffer.from([channel]), Buffer.from(data)]));
    ws.on('open', () => {
      if (o.resize) send(RESIZE, JSON.stringify({ Width: o.resize.width, Height: o.resize.height }));
      if (o.stdin !== undefined) send(STDIN, o.stdin);
    });
    ws.on('message', (raw: Buffer) => {
      if (raw.length === 0) return;
      const data = raw.subarray(1);
      if (raw[0] === STDOUT) out.push(data);
      else if (raw[0] === STDERR) err.push(data);
      else if (raw[0] === STATUS && data.length > 0) status = JSON.parse(data.toString()) as StreamStatus;
      if (o.until?.({ stdout: Buffer.concat(out), stderr: Buffer.concat(err) })) ws.close();
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`stream ${url}: ${e.message}`));
    });
    ws.on('close', () => {
      clearTimeout(timer);
      resolve(result());
    });
  });
}
