/**
 * The shell scripts kiln runs in guests live as `.sh` files in src/guest-scripts/ (shipped in the
 * package, checked by shellcheck in `make test`), not as strings in TypeScript. A script takes its
 * parameters as shell variables that kiln sets before its text (`guestScriptVars`).
 *
 * Full-line comments are dropped when a script is read: they are for its readers, and the text sent to
 * the guest (and digested into the final layer's key) stays the code alone. So no line inside a quoted
 * string of a guest script may start with `#`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../version.js';

/** src/guest-scripts, from src/util (tests) and dist/util (the build) alike. */
export const guestScriptsDir = path.join(packageRoot, 'src', 'guest-scripts');

const cache = new Map<string, string>();

/** The code of src/guest-scripts/<name>.sh, without its comment lines; ends with a newline. */
export function guestScript(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    const raw = readFileSync(path.join(guestScriptsDir, `${name}.sh`), 'utf8');
    text =
      raw
        .split('\n')
        .filter((l) => !/^\s*#/.test(l))
        .join('\n')
        .trimEnd() + '\n';
    cache.set(name, text);
  }
  return text;
}

/** `NAME='value'` lines that set a script's parameters, each value single-quoted for sh. */
export function guestScriptVars(vars: Record<string, string | number>): string {
  return Object.entries(vars)
    .map(([k, v]) => `${k}='${String(v).replace(/'/g, `'\\''`)}'\n`)
    .join('');
}
