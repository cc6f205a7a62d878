/**
 * A lock file shared by kiln processes: created with O_EXCL, holding the owner's pid. A lock whose owner
 * is gone (kiln was killed) is stale and taken over, so a crash never wedges the cache.
 */
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive } from '../build/stale.js';

export async function withLock<T>(lockFile: string, fn: () => Promise<T>, timeoutMs = 30 * 60_000, signal?: AbortSignal): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const fd = openSync(lockFile, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = 0;
      try { owner = Number(readFileSync(lockFile, 'utf8') || 0); } catch { continue; /* released meanwhile */ }
      if (!isAlive(owner)) { rmSync(lockFile, { force: true }); continue; }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockFile} held by pid ${owner}`);
      await sleep(250);
    }
  }
  try { return await fn(); } finally { rmSync(lockFile, { force: true }); }
}
