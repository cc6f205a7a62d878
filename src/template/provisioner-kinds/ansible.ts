/** ansible: ansible-playbook run on the host against the build VM, over SSH (Packer's provisioner of that name). */
import { z } from 'zod';
import path from 'node:path';
import { baseName, defineKind } from './kind.js';
import { because, extraVars, kindObject, passPackerFieldsOn, present, scalarMap } from './common.js';

export const ansibleSchema = kindObject('ansible', {
  playbook_file: z.string(),
  /** The program run on the host; another path for an Ansible from a virtualenv. */
  command: z.string().default('ansible-playbook'),
  extra_arguments: z.array(z.string()).default([]),
  extra_vars: extraVars,
  /** Environment of ansible-playbook (ANSIBLE_* settings). Host key checking cannot be turned off. */
  ansible_env_vars: scalarMap.refine(
    (env) => !Object.hasOwn(env, 'ANSIBLE_HOST_KEY_CHECKING'),
    because(
      "kiln always checks the guest's host key: ANSIBLE_HOST_KEY_CHECKING cannot be set",
      'remove it; kiln writes a known_hosts file with the host key it verified, so Ansible connects without prompting',
    ),
  ),
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
});

export type AnsibleProvisioner = z.output<typeof ansibleSchema>;

export const ansible = defineKind(ansibleSchema, {
  summary: 'runs ansible-playbook on the host against the guest',
  describe: (p) => `ansible (${baseName(p.playbook_file)})`,
  resolvePaths(p, paths) {
    p.playbook_file = paths.existing(p.playbook_file, ['playbook_file'], 'file');
    if (p.inventory_directory !== undefined)
      p.inventory_directory = paths.existing(p.inventory_directory, ['inventory_directory'], 'dir');
    if (p.galaxy_file !== undefined) p.galaxy_file = paths.existing(p.galaxy_file, ['galaxy_file'], 'file');
    if (p.roles_path !== undefined) p.roles_path = paths.existing(p.roles_path, ['roles_path'], 'dir');
    if (p.collections_path !== undefined)
      p.collections_path = paths.existing(p.collections_path, ['collections_path'], 'dir');
  },
  // The playbook's whole directory (roles, templates, group_vars...): editing any file there re-runs it.
  hostInputs: (p) =>
    present(
      path.dirname(p.playbook_file),
      p.inventory_directory,
      p.galaxy_file && path.dirname(p.galaxy_file),
      p.roles_path,
      p.collections_path,
    ).map((host) => ({ path: host, digest: 'tree', role: 'ansible', follow: true })),
  needs: 'ssh',
  fromPacker: passPackerFieldsOn,
});
