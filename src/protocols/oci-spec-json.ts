// OCI spec JSON with exact 64-bit integers: real specs carry limits such as 9223372036854775807, which
// JSON.parse would round.
const BIG_MARK = '\u0000int64:';

/** JSON.stringify that writes bigints as plain JSON numbers (exact, unlike Number()). */
export function stringifyOciJson(value: unknown, indent?: number): string {
  const text = JSON.stringify(
    value,
    (_k, v: unknown) => (typeof v === 'bigint' ? `${BIG_MARK}${v}` : v),
    indent,
  );
  return text.replace(/"\\u0000int64:(-?\d+)"/g, '$1');
}

/**
 * JSON.parse that keeps integers beyond 2^53 exact, as bigints (memory limits such as
 * 9223372036854775807 appear in real specs). Strings are left untouched.
 */
export function parseOciJson(text: string): unknown {
  let out = '';
  let i = 0;
  let marked = false;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j]!)) j++;
      const num = text.slice(i, j);
      if (/^-?\d+$/.test(num) && !Number.isSafeInteger(Number(num))) {
        out += `"${BIG_MARK.replace('\u0000', '\\u0000')}${num}"`;
        marked = true;
      } else out += num;
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  if (!marked) return JSON.parse(text);
  return JSON.parse(out, (_k, v: unknown) =>
    typeof v === 'string' && v.startsWith(BIG_MARK) ? BigInt(v.slice(BIG_MARK.length)) : v,
  );
}
