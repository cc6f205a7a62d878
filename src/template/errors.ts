/** Template errors that name the file, the field (with its line), the problem and the fix. */
import type { z } from 'zod';
import { KilnError } from '../util/errors.js';

export interface FieldProblem {
  path: (string | number)[];
  message: string;
  fix?: string;
  line?: number;
}

export class TemplateError extends KilnError {
  constructor(
    readonly file: string,
    readonly problems: FieldProblem[],
  ) {
    super(
      ...problemsAsError(
        problems,
        (p) => `${p.line ? `${file}:${p.line}` : file}: ${formatPath(p.path)}: ${p.message}`,
      ),
    );
    this.name = 'TemplateError';
  }
}

/**
 * KilnError's (what, {fix}) for a list of problems, whose message is each problem's text with its fix
 * line: one problem's fix is the error's `fix`; several keep theirs inline (and in `problems`).
 */
export function problemsAsError(
  problems: readonly FieldProblem[],
  text: (p: FieldProblem) => string,
): [string, { fix?: string }] {
  const withFix = (p: FieldProblem) => `${text(p)}${p.fix ? `\n  fix: ${p.fix}` : ''}`;
  if (problems.length === 1 && problems[0]!.fix) return [text(problems[0]!), { fix: problems[0]!.fix }];
  return [problems.map(withFix).join('\n'), {}];
}

