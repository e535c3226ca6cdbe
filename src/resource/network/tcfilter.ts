// Kata's tcfilter internetworking model: a tap next to the CNI's interface, an ingress qdisc on each and a
// u32 match-all filter that redirects every frame to the other (mirred egress redirect). The interface itself
// is not changed, so CNI finds it as it left it.
import type { NetnsCommands } from './iproute.js';
import { isNoSuchDevice } from './iproute.js';
import { countFilters, parseQdiscs } from './parse.js';

/** The filter priority kata-ts uses, so that teardown removes its own filter and no other. */
export const FILTER_PREF = 49_152;
export const INGRESS_HANDLE = 'ffff:';

/** `tc` argv (without "tc") to add the ingress qdisc on `dev`. */
export function ingressQdiscArgs(dev: string): string[] {
  return ['qdisc', 'add', 'dev', dev, 'handle', INGRESS_HANDLE, 'ingress'];
}

/** `tc` argv for the match-all redirect from `from`'s ingress to `to`'s egress. */
export function redirectFilterArgs(from: string, to: string): string[] {
  return [
    'filter',
    'add',
    'dev',
    from,
    'parent',
    INGRESS_HANDLE,
    'pref',
    String(FILTER_PREF),
    'protocol',
    'all',
    'u32',
    'match',
    'u8',
    '0',
    '0',
    'action',
    'mirred',
    'egress',
    'redirect',
    'dev',
    to,
  ];
}

export function deleteFilterArgs(dev: string): string[] {
  return ['filter', 'del', 'dev', dev, 'parent', INGRESS_HANDLE, 'pref', String(FILTER_PREF)];
}

export function deleteIngressArgs(dev: string): string[] {
  return ['qdisc', 'del', 'dev', dev, 'handle', INGRESS_HANDLE, 'ingress'];
}

/** Whether `dev` already has an ingress (or clsact) qdisc, which then is not ours to remove. */
export async function hasIngressQdisc(cmds: NetnsCommands, dev: string): Promise<boolean> {
  const qdiscs = parseQdiscs(await cmds.tc(['-j', 'qdisc', 'show', 'dev', dev]));
  return qdiscs.some((q) => q.kind === 'ingress' || q.kind === 'clsact');
}

export async function ingressFilterCount(cmds: NetnsCommands, dev: string): Promise<number> {
  return countFilters(await cmds.tc(['-j', 'filter', 'show', 'dev', dev, 'ingress']));
}

/** Runs a removal; "no such device/filter" counts as done (idempotent teardown). Other errors are returned. */
export async function removeQuietly(run: () => Promise<unknown>): Promise<Error | undefined> {
  try {
    await run();
    return undefined;
  } catch (e) {
    if (
      isNoSuchDevice(e) ||
      /Cannot find|Parent Qdisc doesn't exist|Invalid handle|No such file|Cannot delete qdisc with handle of zero|Filter with specified priority\/protocol not found/i.test(
        String((e as Error).message),
      )
    )
      return undefined;
    return e as Error;
  }
}
