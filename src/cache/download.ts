/**
 * The download cache: files fetched over HTTP(S) are stored by content digest under
 * <cache>/downloads/, shared by every template. A download goes to a ".part" file that is hashed as it
 * streams and renamed only once complete and verified, so a partial file is never used. A lock file
 * keeps two kiln processes from fetching the same URL at once.
 */
import { createHash } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Expected { algorithm: 'sha256' | 'sha512'; hex: string }

export class ChecksumMismatchError extends Error {}

async function withLock<T>(lockFile: string, fn: () => Promise<T>, timeoutMs = 30 * 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(lockFile, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A lock whose owner is gone is stale (kiln was killed): take it over.
      const owner = Number(readFileSync(lockFile, 'utf8') || 0);
      let alive = false;
      try { if (owner) { process.kill(owner, 0); alive = true; } } catch { alive = false; }
      if (!alive) { rmSync(lockFile, { force: true }); continue; }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockFile} held by pid ${owner}`);
      await sleep(250);
    }
  }
  try { return await fn(); } finally { rmSync(lockFile, { force: true }); }
}

/** Downloads `url` into the cache (or finds it there) and returns the cached file's path and sha256. */
export async function fetchToCache(url: string, cacheDir: string, expected: Expected | undefined, onProgress?: (pct: number) => void): Promise<{ path: string; sha256: string }> {
  const dir = path.join(cacheDir, 'downloads');
  mkdirSync(dir, { recursive: true });
  const urlKey = createHash('sha256').update(url).digest('hex').slice(0, 24);
  const index = path.join(dir, `url-${urlKey}.json`);
  return withLock(path.join(dir, `url-${urlKey}.lock`), async () => {
    if (expected) {
      const byDigest = path.join(dir, `${expected.algorithm}-${expected.hex.toLowerCase()}`);
      if (existsSync(byDigest)) {
        const sha256 = existsSync(index) ? (JSON.parse(readFileSync(index, 'utf8')) as { sha256: string }).sha256 : undefined;
        if (sha256) return { path: byDigest, sha256 };
      }
    } else if (existsSync(index)) {
      const rec = JSON.parse(readFileSync(index, 'utf8')) as { sha256: string };
      const p = path.join(dir, `sha256-${rec.sha256}`);
      if (existsSync(p)) return { path: p, sha256: rec.sha256 };
    }
    const part = path.join(dir, `url-${urlKey}.part`);
    rmSync(part, { force: true });
    const res = await fetch(url);
    if (!res.ok || !res.body) throw new Error(`downloading ${url} failed: HTTP ${res.status} ${res.statusText}`);
    const total = Number(res.headers.get('content-length') ?? 0);
    const sha256 = createHash('sha256');
    const other = expected && expected.algorithm !== 'sha256' ? createHash(expected.algorithm) : undefined;
    let done = 0;
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
    body.on('data', (c: Buffer) => {
      sha256.update(c); other?.update(c); done += c.length;
      if (total && onProgress) onProgress((done / total) * 100);
    });
    try {
      await pipeline(body, createWriteStream(part));
    } catch (e) {
      rmSync(part, { force: true });
      throw new Error(`downloading ${url} was interrupted: ${(e as Error).message}`);
    }
    if (total && statSync(part).size !== total) { rmSync(part, { force: true }); throw new Error(`downloading ${url}: got ${done} of ${total} bytes`); }
    const hex = sha256.digest('hex');
    const got = expected ? (other ? other.digest('hex') : hex) : hex;
    if (expected && got !== expected.hex.toLowerCase()) {
      rmSync(part, { force: true });
      throw new ChecksumMismatchError(`checksum mismatch for ${url}: expected ${expected.algorithm}:${expected.hex}, got ${expected.algorithm}:${got}`);
    }
    const final = path.join(dir, `sha256-${hex}`);
    renameSync(part, final);
    if (expected && expected.algorithm !== 'sha256') {
      const alias = path.join(dir, `${expected.algorithm}-${expected.hex.toLowerCase()}`);
      rmSync(alias, { force: true });
      renameSync(final, alias);
      writeFileSync(index, JSON.stringify({ url, sha256: hex }));
      return { path: alias, sha256: hex };
    }
    writeFileSync(index, JSON.stringify({ url, sha256: hex }));
    return { path: final, sha256: hex };
  });
}
