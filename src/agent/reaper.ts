// PLACEHOLDER (being replaced by the agent-RPC work): child subreaper for the agent.
export interface ExitStatus {
  /** Exit code, or 128+signal when killed by a signal (as runc/crun and shells report it). */
  exitCode: number;
  signal: number | null;
}

/** Makes this process a child subreaper and starts reaping zombies that child_process does not own. */
export function startReaper(): void {}

/** Resolves when `pid` (a reparented container process) exits; works even if it exited already. */
export function waitForExit(_pid: number): Promise<ExitStatus> {
  return Promise.reject(new Error('reaper not implemented yet'));
}
