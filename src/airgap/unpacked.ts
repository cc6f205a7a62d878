/**
 * Unpacked bundles in the cache (`<cache>/airgap/bundles/<sha256>/`): which exist, how big they are,
 * which a running build uses, and removing the others (kiln cache ls / prune). A build marks the copy
 * it uses with `users/<pid>` (removed when kiln exits; a dead pid's mark is ignored), so prune never
 * removes a tree under a running build.
 */
import { lstatSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isAlive } from '../util/pid.js';

export interface UnpackedBundle {
  sha256: string;
  dir: string;
  bytes: number;
  lastUsed: Date;
  inUse: boolean;
}

export const bundlesDirOf = (cacheDir: string) => path.join(cacheDir, 'airgap', 'bundles');

/** Marks `dir` used by this process until it exits. */
export function markBundleInUse(dir: string): void {
  const users = path.join(dir, 'users');
  mkdirSync(users, { recursive: true });
  const mark = path.join(users, String(process.pid));
  writeFileSync(mark, '');
  process.once('exit', () => rmSync(mark, { force: true }));
}

function inUse(dir: string): boolean {
  let pids: string[] = [];
  try {
    pids = readdirSync(path.join(dir, 'users'));
  } catch {
    return false;
  }
  return pids.some((p) => /^\d+$/.test(p) && isAlive(Number(p)));
}

/** Bytes on disk, each inode once (the tree is hard links to the blobs). */
function diskBytes(dir: string, seen = new Set<string>()): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) total += diskBytes(p, seen);
    else if (!seen.has(`${st.dev}:${st.ino}`)) {
      seen.add(`${st.dev}:${st.ino}`);
      total += st.size;
    }
  }
  return total;
}

/** Every unpacked bundle (and a partial one left by a killed kiln), least recently used first. */
export function listUnpackedBundles(cacheDir: string): UnpackedBundle[] {
  const root = bundlesDirOf(cacheDir);
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: UnpackedBundle[] = [];
  for (const name of names) {
    const dir = path.join(root, name);
    const partial = /^\.partial-(\d+)-/.exec(name);
    // A staging directory of a live kiln is being unpacked right now: not listed, never removed.
    if (partial && isAlive(Number(partial[1]))) continue;
    if (!partial && !/^[0-9a-f]{64}$/.test(name)) continue;
    let lastUsed: Date;
    try {
      lastUsed = statSync(path.join(dir, '.complete')).mtime;
    } catch {
      lastUsed = new Date(0);
    }
    out.push({ sha256: name, dir, bytes: diskBytes(dir), lastUsed, inUse: !partial && inUse(dir) });
  }
  return out.sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime());
}

/** Removes unpacked bundles no build uses, least recently used first, until at most `keepBytes` of them remain; returns those removed. */
export function pruneUnpackedBundles(cacheDir: string, keepBytes: number): UnpackedBundle[] {
  const all = listUnpackedBundles(cacheDir);
  let total = all.reduce((n, b) => n + b.bytes, 0);
  const removed: UnpackedBundle[] = [];
  for (const b of all) {
    if (total <= keepBytes) break;
    if (b.inUse) continue;
    rmSync(b.dir, { recursive: true, force: true });
    total -= b.bytes;
    removed.push(b);
  }
  return removed;
}
