/**
 * Template interpolation. One syntax: `${var.NAME}` for user variables and `${build.NAME}` for values
 * known only while a build runs (http_ip, http_port, ssh_public_key, name, output_dir...).
 * Only these two namespaces are touched, so shell code in inline provisioners (`${HOME}`, `${1:-x}`)
 * passes through unchanged; `$${` writes a literal `${`.
 */

export type Scalar = string | number | boolean;
const reference = /\$(\$?)\{\s*(var|build)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}/g;

export interface InterpolationProblem {
  namespace: string;
  name: string;
}

/** A value by its own name only: `${var.constructor}` must not find Object.prototype's. */
function lookup(values: Record<string, Scalar> | undefined, name: string): Scalar | undefined {
  return values && Object.hasOwn(values, name) ? values[name] : undefined;
}

/**
 * Replaces references in one string. A string that is exactly one reference takes the value's own type
 * (so `cpus: ${var.cpus}` stays a number). Unknown names are reported through `onMissing` and left as is.
 */
export function interpolateString(
  text: string,
  values: { var?: Record<string, Scalar>; build?: Record<string, Scalar> },
  onMissing: (p: InterpolationProblem) => void = () => {},
  only?: 'var' | 'build',
): Scalar {
  const whole = /^\$\{\s*(var|build)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}$/.exec(text);
  if (whole) {
    const ns = whole[1] as 'var' | 'build';
    if (only && ns !== only) return text;
    const v = lookup(values[ns], whole[2]!);
    if (v === undefined) {
      onMissing({ namespace: ns, name: whole[2]! });
      return text;
    }
    return v;
  }
  return text.replace(reference, (match, escaped: string, ns: 'var' | 'build', name: string) => {
    // Another namespace's escape is left for its own pass: unescaped now, `$${build.x}` would be filled in later.
    if (only && ns !== only) return match;
    if (escaped) return match.slice(1);
    const v = lookup(values[ns], name);
    if (v === undefined) {
      onMissing({ namespace: ns, name });
      return match;
    }
    return String(v);
  });
}

/** Applies interpolateString to every string in a JSON-like tree, reporting each miss with its path. */
export function interpolateTree<T>(
  tree: T,
  values: { var?: Record<string, Scalar>; build?: Record<string, Scalar> },
  onMissing: (p: InterpolationProblem & { path: (string | number)[] }) => void = () => {},
  only?: 'var' | 'build',
  path: (string | number)[] = [],
): T {
  if (typeof tree === 'string') {
    return interpolateString(tree, values, (p) => onMissing({ ...p, path }), only) as T;
  }
  if (Array.isArray(tree)) return tree.map((v, i) => interpolateTree(v, values, onMissing, only, [...path, i])) as T;
  if (tree && typeof tree === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(tree)) {
      // defineProperty, not assignment: a "__proto__" key stays a key (and an unknown one) instead of a prototype.
      Object.defineProperty(out, k, {
        value: interpolateTree(v, values, onMissing, only, [...path, k]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out as T;
  }
  return tree;
}
