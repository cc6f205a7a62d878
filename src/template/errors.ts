/** Template errors that name the file, the field (with its line), the problem and the fix. */
import type { z } from 'zod';

export interface FieldProblem {
  path: (string | number)[];
  message: string;
  fix?: string;
  line?: number;
}

export class TemplateError extends Error {
  constructor(readonly file: string, readonly problems: FieldProblem[]) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'TemplateError';
  }
}

export function formatPath(path: (string | number)[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(top level)';
}

function formatProblem(file: string, p: FieldProblem): string {
  const where = p.line ? `${file}:${p.line}` : file;
  return `${where}: ${formatPath(p.path)}: ${p.message}${p.fix ? `\n  fix: ${p.fix}` : ''}`;
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) { best = c; bestDistance = d; }
  }
  return best;
}

/** Turns zod's issues into problems with a fix each. `keysAt` lists the valid keys of the object at a path. */
export function problemsFromZod(
  error: z.ZodError,
  keysAt: (path: (string | number)[]) => readonly string[] | undefined,
): FieldProblem[] {
  const problems: FieldProblem[] = [];
  for (const issue of error.issues) {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const valid = keysAt(path) ?? [];
        const guess = closest(key, valid);
        problems.push({
          path: [...path, key],
          message: `unknown key "${key}"`,
          fix: guess ? `did you mean "${guess}"?` : valid.length ? `valid keys here: ${valid.join(', ')}` : 'remove it',
        });
      }
      continue;
    }
    if (issue.code === 'invalid_union' && 'errors' in issue && Array.isArray(issue.errors)) {
      // A union (e.g. communicator ssh|none): report the branch that got furthest, not all of them.
      const branches = issue.errors as z.core.$ZodIssue[][];
      const best = branches.reduce((a, b) => (b.length < a.length ? b : a), branches[0] ?? []);
      if (best.length) {
        problems.push(...problemsFromZod({ issues: best.map((i) => ({ ...i, path: [...path, ...i.path] })) } as z.ZodError, keysAt));
        continue;
      }
    }
    if (issue.code === 'invalid_value' && 'values' in issue) {
      const given = issue.input;
      const values = (issue.values as unknown[]).map(String);
      const guess = typeof given === 'string' ? closest(given, values) : undefined;
      problems.push({
        path,
        message: `${JSON.stringify(given)} is not allowed`,
        fix: guess ? `did you mean "${guess}"? (one of: ${values.join(', ')})` : `use one of: ${values.join(', ')}`,
      });
      continue;
    }
    if (issue.code === 'invalid_type') {
      const given = issue.input === undefined ? 'missing' : `got ${describe(issue.input)}`;
      problems.push({
        path,
        message: issue.input === undefined ? `required field is missing` : `expected ${issue.expected}, ${given}`,
        fix: issue.input === undefined ? `add "${String(path.at(-1))}"` : `write a ${issue.expected} here`,
      });
      continue;
    }
    problems.push({ path, message: issue.message });
  }
  return problems;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}
