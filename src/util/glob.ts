/**
 * Build-name globs as Packer 1.6.6 reads -only/-except (github.com/gobwas/glob compiled without
 * separators): `*` is any run of characters, dots included (`*.debian` matches `qemu.debian` and
 * `named.qemu.debian`), `?` one character, `[abc]`/`[a-z]`/`[!abc]` a class, `{a,b}` alternatives
 * (unusable on a command line, where commas separate names), `\` escapes the next character.
 * Packer checked on a template of `null` sources: see test/unit/template/packer/cli.test.ts.
 */
export class GlobError extends Error {}

const special = /[.+^${}()|[\]\\/-]/g;

export function globToRegExp(pattern: string): RegExp {
  let re = '';
  let depth = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\') {
      const next = pattern[++i];
      if (next === undefined) throw new GlobError(`"${pattern}" ends with a lone backslash`);
      re += next.replace(special, '\\$&').replace(/[*?]/, '\\$&');
    } else if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw new GlobError(`"${pattern}" opens a [class] that is never closed`);
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('!');
      if (negate) body = body.slice(1);
      if (!body) throw new GlobError(`"${pattern}" has an empty [class]`);
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = end;
    } else if (c === '{') {
      re += '(?:';
      depth++;
    } else if (c === '}' && depth > 0) {
      re += ')';
      depth--;
    } else if (c === ',' && depth > 0) re += '|';
    else re += c.replace(special, '\\$&');
  }
  if (depth > 0) throw new GlobError(`"${pattern}" opens a {group} that is never closed`);
  return new RegExp(`^${re}$`, 's');
}

export function globMatch(pattern: string, name: string): boolean {
  return globToRegExp(pattern).test(name);
}

/** True when a name holds glob characters (so it is a pattern, not a literal name). */
export const isGlob = (pattern: string): boolean => /[*?[{\\]/.test(pattern);
