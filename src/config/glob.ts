// glob(3)-style path patterns for Kata's valid_*_paths lists: `*` and `?` do not cross "/", `[...]` is a
// character class (`[!...]` negated). Matching is on the string only; the file need not exist.

function toRegExp(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) {
        out += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      out += `[${negate ? '^' : ''}${body.replace(/[\\\]]/g, '\\$&')}]`;
      i = end;
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

export function globMatch(pattern: string, path: string): boolean {
  try {
    return toRegExp(pattern).test(path);
  } catch {
    // A malformed class never matches, like glob::Pattern rejecting it.
    return false;
  }
}

export function matchesAny(patterns: readonly string[], path: string): boolean {
  return patterns.some((p) => globMatch(p, path));
}
