/** puppet-masterless: manifests and modules uploaded and applied with `puppet apply` inside the guest. */
import { z } from 'zod';
import path from 'node:path';
import { baseName, defineKind } from './kind.js';
import { kindObject, passPackerFieldsOn, present, scalarMap } from './common.js';

export const puppetMasterlessSchema = kindObject('puppet-masterless', {
  /** A manifest file, or a directory of manifests (puppet apply reads every .pp in it). */
  manifest_file: z.string(),
  /** Local directories of modules, uploaded and passed as --modulepath. */
  module_paths: z.array(z.string()).default([]),
  /** A hiera.yaml; its directory is uploaded with it, so a relative datadir works. */
  hiera_config_path: z.string().optional(),
  /** Facts given to puppet as FACTER_<name> environment variables. */
  facter: scalarMap,
  extra_arguments: z.array(z.string()).default([]),
  /** Run puppet as the SSH user instead of through sudo. */
  prevent_sudo: z.boolean().default(false),
  /** The directory of the puppet program in the guest; default: found on PATH. */
  puppet_bin_dir: z.string().optional(),
  staging_directory: z.string().optional(),
  clean_staging_directory: z.boolean().default(true),
});

export type PuppetMasterlessProvisioner = z.output<typeof puppetMasterlessSchema>;

export const puppetMasterless = defineKind(puppetMasterlessSchema, {
  summary: 'runs puppet apply inside the guest',
  describe: (p) => `puppet-masterless (${baseName(p.manifest_file)})`,
  resolvePaths(p, paths) {
    p.manifest_file = paths.existing(p.manifest_file, ['manifest_file'], 'any');
    p.module_paths = p.module_paths.map((d, k) => paths.existing(d, ['module_paths', k], 'dir'));
    if (p.hiera_config_path !== undefined)
      p.hiera_config_path = paths.existing(p.hiera_config_path, ['hiera_config_path'], 'file');
  },
  hostInputs: (p) =>
    present(p.manifest_file, ...p.module_paths, p.hiera_config_path && path.dirname(p.hiera_config_path)).map(
      (host) => ({ path: host, digest: 'tree', role: 'puppet-masterless', follow: true }),
    ),
  needs: 'ssh',
  fromPacker: passPackerFieldsOn,
});
