/**
 * kiln import writes no secret (issue 23): a sensitive variable's texts and the values computed from
 * one become kiln variables without a value, referred to as ${var.NAME} where the texts were.
 */
import type { PackerSecret, PackerTemplate } from './model.js';

/** A kiln variable standing for a secret, and the text it replaces in the imported fields. */
export interface SecretVariable {
  name: string;
  secret: PackerSecret;
  type: 'string' | 'number';
  used: boolean;
}

export const kilnVar = (ref: string) =>
  ref
    .replace(/^var\./, '')
    .replace(/^local\./, 'local_')
    .replace(/[^A-Za-z0-9_]/g, '_');

/**
 * The kiln variables for a template's secrets. A sensitive variable's own texts come first (longest
 * first, so a secret holding another goes whole); then values derived from them, unless the derived
 * text is the secret with plain text around it (format("x-%s", var.pw)), which ${var.pw} expresses.
 * Values read by file() stay as they are: they are the template's files (user-data...), not secrets.
 * `symbolic`: texts kiln import put in place of a variable's value (see to-kiln-yaml.ts), which it
 * replaces itself: they count as the secret around a derived text, but get no variable here.
 */
export function secretVariables(
  t: PackerTemplate,
  symbolic: (text: string) => boolean = () => false,
): SecretVariable[] {
  const taken = new Set(t.variables.map((v) => v.name));
  const own = t.secrets.filter((s) => s.kind === 'variable');
  const plain = (text: string) =>
    [...own]
      .sort((a, b) => b.text.length - a.text.length)
      .reduce((x, s) => (s.text.length >= 3 ? x.split(s.text).join('') : x), text);
  const derived = t.secrets.filter((s) => s.kind === 'derived' && plain(s.text) === s.text);
  const out: SecretVariable[] = [];
  const names = new Set<string>();
  const unique = (want: string) => {
    let name = want;
    for (let n = 2; names.has(name); n++) name = `${want}_${n}`;
    names.add(name);
    return name;
  };
  for (const s of [...own].sort((a, b) => b.text.length - a.text.length)) {
    if (symbolic(s.text)) {
      names.add(s.name);
      continue;
    }
    out.push({ name: unique(s.name), secret: s, type: s.number ? 'number' : 'string', used: false });
  }
  for (const s of derived) {
    const from = kilnVar(s.from[0] ?? 'secret');
    const want = `${from}_for_${s.name}`;
    out.push({
      name: unique(taken.has(want) ? `${want}_value` : want),
      secret: s,
      type: s.number ? 'number' : 'string',
      used: false,
    });
  }
  return out;
}

/**
 * Replaces each secret in the fields with ${var.NAME}: a whole value of any length (a sensitive "22"
 * too, kept a number), and inside longer strings a secret of 3 characters or more (a shorter one would
 * match ordinary text).
 */
export function hideSecrets(node: unknown, vars: SecretVariable[]): unknown {
  if (typeof node === 'string' || typeof node === 'number') {
    const whole = vars.find((v) => v.secret.text === String(node));
    if (whole) {
      whole.used = true;
      if (typeof node === 'number') whole.type = 'number';
      return `\${var.${whole.name}}`;
    }
    if (typeof node === 'number') return node;
    let s = node;
    for (const v of vars) {
      if (v.secret.text.length < 3 || !s.includes(v.secret.text)) continue;
      v.used = true;
      s = s.split(v.secret.text).join(`\${var.${v.name}}`);
    }
    return s;
  }
  if (Array.isArray(node)) return node.map((v) => hideSecrets(v, vars));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, hideSecrets(v, vars)]));
  return node;
}

/** What the user must give for a secret's kiln variable, and why it is not written out. */
export function describeSecret(v: SecretVariable, where: (at: { file: string; line: number }) => string): string {
  const s = v.secret;
  if (s.kind === 'variable')
    return `sensitive in the Packer template (${s.from[0]}): give it with --var ${v.name}=..., a --var-file or KILN_VAR_${v.name}`;
  return `computed in the Packer template from ${s.from.join(', ')}${s.at ? ` at ${where(s.at)}` : ''}; a kiln template has no functions: give the computed value with --var ${v.name}=..., a --var-file or KILN_VAR_${v.name}`;
}

/**
 * A literal "${var.x}" in a Packer value (HCL's "$${var.x}", or plain text in legacy JSON) would be read
 * by kiln's interpolation: written "$${var.x}", kiln's escape for it (interpolate.ts). A function, not a
 * replacement string: in String.replace's pattern "$$" is one "$", which turned the escape back into
 * "${" and made an imported build write a secret into a guest file.
 */
export function escapeOwnSyntax(node: unknown): unknown {
  if (typeof node === 'string') return node.replace(/\$\{(\s*var\.)/g, (_m, ref: string) => `$\${${ref}`);
  if (Array.isArray(node)) return node.map(escapeOwnSyntax);
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, escapeOwnSyntax(v)]));
  return node;
}
