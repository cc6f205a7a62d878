// kiln's lock files (src/cache/lock.ts): created whole, a lock holding no pid is never taken over, a
// dead holder's lock is taken over by exactly one of the processes racing for it.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { deadPid } from '../../helpers/process-audit.js';
import { removeLockOfDeadProcess, tryLock, withLock } from '../../../src/cache/lock.js';
import { repoRoot } from '../../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('lock files', () => {
  it("never takes over a lock file that holds no pid (one being created, by an older kiln, or not kiln's)", async () => {
    const lock = path.join(dir, 'empty.lock');
    writeFileSync(lock, '');
    let ran = false;
    await expect(
      withLock(
        lock,
        async () => {
          ran = true;
        },
        300,
      ),
    ).rejects.toThrow(/holds no pid.*\n  fix: if no kiln is running, remove it/);
    expect(ran).toBe(false);
    expect(readFileSync(lock, 'utf8')).toBe('');
  });

  it("waits for a live holder and names it; takes over a dead holder's lock", async () => {
    const lock = path.join(dir, 'held.lock');
    const holder = execa('sleep', ['30']);
    writeFileSync(lock, String(holder.pid));
    await expect(withLock(lock, async () => undefined, 300)).rejects.toThrow(`held by pid ${holder.pid}`);
    holder.kill();
    await holder.catch(() => undefined);
    expect(await withLock(lock, async () => readFileSync(lock, 'utf8'), 300)).toBe(String(process.pid));
    expect(existsSync(lock)).toBe(false);
  });

  it('a lock exists with its pid from its first instant, and its temporary file is gone', () => {
    const lock = path.join(dir, 'whole.lock');
    expect(tryLock(lock)).toEqual({ acquired: true });
    expect(readFileSync(lock, 'utf8')).toBe(String(process.pid));
    expect(tryLock(lock)).toEqual({ acquired: false, pid: process.pid });
    expect(readdirSync(dir).filter((n) => n.startsWith('whole.lock'))).toEqual(['whole.lock']);
  });

  it("the sweep removes a dead process's lock, and never one another process holds now", async () => {
    const dead = await deadPid();
    const lock = path.join(dir, 'swept.lock');
    writeFileSync(lock, String(dead));
    expect(removeLockOfDeadProcess(lock, dead + 1)).toBe(false);
    expect(removeLockOfDeadProcess(lock, dead)).toBe(true);
    expect(existsSync(lock)).toBe(false);
    // Taken over since by a live process: not the dead one's any more.
    writeFileSync(lock, String(process.pid));
    expect(removeLockOfDeadProcess(lock, dead)).toBe(false);
    expect(readFileSync(lock, 'utf8')).toBe(String(process.pid));
  });

  it('many processes racing for one lock, some dying while they hold it, are never inside at once', async () => {
    const lock = path.join(dir, 'race.lock');
    const inside = path.join(dir, 'inside');
    const overlaps = path.join(dir, 'overlaps');
    // Each acquirer marks its turn with an O_EXCL file: finding it there means two holders at once. A
    // "dying" acquirer exits while it holds the lock (like a killed kiln): the others race to take it over.
    const script = (rounds: number, dies: boolean) => `
      import { closeSync, openSync, unlinkSync, appendFileSync } from 'node:fs';
      import { withLock } from '${path.join(repoRoot, 'dist/cache/lock.js')}';
      for (let i = 0; i < ${rounds}; i++) {
        await withLock(${JSON.stringify(lock)}, async () => {
          let fd;
          try { fd = openSync(${JSON.stringify(inside)}, 'wx'); } catch { appendFileSync(${JSON.stringify(overlaps)}, process.pid + '\\n'); return; }
          await new Promise((r) => setTimeout(r, 5));
          closeSync(fd);
          unlinkSync(${JSON.stringify(inside)});
          if (${dies}) process.exit(0);
        }, 60_000);
      }`;
    const children = [
      ...Array.from({ length: 6 }, () => execa('node', ['--input-type=module', '-e', script(5, false)])),
      ...Array.from({ length: 4 }, () => execa('node', ['--input-type=module', '-e', script(1, true)])),
    ];
    await Promise.all(children);
    expect(existsSync(overlaps) ? readFileSync(overlaps, 'utf8') : '', 'processes that found another inside').toBe('');
    // The last holder may have died holding it: taken over once more, then nothing is left (no
    // temporary file, no takeover guard).
    await withLock(lock, async () => undefined, 60_000);
    expect(readdirSync(dir).filter((n) => n.startsWith('race.lock'))).toEqual([]);
  }, 120_000);
});
