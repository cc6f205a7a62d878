/** Repeatable command-line flags as lists (shared by the commands in src/cli). */

/** A repeatable flag given once is a string, given twice a list; either way a list here. */
export const listOf = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : Array.isArray(v) ? v : [v];

/** Packer's -only/-except take comma-separated names; kiln's may be repeated. Either works. */
export const namesOf = (v: string | string[] | undefined): string[] | undefined =>
  v === undefined
    ? undefined
    : listOf(v)
        .flatMap((n) => n.split(','))
        .map((n) => n.trim())
        .filter(Boolean);
