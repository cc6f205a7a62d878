/**
 * Lock files shared by kiln processes, holding the owner's pid. A lock is whole from its first
 * instant: the pid is written to a file of this process's own, then hard-linked into place (link()
 * never replaces an existing file), so nobody ever reads a lock that has no owner yet. A lock whose
 * owner is gone (kiln was killed) is stale and taken over, so a crash never wedges the cache. A lock
 * file holding no pid (empty: left by an older kiln, or not kiln's) is never taken over: it may be
 * someone's live lock, and breaking it would let two processes in at once.
 */
import { closeSync, fstatSync, linkSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive } from '../util/pid.js';

/**
 * Who holds a lock: its pid (undefined when the file holds none), and the file's inode and change
 * time, which tell this very lock from a later one (a freed inode number is soon used again).
 */
interface Holder {
  pid: number | undefined;
  ino: number;
  ctimeNs: bigint;
}

export type LockAttempt =
  | { acquired: true }
  /** `pid` is a live holder, or undefined for a lock file holding no pid; `changingHands` while another process takes over a dead holder's lock. */
  | { acquired: false; pid: number | undefined; changingHands?: true };

/**
 * Creates `file` holding this process's pid, or returns false if it exists. Synchronous, so the
 * temporary name (which the cache's sweeps know by its `.tmp-<pid>` ending) is unique in the process.
 */
function createWhole(file: string): boolean {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, String(process.pid));
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** The lock's holder, read through one descriptor (pid and inode of the same file); undefined if it is gone. */
function readHolder(file: string): Holder | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { pid: undefined, ino: -1, ctimeNs: -1n }; // unreadable: held by someone kiln cannot name
  }
  try {
    const text = readFileSync(fd, 'utf8').trim();
    const st = fstatSync(fd, { bigint: true });
    return { pid: /^[1-9]\d*$/.test(text) ? Number(text) : undefined, ino: Number(st.ino), ctimeNs: st.ctimeNs };
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes `file` if it is still the lock seen held by the dead `holder`. Two processes that both saw
 * it dead must not both remove "it": the second would delete the first one's fresh lock. So the
 * removal happens under a guard lock, and only if the file is still the same lock.
 */
function removeDeadLock(file: string, holder: Holder): 'removed' | 'changing hands' {
  const guard = `${file}.takeover.lock`;
  if (!createWhole(guard)) {
    // The guard is held for a few synchronous system calls; one whose holder died is stale.
    const guardHolder = readHolder(guard);
    if (guardHolder?.pid !== undefined && !isAlive(guardHolder.pid)) removeIfSame(guard, guardHolder);
    return 'changing hands';
  }
  try {
    removeIfSame(file, holder);
    return 'removed';
  } finally {
    releaseLock(guard);
  }
}

/** Unlinks `file` if it is still the lock `seen` before, not one made since. */
function removeIfSame(file: string, seen: Holder): void {
  const now = readHolder(file);
  if (now && now.pid === seen.pid && now.ino === seen.ino && now.ctimeNs === seen.ctimeNs) {
    try {
      unlinkSync(file);
    } catch {
      /* gone meanwhile */
    }
  }
}

/** One attempt at the lock, without waiting: taken (a dead holder's lock is taken over), or who holds it. */
export function tryLock(file: string): LockAttempt {
  for (;;) {
    if (createWhole(file)) return { acquired: true };
    const holder = readHolder(file);
    if (!holder) continue; // released meanwhile
    if (holder.pid === undefined || isAlive(holder.pid)) return { acquired: false, pid: holder.pid };
    if (removeDeadLock(file, holder) === 'changing hands')
      return { acquired: false, pid: holder.pid, changingHands: true };
  }
}

/** Releases a lock this process holds; one that holds another pid (never expected) is not ours to remove. */
export function releaseLock(file: string): void {
  const holder = readHolder(file);
  if (holder?.pid === process.pid) removeIfSame(file, holder);
}

/**
 * Removes a lock left by `pid`, now dead (the sweep of a killed kiln's leftovers); a lock someone has
 * taken over since, or that holds no pid, stays. True if it was removed.
 */
export function removeLockOfDeadProcess(file: string, pid: number): boolean {
  const holder = readHolder(file);
  if (!holder || holder.pid !== pid || isAlive(pid)) return false;
  return removeDeadLock(file, holder) === 'removed';
}

/**
 * tryLock, waiting out a takeover in progress: it lasts a few system calls, and a guard left by a
 * kiln killed in the middle of one is cleared, so only an unforeseen guard lasts `patienceMs`.
 */
export async function lockNow(file: string, patienceMs = 2_000): Promise<LockAttempt> {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const attempt = tryLock(file);
    if (attempt.acquired || !attempt.changingHands || Date.now() > deadline) return attempt;
    await sleep(10);
  }
}

/** Who holds a lock kiln could not take, for an error message, with the fix when kiln cannot tell. */
export function describeHolder(file: string, attempt: Extract<LockAttempt, { acquired: false }>): string {
  if (attempt.changingHands)
    return `${file} (its owner, pid ${attempt.pid}, is gone, but ${file}.takeover.lock blocks taking it over)\n  fix: if no kiln is running, remove ${file}.takeover.lock`;
  if (attempt.pid === undefined)
    return `${file}, which holds no pid (an older kiln's, or not kiln's)\n  fix: if no kiln is running, remove it`;
  return `${file} held by pid ${attempt.pid}`;
}

export async function withLock<T>(
  lockFile: string,
  fn: () => Promise<T>,
  timeoutMs = 30 * 60_000,
  signal?: AbortSignal,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const attempt = await lockNow(lockFile);
    if (attempt.acquired) break;
    if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${describeHolder(lockFile, attempt)}`);
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    releaseLock(lockFile);
  }
}
