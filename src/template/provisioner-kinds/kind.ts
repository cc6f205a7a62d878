/**
 * What a provisioner kind is to the template layer: its schema, how its paths resolve, what it reads on
 * the host (its layer key), whether its result can be cached, how it reads, and how a Packer
 * provisioner of the same name maps onto it. Each kind is one module in this folder, listed once in
 * index.ts; what it does to the guest (`run`) sits beside the other runners in src/provisioners/,
 * whose table the compiler holds to the same list of kinds.
 */
import type { z } from 'zod';
import type { Value } from '../packer/eval.js';
import type { Field } from '../packer/model.js';

/** Resolves one path field of a provisioner: `existing` checks it exists now (and records it as a build input); `resolve` only makes it absolute (a path kiln will write). */
export interface PathResolver {
  existing(written: string, field: (string | number)[], kind: 'file' | 'dir' | 'any'): string;
  resolve(written: string): string;
}

/** A local file or directory a provisioner reads on the host. */
export interface HostInput {
  path: string;
  /**
   * How its content enters the layer key: 'path' digests it as it is (a link as its target's name);
   * 'tree' follows links as Ansible and Puppet do and leaves the build's output directories out.
   */
  digest: 'path' | 'tree';
  /** The role recorded in the manifest's list of build inputs. */
  role: string;
  /** The manifest's walk of a directory follows symbolic links. */
  follow: boolean;
  /** Where a file of it lands in the guest (`rel`: its path inside a directory, '' for the path itself). */
  guest?: (rel: string) => string;
}

/** The mapping helpers mapping.ts gives a kind's `fromPacker` (one Packer provisioner or shell-local post-processor). */
export interface PackerStepMapper {
  kind: 'provisioner' | 'post-processor';
  /** The kiln provisioner being written (undefined values are dropped afterwards). */
  r: Record<string, unknown>;
  /** Further kiln provisioners the Packer one becomes (a file provisioner's `sources`). */
  more: Record<string, unknown>[];
  fields: ReadonlyMap<string, Field>;
  /** Marks a Packer field as mapped; fields never taken are reported. */
  take(k: string): Field | undefined;
  str(k: string, exec?: boolean): string | undefined;
  strs(k: string): string[] | undefined;
  /** environment_vars ("NAME=value" list) and env (map) together. */
  env(): Record<string, string> | undefined;
  /** inline_shebang, undefined when it is Packer's default. */
  shebang(): string | undefined;
  /** pause_before, timeout and max_retries. */
  common(): void;
  problem(k: string, message: string, fix?: string): void;
  /** A host path made absolute as Packer does (against the folder kiln runs in). */
  abs(p: string): string;
  runtime(v: Value, f: Field | undefined, field: string, exec?: boolean): Value;
}

export interface ProvisionerKind<P extends { type: string }> {
  /** The kind's full schema: `type`, the options every kind shares (common.ts) and its own fields. */
  schema: z.ZodType;
  /** One line on what the kind does (listed in error fixes and docs). */
  summary: string;
  /** One provisioner in a line of output ("shell (setup.sh)"). */
  describe(p: P): string;
  /** Resolves its local paths in place. */
  resolvePaths(p: P, paths: PathResolver): void;
  /** The local files and directories it reads on the host; their content is part of its layer key. */
  hostInputs(p: P): HostInput[];
  /** Why its result cannot come from the cache unless `cache: true` is set (its effects are on the host), or undefined. */
  uncacheable?(p: P): string | undefined;
  /** What it needs to reach the guest: any communicator, SSH itself (a tool of its own logs in), or nothing. */
  needs: 'communicator' | 'ssh' | 'nothing';
  /** What it leaves in a guest folder emptied at boot (/tmp...), which a guest resumed from its layer no longer has. */
  bootVolatile?(p: P): boolean;
  /** The guest may go away while it runs (a reboot), which is then not a failure. */
  expectsDisconnect?(p: P): boolean;
  /** Maps a Packer provisioner of the same type name onto this kind. */
  fromPacker(m: PackerStepMapper): void;
}

/** Declares a kind; its methods are typed by its own schema's output. */
export function defineKind<S extends z.ZodType<{ type: string }>>(
  schema: S,
  kind: Omit<ProvisionerKind<z.output<S>>, 'schema'>,
): Omit<ProvisionerKind<z.output<S>>, 'schema'> & { schema: S } {
  return { schema, ...kind };
}

/** The last part of a path, for one-line descriptions. */
export const baseName = (p: string | undefined) => p?.split('/').pop();
