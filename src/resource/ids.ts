// Sandbox and container ids become path components on the host, so they are checked before any path is built.

/** containerd's identifier grammar, the one Kata accepts too. */
const ID_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

export function checkId(kind: 'sandbox' | 'container', id: string): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > 76 || !ID_RE.test(id)) {
    throw new Error(
      `invalid ${kind} id ${JSON.stringify(id)}: want 1-76 characters of letters, digits and single ._- between them`,
    );
  }
}
