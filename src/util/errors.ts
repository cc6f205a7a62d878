/**
 * The one error type for failures a user can act on: what went wrong and, as its own field, how to fix
 * it. The message keeps the layout users have always seen (`what`, then an indented `fix:` line), so a
 * terminal shows the same text while `--events=json` consumers read `fix` without parsing it out.
 */
export class KilnError extends Error {
  /** The problem alone, without the fix line. */
  readonly what: string;
  /** What the user should do about it, when kiln knows. */
  readonly fix: string | undefined;

  constructor(what: string, options: { fix?: string; cause?: unknown } = {}) {
    super(
      options.fix === undefined ? what : `${what}\n  fix: ${options.fix}`,
      'cause' in options ? { cause: options.cause } : {},
    );
    this.what = what;
    this.fix = options.fix;
  }
}

/** The fix an error carries, if it is a KilnError that has one. */
export function fixOf(e: unknown): string | undefined {
  return e instanceof KilnError ? e.fix : undefined;
}
