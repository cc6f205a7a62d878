/**
 * Build directories left by a kiln that was killed (SIGKILL, power loss): each work directory records
 * its owner's pid and what the build holds beside its output directory (staging directory, claim
 * file), and the next run removes those whose owner is gone. QEMU itself cannot outlive kiln
 * (pdeathsig), so only files remain to clean.
 */
import { existsSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeLockOfDeadProcess } from '../cache/lock.js';
import { removeKilnOutput } from '../artifacts/manifest.js';
import { isAlive } from '../util/pid.js';

export const ownerFile = 'kiln-owner.pid';
/** Beside the owner marker: the build's staging directory and output claim, once it has them. */
const besideOutputFile = 'kiln-beside-output.json';

interface BesideOutput {
  staging: string;
  claim: string;
}

export function markOwned(dir: string): void {
  writeFileSync(path.join(dir, ownerFile), String(process.pid));
}

/** kiln work directories under `tmp` (named kiln-*, holding an owner marker), with their owner's pid. */
export function ownedWorkDirs(tmp = os.tmpdir()): { dir: string; pid: number }[] {
  let entries: string[] = [];
  try {
    entries = readdirSync(tmp);
  } catch {
    return [];
  }
  const owned: { dir: string; pid: number }[] = [];
  for (const name of entries) {
    if (!name.startsWith('kiln-')) continue;
    const dir = path.join(tmp, name);
    try {
      owned.push({ dir, pid: Number(readFileSync(path.join(dir, ownerFile), 'utf8').trim()) });
    } catch {
      /* not a work dir, or being removed */
    }
  }
  return owned;
}

export function recordBesideOutput(workDir: string, paths: BesideOutput): void {
  const file = path.join(workDir, besideOutputFile);
  writeFileSync(`${file}.tmp`, JSON.stringify(paths) + '\n');
  renameSync(`${file}.tmp`, file);
}

export interface StaleLeftover {
  path: string;
  kind: 'work directory' | 'staging directory' | 'output claim';
}

/**
 * What a dead kiln `pid` recorded beside its output, removed only where the path still has kiln's
 * naming pattern for that pid (a record is never a licence to delete anything else), and a claim only
 * while it still holds that pid (not once a later build has taken it over).
 */
function removeBesideOutput(workDir: string, pid: number): StaleLeftover[] {
  let recorded: Partial<BesideOutput>;
  try {
    recorded = JSON.parse(readFileSync(path.join(workDir, besideOutputFile), 'utf8')) as Partial<BesideOutput>;
  } catch {
    return [];
  }
  const removed: StaleLeftover[] = [];
  const { staging, claim } = recorded;
  if (
    typeof staging === 'string' &&
    path.isAbsolute(staging) &&
    new RegExp(`^\\..+\\.kiln-partial-${pid}$`).test(path.basename(staging))
  ) {
    if (existsSync(staging)) {
      rmSync(staging, { recursive: true, force: true });
      removed.push({ path: staging, kind: 'staging directory' });
    }
    const replaced = `${staging}.old`;
    if (existsSync(replaced) && !removeKilnOutput(replaced, outputDirOfStaging(staging)).length)
      removed.push({ path: replaced, kind: 'staging directory' });
  }
  if (
    typeof claim === 'string' &&
    path.isAbsolute(claim) &&
    /^\..+\.kiln-lock$/.test(path.basename(claim)) &&
    removeLockOfDeadProcess(claim, pid)
  ) {
    removed.push({ path: claim, kind: 'output claim' });
  }
  return removed;
}

/** The output directory a staging directory (".<name>.kiln-partial-<pid>") is beside. */
function outputDirOfStaging(staging: string): string {
  return path.join(path.dirname(staging), path.basename(staging).replace(/^\.(.+)\.kiln-partial-\d+$/, '$1'));
}

/** Removes kiln work directories under `tmp` whose owning process no longer exists, and what they recorded beside an output; returns what went. */
export function removeStaleWorkDirs(tmp = os.tmpdir()): StaleLeftover[] {
  const removed: StaleLeftover[] = [];
  for (const { dir, pid } of ownedWorkDirs(tmp).filter((w) => !isAlive(w.pid))) {
    removed.push(...removeBesideOutput(dir, pid));
    rmSync(dir, { recursive: true, force: true });
    removed.push({ path: dir, kind: 'work directory' });
  }
  return removed;
}

/**
 * Staging directories of an output (".<name>.kiln-partial-<pid>") whose kiln is gone. A ".old" one is
 * the output a commit had moved aside to replace it when kiln died: of that, only the entries its
 * manifest says kiln wrote go.
 */
export function removeStaleStaging(outputDir: string): string[] {
  const parent = path.dirname(outputDir);
  const prefix = `.${path.basename(outputDir)}.kiln-partial-`;
  const removed: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(parent);
  } catch {
    return removed;
  }
  for (const name of entries) {
    const m = name.startsWith(prefix) ? /^(\d+)(\.old)?$/.exec(name.slice(prefix.length)) : null;
    if (!m || isAlive(Number(m[1]))) continue;
    const dir = path.join(parent, name);
    if (!m[2]) rmSync(dir, { recursive: true, force: true });
    else if (removeKilnOutput(dir, outputDir).length) continue; // it holds something kiln did not write: left as it is
    removed.push(dir);
  }
  return removed;
}
