/**
 * Schema pieces the provisioner kinds share: the options every kind takes, and the value checks
 * their fields use. Nothing here imports schema.ts at run time (schema.ts imports the kinds).
 */
import { z } from 'zod';
import { because, duration } from '../fields/types.js';
import type { PackerStepMapper } from './kind.js';

// The field registry's value types: a duration is milliseconds, a size bytes, once loaded.
export { because, duration, size } from '../fields/types.js';

/** A name `sh` can export: anything else fails only when the command runs, after the VM booted. */
const envName = z
  .string()
  .refine(
    (v) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(v),
    because(
      'not an environment variable name',
      'use letters, digits and "_", not starting with a digit, e.g. MY_SETTING',
    ),
  );
export const envMap = z.record(envName, z.union([z.string(), z.number(), z.boolean()])).default({});

/** The options every provisioner kind takes. */
export const provisionerCommon = {
  pause_before: duration.optional(),
  timeout: duration.optional(),
  max_retries: z.number().int().min(0).default(0),
  only: z.array(z.string()).optional(),
  except: z.array(z.string()).optional(),
  /**
   * Layer cache: false makes this provisioner (and every later one) run on each build. Unset means
   * cached, except shell-local and file downloads, whose effects are on the host, not in the disk.
   */
  cache: z.boolean().optional(),
};

/** A kind's object schema: its `type`, the common options and its own fields. */
export const kindObject = <T extends string, F extends z.ZodRawShape>(type: T, fields: F) =>
  z.strictObject({ type: z.literal(type), ...provisionerCommon, ...fields });

/**
 * Packer's ansible, ansible-local and puppet-masterless: kiln's fields are Packer's own names, so they
 * pass on as written (kiln's schema checks them); host paths are made absolute as Packer does.
 */
export function passPackerFieldsOn(m: PackerStepMapper): void {
  for (const [k, f] of m.fields) {
    m.take(k);
    m.r[k] = m.runtime(f.value, f, k, k === 'execute_command');
  }
  // Packer's ansible_env_vars is a list of "NAME=value"; kiln's is a map.
  const env = m.r.ansible_env_vars;
  if (Array.isArray(env) && env.every((e) => typeof e === 'string' && e.indexOf('=') > 0)) {
    m.r.ansible_env_vars = Object.fromEntries(
      (env as string[]).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]),
    );
  }
  for (const k of [
    'playbook_file',
    'playbook_dir',
    'manifest_file',
    'module_paths',
    'hiera_config_path',
    'inventory_directory',
  ]) {
    if (typeof m.r[k] === 'string') m.r[k] = m.abs(m.r[k] as string);
  }
}

/** Environment names of the configuration-management kinds (ANSIBLE_* settings, FACTER_ facts). */
const cmEnvName = z
  .string()
  .refine(
    (k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k),
    because('not an environment variable name', 'use letters, digits and "_", not starting with a digit'),
  );
export const scalarMap = z.record(cmEnvName, z.union([z.string(), z.number(), z.boolean()])).default({});
/** Ansible extra vars may be structured (lists, maps), as with `-e '{"json": ...}'`. */
export const extraVars = z.record(z.string(), z.json()).default({});

/** The given paths, without the unset ones. */
export const present = (...paths: (string | undefined)[]) => paths.filter((x): x is string => x !== undefined);
