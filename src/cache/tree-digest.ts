/**
 * Digest of a directory tree as a tool that reads it sees it: the layer key's digest of the inputs a
 * provisioner kind marks 'tree' (a playbook's whole directory, roles, collections, modules, hiera data),
 * so editing any file there re-runs the build from that provisioner.
 */
import { readdirSync, readlinkSync, realpathSync, statSync, lstatSync } from 'node:fs';
import path from 'node:path';
import { digestOf, fileDigest } from './digest.js';

/** Version-control metadata changes with every commit, not with what a playbook does. */
const IGNORED_NAMES = new Set(['.git', '.hg', '.svn']);

/**
 * Digest of a file or directory tree (names and contents), following symbolic links as Ansible and
 * Puppet do (a role linked in from elsewhere counts with its content). Left out: `leaveOut` (the
 * build's own output directories, which may sit under a playbook's directory and change with every
 * build) and version-control metadata. A link back into a directory being read is noted, not walked.
 */
export async function treeDigest(
  p: string,
  leaveOut: ReadonlySet<string>,
  open: Set<string> = new Set(),
): Promise<string> {
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
