/**
 * Build directories left by a kiln that was killed (SIGKILL, power loss): each work directory records
 * its owner's pid, and the next run removes those whose owner is gone. QEMU itself cannot outlive
 * kiln (pdeathsig), so only files remain to clean.
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ownerFile = 'kiln-owner.pid';

export function markOwned(dir: string): void {
  writeFileSync(path.join(dir, ownerFile), String(process.pid));
}

export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** kiln work directories under `tmp` (named kiln-*, holding an owner marker), with their owner's pid. */
export function ownedWorkDirs(tmp = os.tmpdir()): { dir: string; pid: number }[] {
  let entries: string[] = [];
  try { entries = readdirSync(tmp); } catch { return []; }
  const owned: { dir: string; pid: number }[] = [];
  for (const name of entries) {
    if (!name.startsWith('kiln-')) continue;
    const dir = path.join(tmp, name);
    try { owned.push({ dir, pid: Number(readFileSync(path.join(dir, ownerFile), 'utf8').trim()) }); } catch { /* not a work dir, or being removed */ }
  }
  return owned;
}

/** Removes kiln work directories under `tmp` whose owning process no longer exists; returns them. */
export function removeStaleWorkDirs(tmp = os.tmpdir()): string[] {
  const stale = ownedWorkDirs(tmp).filter((w) => !isAlive(w.pid)).map((w) => w.dir);
  for (const dir of stale) rmSync(dir, { recursive: true, force: true });
  return stale;
}

/** Staging directories of an output (".<name>.kiln-partial-<pid>") whose kiln is gone. */
export function removeStaleStaging(outputDir: string): string[] {
  const parent = path.dirname(outputDir);
  const prefix = `.${path.basename(outputDir)}.kiln-partial-`;
  const removed: string[] = [];
  let entries: string[] = [];
  try { entries = readdirSync(parent); } catch { return removed; }
  for (const name of entries) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).replace(/\.old$/, ''));
    if (isAlive(pid)) continue;
    rmSync(path.join(parent, name), { recursive: true, force: true });
    removed.push(path.join(parent, name));
  }
  return removed;
}
