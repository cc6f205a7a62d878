/**
 * One template field, defined once: its zod type (which both checks the value as written and parses it
 * into what the build reads: bytes, milliseconds, MiB), its one-line doc, Packer's name for it, and its
 * cache role. The schema, the JSON Schema, the template reference, `kiln inspect`'s values, the Packer
 * hints and the layer keys are all derived from these rows (mkosi's ConfigSetting, Packer's struct docs).
 */
import type { z } from 'zod';

/**
 * What a field does to the layer cache. `disk`: it shapes what the disk holds, so it is part of the
 * layer key. `runtime`: it only changes how the VM runs (CPUs, memory, timeouts), so tuning it keeps
 * the cache. `base`: it names the image built on, which enters the key as that image's digest.
 * Required on every field: a new field has to say, rather than fall on the side of a deny-list.
 */
export type CacheRole = 'disk' | 'runtime' | 'base';

export interface Field<S extends z.ZodType = z.ZodType> {
  /** Checks the value as written and parses it into the resolved value (with its default applied). */
  readonly schema: S;
  /** One line for the template reference, the JSON Schema's description and editors' hover. */
  readonly doc: string;
  readonly cache: CacheRole;
  /**
   * Packer qemu builder names for this field when the mapping is a plain rename (the value passes as
   * it is): they become the "did you mean" hint in a kiln template and the reference's Packer column.
   */
  readonly packer?: readonly string[];
}

/** A group of fields (a map's keys). `satisfies` keeps each row's own zod type for the inferred output. */
export type Fields = Readonly<Record<string, Field>>;

/** The zod shape of a group, each type carrying its doc line (the JSON Schema's description). */
export function shapeOf<F extends Fields>(fields: F): { [K in keyof F]: F[K]['schema'] } {
  return Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f.schema.describe(f.doc)])) as {
    [K in keyof F]: F[K]['schema'];
  };
}

/** Names of a group's fields with the given cache role. */
export function fieldsWithRole(fields: Fields, role: CacheRole): ReadonlySet<string> {
  return new Set(
    Object.entries(fields)
      .filter(([, f]) => f.cache === role)
      .map(([k]) => k),
  );
}

/** The Packer name of a field that has one (the first, when Packer has several). */
export function packerNameOf<F extends Fields>(fields: F, key: keyof F & string): string {
  const name = fields[key]?.packer?.[0];
  if (!name) throw new Error(`the field registry gives ${key} no Packer name`);
  return name;
}

/** Packer's name -> kiln's, for every plain rename in a group. */
export function packerRenames(fields: Fields): ReadonlyMap<string, string> {
  return new Map(Object.entries(fields).flatMap(([k, f]) => (f.packer ?? []).map((p) => [p, k] as const)));
}
