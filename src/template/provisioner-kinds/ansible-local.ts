/** ansible-local: the playbook (and its directory, roles) uploaded and run with ansible-playbook inside the guest. */
import { z } from 'zod';
import path from 'node:path';
import { baseName, defineKind } from './kind.js';
import { extraVars, kindObject, passPackerFieldsOn, present } from './common.js';

export const ansibleLocalSchema = kindObject('ansible-local', {
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
});

export type AnsibleLocalProvisioner = z.output<typeof ansibleLocalSchema>;

export const ansibleLocal = defineKind(ansibleLocalSchema, {
  summary: 'runs ansible-playbook inside the guest',
  describe: (p) => `ansible-local (${baseName(p.playbook_file)})`,
  resolvePaths(p, paths) {
    p.playbook_file = paths.existing(p.playbook_file, ['playbook_file'], 'file');
    if (p.playbook_dir !== undefined) p.playbook_dir = paths.existing(p.playbook_dir, ['playbook_dir'], 'dir');
    p.role_paths = p.role_paths.map((d, k) => paths.existing(d, ['role_paths', k], 'dir'));
    if (p.galaxy_file !== undefined) p.galaxy_file = paths.existing(p.galaxy_file, ['galaxy_file'], 'file');
  },
  hostInputs: (p) =>
    present(p.playbook_dir ?? path.dirname(p.playbook_file), p.playbook_file, ...p.role_paths, p.galaxy_file).map(
      (host) => ({ path: host, digest: 'tree', role: 'ansible-local', follow: true }),
    ),
  needs: 'ssh',
  fromPacker: passPackerFieldsOn,
});
