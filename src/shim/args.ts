// The command line containerd gives a shim v2 binary, parsed like Go's `flag` package does
// (`-name value`, `-name=value`, `--name value`, booleans without a value; parsing stops at the action).
// Ids are checked here, at the edge, with the contract's grammar: an id the shim accepts is one every layer
// below (resource, persist, agent) accepts.
import { type IdKind, idProblem } from '../contract/index.js';

export interface ShimArgs {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  /** "start", "delete", or "" for the daemon (serving the Task API). */
  action: string;
}

type StringFlag = 'namespace' | 'id' | 'address' | 'publishBinary' | 'bundle' | 'socket';
const STRING_FLAGS: Record<string, StringFlag> = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
};
const BOOL_FLAGS: Record<string, 'debug' | 'version'> = { debug: 'debug', v: 'version' };

export class ArgsError extends Error {
  override name = 'ArgsError';
}

export function parseArgs(argv: readonly string[]): ShimArgs {
  const args: ShimArgs = {
    namespace: '',
    id: '',
    address: '',
    publishBinary: 'containerd',
    bundle: '',
    socket: '',
    debug: false,
    version: false,
    action: '',
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    const boolKey = BOOL_FLAGS[name];
    if (boolKey) {
      if (inline === undefined) args[boolKey] = true;
      else if (/^(1|t|true|TRUE|True)$/.test(inline)) args[boolKey] = true;
      else if (/^(0|f|false|FALSE|False)$/.test(inline)) args[boolKey] = false;
      else throw new ArgsError(`invalid boolean value ${JSON.stringify(inline)} for flag -${name}`);
      continue;
    }
    const key = STRING_FLAGS[name];
    if (!key) throw new ArgsError(`flag provided but not defined: -${name}`);
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new ArgsError(`flag needs an argument: -${name}`);
      value = argv[++i]!;
    }
    args[key] = value;
  }
  args.action = argv[i] ?? '';
  return args;
}

export function validateArgs(args: ShimArgs, needBundle: boolean): void {
  const missing = (['id', 'namespace'] as const).filter((k) => !args[k]);
  if (missing.length)
    throw new ArgsError(`missing required flag(s): ${missing.map((m) => `-${m}`).join(', ')}`);
  // `start` and `delete` get a container's id; the daemon gets its group's, the sandbox id.
  const kind: IdKind = args.action === '' ? 'sandbox' : 'container';
  const idBad = idProblem(args.id);
  if (idBad) throw new ArgsError(`invalid id ${JSON.stringify(args.id)} (-id, the ${kind} id): ${idBad}`);
  // containerd's namespaces follow the same identifier grammar.
  const nsBad = idProblem(args.namespace);
  if (nsBad)
    throw new ArgsError(`invalid namespace ${JSON.stringify(args.namespace)} (-namespace): ${nsBad}`);
  if (needBundle && !args.bundle) throw new ArgsError('missing required flag -bundle');
}

/**
 * The ids of a Task request (Create: container; Exec: container and exec), checked with the same grammar.
 * Throws ArgsError (answered InvalidArgument) naming the id, its kind and the problem.
 */
export function checkRequestIds(ids: Partial<Record<IdKind, string>>): void {
  for (const [kind, id] of Object.entries(ids)) {
    const problem = idProblem(id);
    if (problem) throw new ArgsError(`invalid ${kind} id ${JSON.stringify(id)}: ${problem}`);
  }
}
