/**
 * What a configuration-management provisioner reads on the host, for its layer-cache key: the
 * playbook's or manifest's whole directory (roles, templates, group_vars...), the roles, collections,
 * modules and hiera data it names. Editing any file there re-runs the build from that provisioner.
 */
import { readdirSync, readlinkSync, realpathSync, statSync, lstatSync } from 'node:fs';
import path from 'node:path';
import type { BuildConfig } from '../template/schema.js';
import type { ConfigManagementProvisioner } from '../template/schema-config-management.js';
import { digestOf, fileDigest } from './digest.js';

/** The files and directories whose content decides what the provisioner does to the guest. */
export function configManagementInputs(p: ConfigManagementProvisioner): string[] {
  const present = (...paths: (string | undefined)[]) => paths.filter((x): x is string => x !== undefined);
  switch (p.type) {
    case 'ansible':
      return present(path.dirname(p.playbook_file), p.inventory_directory, p.galaxy_file && path.dirname(p.galaxy_file), p.roles_path, p.collections_path);
    case 'ansible-local':
      return present(p.playbook_dir ?? path.dirname(p.playbook_file), p.playbook_file, ...p.role_paths, p.galaxy_file);
    case 'puppet-masterless':
      return present(p.manifest_file, ...p.module_paths, p.hiera_config_path && path.dirname(p.hiera_config_path));
  }
}

/** Version-control metadata changes with every commit, not with what a playbook does. */
const IGNORED_NAMES = new Set(['.git', '.hg', '.svn']);

/**
 * Digest of a file or directory tree (names and contents), following symbolic links as Ansible and
 * Puppet do (a role linked in from elsewhere counts with its content). Left out: `leaveOut` (the
 * build's own output directories, which may sit under a playbook's directory and change with every
 * build) and version-control metadata. A link back into a directory being read is noted, not walked.
 */
export async function treeDigest(p: string, leaveOut: ReadonlySet<string>, open: Set<string> = new Set()): Promise<string> {
  const st = statSync(p, { throwIfNoEntry: false });
  if (!st) return digestOf({ danglingLink: lstatSync(p).isSymbolicLink() ? readlinkSync(p) : null });
  if (st.isFile()) return fileDigest(p);
  if (!st.isDirectory()) return digestOf({ special: st.mode });
  const real = realpathSync(p);
  if (open.has(real)) return digestOf({ loop: true });
  open.add(real);
  const entries: [string, string][] = [];
  for (const name of readdirSync(p).sort()) {
    const child = path.join(p, name);
    if (IGNORED_NAMES.has(name) || leaveOut.has(child)) continue;
    entries.push([name, await treeDigest(child, leaveOut, open)]);
  }
  open.delete(real);
  return digestOf({ dir: entries });
}

/** The digests of every input of `p`, in a stable order, for its layer key. */
export async function configManagementInputDigests(p: ConfigManagementProvisioner, build: BuildConfig): Promise<string[]> {
  const outputs = new Set([build.output_directory, ...build.outputs.map((o) => o.directory)].filter((d): d is string => d !== undefined));
  const digests: string[] = [];
  for (const input of configManagementInputs(p)) digests.push(await treeDigest(input, outputs));
  return digests;
}
