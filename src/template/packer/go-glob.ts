/**
 * Go's filepath.Glob, which Packer applies to cd_files entries: `*`, `?` and `[...]` match within one
 * path segment (no `**`, and a leading dot is matched like any other character); matches come sorted
 * per directory; a pattern without those characters is itself. Written here because Node 20 has no
 * fs.globSync and the project has no glob dependency of its own.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';

export const hasGlobMeta = (p: string): boolean => /[*?[]/.test(p);

/** One path segment's pattern as a RegExp (Go's path.Match syntax; `[^...]` or `[!...]` negate). */
function segmentRegExp(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = seg.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = seg.slice(i + 1, end);
      if (body.startsWith('^') || body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else if (c === '\\' && i + 1 < seg.length) re += `\\${seg[++i]!}`;
    else re += c.replace(/[.+^${}()|\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The absolute paths matching an absolute pattern, sorted as Go's Glob returns them. */
export function goGlob(pattern: string): string[] {
  const root = path.parse(pattern).root;
  let found = [root];
  for (const seg of pattern
    .slice(root.length)
    .split(path.sep)
    .filter((s) => s !== '')) {
    if (!hasGlobMeta(seg)) {
      found = found.map((d) => path.join(d, seg));
      continue;
    }
    const re = segmentRegExp(seg);
    found = found.flatMap((d) => {
      try {
        return readdirSync(d)
          .filter((n) => re.test(n))
          .sort()
          .map((n) => path.join(d, n));
      } catch {
        return [];
      }
    });
  }
  return found;
}