export function formatPath(path: (string | number)[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(top level)';
}

/**
 * The forms a secret's text takes in a message: as written, JSON-escaped (how a value is quoted in an
 * error), and the encodings a template most often wraps a secret in (base64, URL encoding). Values
 * computed from a secret by a template function are masked by their own text (the Packer reader marks
 * them tainted, see hcl-template.ts); these forms are the backstop for messages about a value whose
 * computation failed half-way, where only the input is known.
 */
export function secretForms(secret: string): string[] {
  const forms = new Set([
    secret,
    JSON.stringify(secret).slice(1, -1),
    Buffer.from(secret).toString('base64'),
    Buffer.from(secret).toString('base64url'),
    encodeURIComponent(secret),
  ]);
  return [...forms].filter((f) => f.length >= 3);
}

/** Every form of every secret in a text replaced with "<sensitive>", longest first (a secret holding another goes whole). */
export function maskText(text: string, secrets: readonly string[]): string {
  if (!secrets.length || !text) return text;
  const forms = [...new Set(secrets.flatMap(secretForms))].sort((a, b) => b.length - a.length);
  let out = text;
  for (const f of forms) out = out.split(f).join('<sensitive>');
  return out;
}

/** Problems with every secret masked in what they say (message and fix). */
export function maskProblems<P extends FieldProblem>(problems: readonly P[], secrets: readonly string[]): P[] {
  return problems.map((p) => ({
    ...p,
    message: maskText(p.message, secrets),
    ...(p.fix === undefined ? {} : { fix: maskText(p.fix, secrets) }),
  }));
}

/** The same error with its secrets masked: the template's file name is kept, a secret in it or not. */
export function maskTemplateError(e: TemplateError, secrets: readonly string[]): TemplateError {
  return secrets.length ? new TemplateError(e.file, maskProblems(e.problems, secrets)) : e;
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
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/** Words for zod's type names, as a template author would say them. */
const typeWords: Record<string, string> = {
  array: 'list',
  object: 'map',
  record: 'map',
  boolean: 'true or false',
  number: 'number',
  int: 'whole number',
  string: 'string',
};
const typeWord = (t: string) => typeWords[t] ?? t;
/** "a list", "an object"; literal values ("false", '"ssh"') and "true or false" go without. */
const withArticle = (w: string) =>
  w === 'true or false' || /^("|true|false|null|-?\d)/.test(w) ? w : `${/^[aeiou]/.test(w) ? 'an' : 'a'} ${w}`;

/** Where a suggestion for an unknown key comes from: the keys valid at that path, and names other tools use. */
export interface KeyHints {
  keysAt: (path: (string | number)[]) => readonly string[] | undefined;
  /** Foreign spellings (e.g. Packer's ssh_username) at a path, mapped to kiln's way of writing them. */
  aliasesAt?: (path: (string | number)[]) => Readonly<Record<string, string>> | undefined;
  /** Sensitive values: a value quoted in a problem is masked before it is cut short (a cut secret would no longer match). */
  secrets?: readonly string[];
}

/** A problem as collected, with what the clean-up in problemsFromZod needs to know about it. */
type Collected = FieldProblem & { missing?: boolean; meant?: string };

function unknownKey(key: string, path: (string | number)[], hints: KeyHints): Collected {
  const at = { path: [...path, key], message: `unknown key "${key}"` };
  const valid = hints.keysAt(path) ?? [];
  const guess = closest(key, valid);
  if (guess) return { ...at, fix: `did you mean "${guess}"?`, meant: guess };
  const aliases = hints.aliasesAt?.(path) ?? {};
  const alias = closest(key, Object.keys(aliases));
  if (alias) return { ...at, fix: `"${alias}" is how Packer says it; in kiln write ${aliases[alias]}` };
  return {
    ...at,
    fix: valid.length ? `remove it, or use one of the keys valid here: ${valid.join(', ')}` : 'remove it',
  };
}

function bound(
  issue: { origin?: unknown; minimum?: unknown; maximum?: unknown; inclusive?: unknown },
  side: 'min' | 'max',
): string {
  const limit = Number(side === 'min' ? issue.minimum : issue.maximum);
  const strict = issue.inclusive === false;
  const word = side === 'min' ? (strict ? 'more than' : 'at least') : strict ? 'less than' : 'at most';
  if (issue.origin === 'array') return `${word} ${limit} item${limit === 1 ? '' : 's'}`;
  if (issue.origin === 'string') return `${word} ${limit} character${limit === 1 ? '' : 's'}`;
  return `${word} ${limit}`;
}

/**
 * Turns zod's issues into problems with a fix each, one per field. A schema's own checks carry their
 * fix in `params.fix`. Left out: a second problem with the same field (zod checks a string's length
 * after finding it should have been a list), and a required field reported missing beside an unknown
 * key that is its misspelling, since "did you mean" on the misspelt key already says everything.
 */
export function problemsFromZod(error: z.ZodError, hints: KeyHints): FieldProblem[] {
  const problems = collectProblems(error.issues, [], hints).map((p) =>
    hints.secrets?.length ? maskProblems([p], hints.secrets)[0]! : p,
  );
  const misspelt = new Set(problems.filter((p) => p.meant).map((p) => formatPath([...p.path.slice(0, -1), p.meant!])));
  const reported = new Set<string>();
  return problems
    .filter((p) => {
      const field = formatPath(p.path);
      if (reported.has(field) || (p.missing && misspelt.has(field))) return false;
      reported.add(field);
      return true;
    })
    .map(({ missing: _missing, meant: _meant, ...p }) => p);
}

function collectProblems(
  issues: readonly z.core.$ZodIssue[],
  prefix: (string | number)[],
  hints: KeyHints,
): Collected[] {
  const problems: Collected[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path.filter((p): p is string | number => typeof p !== 'symbol')];
    const params = 'params' in issue ? (issue.params as { fix?: unknown } | undefined) : undefined;
    const input = 'input' in issue ? issue.input : undefined;
    switch (issue.code) {
      case 'unrecognized_keys':
        for (const key of issue.keys) problems.push(unknownKey(key, path, hints));
        continue;
      case 'invalid_union': {
        if ('note' in issue && issue.note === 'No matching discriminator') {
          // A discriminated union (provisioner or post-processor `type`): name the valid types.
          const field = String(issue.discriminator ?? 'type');
          const options = ((issue as { options?: unknown[] }).options ?? []).map(String);
          const given = input && typeof input === 'object' ? (input as Record<string, unknown>)[field] : undefined;
          const guess = typeof given === 'string' ? closest(given, options) : undefined;
          const at = path.at(-1) === field ? path : [...path, field];
          if (given === undefined)
            problems.push({
              path: at,
              message: `required field is missing`,
              fix: `add "${field}": one of ${options.join(', ')}`,
              missing: true,
            });
          else if (typeof given !== 'string')
            problems.push({
              path: at,
              message: `expected a ${field} name, got ${describe(given, hints.secrets)}`,
              fix: `use one of: ${options.join(', ')}`,
            });
          else
            problems.push({
              path: at,
              message: `unknown ${field} ${describeValue(given, hints.secrets)}`,
              fix: guess
                ? `did you mean "${guess}"? (one of: ${options.join(', ')})`
                : `use one of: ${options.join(', ')}`,
            });
          continue;
        }
        // A union (e.g. communicator ssh|none): report the branch that got furthest, not all of them.
        // When the value has none of the branches' types (cloud_init: true), say which types would do.
        const atRoot = (i: z.core.$ZodIssue) =>
          i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value');
        const deeper = issue.errors.filter((b) => b.length && !b.every(atRoot));
        if (!deeper.length && issue.errors.length) {
          const wanted = [
            ...new Set(
              issue.errors
                .flat()
                .map((i) =>
                  i.code === 'invalid_type'
                    ? typeWord(i.expected)
                    : i.code === 'invalid_value'
                      ? i.values.map((v) => JSON.stringify(v)).join(' or ')
                      : '',
                )
                .filter(Boolean),
            ),
          ];
          problems.push({
            path,
            message: `expected ${wanted.join(' or ')}, got ${describe(input, hints.secrets)}`,
            fix: `write ${wanted.map((w) => withArticle(w)).join(' or ')} here`,
          });
          continue;
        }
        const best = deeper.reduce((a, b) => (b.length < a.length ? b : a), deeper[0] ?? []);
        if (best.length) {
          problems.push(...collectProblems(best, path, hints));
          continue;
        }
        break;
      }
      case 'invalid_value': {
        const values = issue.values.map(String);
        if (input === undefined) {
          problems.push({
            path,
            message: 'required field is missing',
            fix: `add "${String(path.at(-1))}": one of ${values.join(', ')}`,
            missing: true,
          });
          continue;
        }
        const guess = typeof input === 'string' ? closest(input, values) : undefined;
        problems.push({
          path,
          message: `${describeValue(input, hints.secrets)} is not allowed`,
          fix: guess ? `did you mean "${guess}"? (one of: ${values.join(', ')})` : `use one of: ${values.join(', ')}`,
        });
        continue;
      }
      case 'invalid_type': {
        const word = typeWord(issue.expected);
        if (input === undefined) {
          problems.push({
            path,
            message: 'required field is missing',
            fix: `add "${String(path.at(-1))}" (${withArticle(word)})`,
            missing: true,
          });
        } else if (
          typeof input === 'number' &&
          !Number.isFinite(input) &&
          (word === 'number' || word === 'whole number')
        ) {
          problems.push({
            path,
            message: `${String(input)} is not a usable number (too big to represent, or not a number at all)`,
            fix: `write ${withArticle(word)} of a sensible size`,
          });
        } else {
          problems.push({
            path,
            message: `expected ${word}, got ${describe(input, hints.secrets)}`,
            fix: `write ${withArticle(word)} here${typeExample(word)}`,
          });
        }
        continue;
      }
      case 'invalid_key':
        // A map key that breaks the key's own rule (a variable named "my-var"): report the key's problem.
        problems.push(...collectProblems(issue.issues, path, hints));
        continue;
      case 'too_small':
        problems.push({
          path,
          message: `${describeValue(input, hints.secrets)} is too small: it must be ${bound(issue, 'min')}`,
          fix: `use ${bound(issue, 'min')}`,
        });
        continue;
      case 'too_big':
        problems.push({
          path,
          message: `${describeValue(input, hints.secrets)} is too big: it must be ${bound(issue, 'max')}`,
          fix: `use ${bound(issue, 'max')}`,
        });
        continue;
      default:
        break;
    }
    const fix = typeof params?.fix === 'string' ? params.fix : undefined;
    problems.push({
      path,
      message: issue.message,
      ...(fix ? { fix } : { fix: "see the field in kiln's docs/templates.md" }),
    });
  }
  return problems;
}

function typeExample(word: string): string {
  if (word === 'list') return ', e.g. [a, b] or one "- item" per line';
  if (word === 'map') return ', e.g. "key: value" lines indented below it';
  if (word === 'true or false') return ' (without quotes)';
  if (word === 'number' || word === 'whole number') return ' (digits, without quotes)';
  return '';
}

/**
 * A value as the author wrote it; Infinity and NaN, which JSON cannot show, by name. Secrets are masked
 * here, before a long value is cut to 60 characters, and a value that is a secret however short (a
 * sensitive "22", which masking by text leaves alone) is not quoted at all.
 */
function describeValue(v: unknown, secrets: readonly string[] = []): string {
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (v && typeof v === 'object') return 'a map';
  if (secrets.includes(String(v))) return '<sensitive>';
  const text = maskText(JSON.stringify(v) ?? String(v), secrets);
  return text.length > 60 ? `${text.slice(0, 57)}..."` : text;
}

function describe(v: unknown, secrets: readonly string[] = []): string {
  if (v === null) return 'null (an empty value)';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  return typeof v === 'boolean' ? String(v) : `${typeof v} ${describeValue(v, secrets)}`;
}
