/**
 * Template fields of the configuration-management provisioners: ansible (ansible-playbook on the host
 * against the build VM), ansible-local (ansible-playbook inside the guest) and puppet-masterless
 * (puppet apply inside the guest). Field names follow Packer's provisioners of the same names.
 *
 * Only the fields live here: schema.ts adds `type` and the options every provisioner shares, so this
 * module needs nothing from schema.ts at run time (schema.ts imports it).
 */
import { z } from 'zod';
import type { Provisioner } from './schema.js';

/** A check whose failure carries its fix (errors.ts prints `params.fix` under the message). */
const because = (message: string, fix: string) => ({ message, params: { fix } });

const envName = z.string().refine((k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k), because(
  'not an environment variable name', 'use letters, digits and "_", not starting with a digit',
));
const scalar = z.union([z.string(), z.number(), z.boolean()]);
/** Ansible extra vars may be structured (lists, maps), as with `-e '{"json": ...}'`. */
const extraVars = z.record(z.string(), z.json()).default({});

export const ansibleFields = {
  playbook_file: z.string(),
  /** The program run on the host; another path for an Ansible from a virtualenv. */
  command: z.string().default('ansible-playbook'),
  extra_arguments: z.array(z.string()).default([]),
  extra_vars: extraVars,
  /** Environment of ansible-playbook (ANSIBLE_* settings). Host key checking cannot be turned off. */
  ansible_env_vars: z.record(envName, scalar).default({}).refine((env) => !Object.hasOwn(env, 'ANSIBLE_HOST_KEY_CHECKING'), because(
    'kiln always checks the guest\'s host key: ANSIBLE_HOST_KEY_CHECKING cannot be set',
    'remove it; kiln writes a known_hosts file with the host key it verified, so Ansible connects without prompting',
  )),
  /** Inventory groups the build VM belongs to (group_vars of these groups apply). */
  groups: z.array(z.string()).default([]),
  /** The VM's name in the inventory (host_vars/<host_alias> applies). */
  host_alias: z.string().default('default'),
  /** Login user; default: the communicator's username. */
  user: z.string().optional(),
  /** Where the inventory file is written (so group_vars/ and host_vars/ beside it apply); default: a private temporary directory. */
  inventory_directory: z.string().optional(),
  /** Keep the inventory (and the key and known_hosts it names) until the build ends, to run ansible-playbook by hand (with --on-error=abort). */
  keep_inventory_file: z.boolean().default(false),
  /** A requirements file installed with ansible-galaxy before the playbook runs (local paths and tarballs work offline). */
  galaxy_file: z.string().optional(),
  /** Extra directory of roles (ANSIBLE_ROLES_PATH). */
  roles_path: z.string().optional(),
  /** Extra directory of collections (ANSIBLE_COLLECTIONS_PATH). */
  collections_path: z.string().optional(),
  /** Run tasks as root (ansible-playbook --become). */
  become: z.boolean().default(false),
};

export const ansibleLocalFields = {
  playbook_file: z.string(),
  /** The directory uploaded with the playbook (its roles/, group_vars/, files); default: the playbook's own directory. */
  playbook_dir: z.string().optional(),
  command: z.string().default('ansible-playbook'),
  extra_arguments: z.array(z.string()).default([]),
  extra_vars: extraVars,
  /** Inventory groups of the guest (it is 127.0.0.1 in the inventory). */
  inventory_groups: z.array(z.string()).default([]),
  /** Role directories uploaded into <staging_directory>/roles. */
  role_paths: z.array(z.string()).default([]),
  /** A requirements file installed in the guest with ansible-galaxy before the playbook runs. */
  galaxy_file: z.string().optional(),
  become: z.boolean().default(false),
  /** Where the files go in the guest; default: a new directory under /tmp. */
  staging_directory: z.string().optional(),
  clean_staging_directory: z.boolean().default(true),
};

export const puppetMasterlessFields = {
  /** A manifest file, or a directory of manifests (puppet apply reads every .pp in it). */
  manifest_file: z.string(),
  /** Local directories of modules, uploaded and passed as --modulepath. */
  module_paths: z.array(z.string()).default([]),
  /** A hiera.yaml; its directory is uploaded with it, so a relative datadir works. */
  hiera_config_path: z.string().optional(),
  /** Facts given to puppet as FACTER_<name> environment variables. */
  facter: z.record(envName, scalar).default({}),
  extra_arguments: z.array(z.string()).default([]),
  /** Run puppet as the SSH user instead of through sudo. */
  prevent_sudo: z.boolean().default(false),
  /** The directory of the puppet program in the guest; default: found on PATH. */
  puppet_bin_dir: z.string().optional(),
  staging_directory: z.string().optional(),
  clean_staging_directory: z.boolean().default(true),
};

export type AnsibleProvisioner = Extract<Provisioner, { type: 'ansible' }>;
export type AnsibleLocalProvisioner = Extract<Provisioner, { type: 'ansible-local' }>;
export type PuppetMasterlessProvisioner = Extract<Provisioner, { type: 'puppet-masterless' }>;
export type ConfigManagementProvisioner = AnsibleProvisioner | AnsibleLocalProvisioner | PuppetMasterlessProvisioner;

export function isConfigManagement(p: Provisioner): p is ConfigManagementProvisioner {
  return p.type === 'ansible' || p.type === 'ansible-local' || p.type === 'puppet-masterless';
}

type ResolveExisting = (written: string, field: (string | number)[], kind: 'file' | 'dir' | 'any') => string;

/** Resolves the local paths of a provisioner in place; `existing` reports those that are missing. */
export function resolveConfigManagementPaths(p: ConfigManagementProvisioner, existing: ResolveExisting): void {
  const dirs = (list: string[], field: string) => list.map((d, k) => existing(d, [field, k], 'dir'));
  switch (p.type) {
    case 'ansible':
      p.playbook_file = existing(p.playbook_file, ['playbook_file'], 'file');
      if (p.inventory_directory !== undefined) p.inventory_directory = existing(p.inventory_directory, ['inventory_directory'], 'dir');
      if (p.galaxy_file !== undefined) p.galaxy_file = existing(p.galaxy_file, ['galaxy_file'], 'file');
      if (p.roles_path !== undefined) p.roles_path = existing(p.roles_path, ['roles_path'], 'dir');
      if (p.collections_path !== undefined) p.collections_path = existing(p.collections_path, ['collections_path'], 'dir');
      return;
    case 'ansible-local':
      p.playbook_file = existing(p.playbook_file, ['playbook_file'], 'file');
      if (p.playbook_dir !== undefined) p.playbook_dir = existing(p.playbook_dir, ['playbook_dir'], 'dir');
      p.role_paths = dirs(p.role_paths, 'role_paths');
      if (p.galaxy_file !== undefined) p.galaxy_file = existing(p.galaxy_file, ['galaxy_file'], 'file');
      return;
    case 'puppet-masterless':
      p.manifest_file = existing(p.manifest_file, ['manifest_file'], 'any');
      p.module_paths = dirs(p.module_paths, 'module_paths');
      if (p.hiera_config_path !== undefined) p.hiera_config_path = existing(p.hiera_config_path, ['hiera_config_path'], 'file');
  }
}
