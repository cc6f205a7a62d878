/**
 * The download cache: files fetched over HTTP(S) are stored by content digest under
 * <cache>/downloads/, shared by every template. A download goes to a ".part" file that is hashed as it
 * streams and renamed only once complete and verified, so a partial file is never used. A lock file
 * keeps two kiln processes from fetching the same URL at once.
 */
import { createHash } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withLock } from './lock.js';
import { formatBytes } from '../template/units.js';
import { KilnError } from '../util/errors.js';
import { risingPercent } from '../util/progress.js';

/** md5 and sha1 only come from Packer templates (which allow them; kiln warns that they are weak). */
export interface Expected {
  algorithm: 'sha256' | 'sha512' | 'md5' | 'sha1';
  hex: string;
}

export class ChecksumMismatchError extends KilnError {}

const stallTimeoutMs = 60_000;

/** An error's message with its cause: fetch says only "terminated" or "fetch failed" on its own. */
function reason(e: unknown): string {
  const err = e as Error & { cause?: unknown };
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause && cause !== err.message ? `${err.message} (${cause})` : err.message;
}

/**
 * A checksum list (SHA256SUMS and the like) over HTTP(S), read whole and not cached: it is small and
 * changes whenever the image it lists does. A server error is named as such, not as a list without
 * the image's line.
 */
export async function fetchChecksumFile(url: string, signal?: AbortSignal): Promise<string> {
  const stop = AbortSignal.any([AbortSignal.timeout(stallTimeoutMs), ...(signal ? [signal] : [])]);
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { signal: stop });
    text = await res.text();
  } catch (e) {
    signal?.throwIfAborted();
    throw new KilnError(`could not fetch checksum file ${url}: ${reason(e)}`, {
      fix: `check the URL and that the server is reachable`,
    });
  }
  if (!res.ok)
    throw new KilnError(`could not fetch checksum file ${url}: HTTP ${res.status} ${res.statusText}`, {
      fix: `correct the URL in "checksum" (file:<url of a SHA256SUMS-style list>), or give the digest itself (sha256:<hex>)`,
    });
  return text;
}

/** A URL's name in `<cache>/downloads`: its index is `url-<key>.json` (naming the download's SHA-256), beside `url-<key>.lock` and `.part`. */
export const downloadUrlKey = (url: string): string => createHash('sha256').update(url).digest('hex').slice(0, 24);

/**
 * Downloads `url` into the cache (or finds it there) and returns the cached file's path and sha256.
 * `signal` stops the download (the connection is dropped, the partial file removed) with its reason.
 */
export async function fetchToCache(
  url: string,
  cacheDir: string,
  expected: Expected | undefined,
  onProgress?: (pct: number) => void,
  signal?: AbortSignal,
): Promise<{ path: string; sha256: string }> {
  const dir = path.join(cacheDir, 'downloads');
  mkdirSync(dir, { recursive: true });
  const urlKey = downloadUrlKey(url);
  const index = path.join(dir, `url-${urlKey}.json`);
  return withLock(
    path.join(dir, `url-${urlKey}.lock`),
    async () => {
      if (expected) {
        const byDigest = path.join(dir, `${expected.algorithm}-${expected.hex.toLowerCase()}`);
        if (existsSync(byDigest)) {
          const sha256 = existsSync(index)
            ? (JSON.parse(readFileSync(index, 'utf8')) as { sha256: string }).sha256
            : undefined;
          if (sha256) return { path: byDigest, sha256 };
        }
      } else if (existsSync(index)) {
        const rec = JSON.parse(readFileSync(index, 'utf8')) as { sha256: string };
        const p = path.join(dir, `sha256-${rec.sha256}`);
        if (existsSync(p)) return { path: p, sha256: rec.sha256 };
      }
      const part = path.join(dir, `url-${urlKey}.part`);
      rmSync(part, { force: true });
      const sha256 = createHash('sha256');
      const other = expected && expected.algorithm !== 'sha256' ? createHash(expected.algorithm) : undefined;
      // A server that stops sending without closing would otherwise hang the build forever.
      const stalled = new AbortController();
      let stallTimer: NodeJS.Timeout | undefined;
      const alive = () => {
        clearTimeout(stallTimer);
        stallTimer = setTimeout(
          () => stalled.abort(new Error(`no data for ${stallTimeoutMs / 1000} s`)),
          stallTimeoutMs,
        );
      };
      alive();
      const stop = signal ? AbortSignal.any([stalled.signal, signal]) : stalled.signal;
      let total = 0;
      let done = 0;
      const progress = onProgress && risingPercent(onProgress);
      try {
        let res: Response;
        try {
          res = await fetch(url, { signal: stop });
        } catch (e) {
          signal?.throwIfAborted();
          throw new KilnError(`downloading ${url} failed: ${reason(e)}`, {
            fix: `check the URL and that the server is reachable`,
          });
        }
        if (!res.ok || !res.body) throw new Error(`downloading ${url} failed: HTTP ${res.status} ${res.statusText}`);
        total = Number(res.headers.get('content-length') ?? 0);
        const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
        body.on('data', (c: Buffer) => {
          alive();
          sha256.update(c);
          other?.update(c);
          done += c.length;
          if (total) progress?.((done / total) * 100);
        });
        try {
          await pipeline(body, createWriteStream(part), { signal: stop });
        } catch (e) {
          signal?.throwIfAborted();
          throw new KilnError(
            `downloading ${url} was interrupted after ${formatBytes(done)}${total ? ` of ${formatBytes(total)}` : ''}: ${reason(e)}; nothing was cached`,
            { fix: `run the build again (the download starts over)` },
          );
        }
        if (total && statSync(part).size !== total)
          throw new KilnError(`downloading ${url}: got ${done} of ${total} bytes; nothing was cached`, {
            fix: `run the build again (the download starts over)`,
          });
        signal?.throwIfAborted();
      } catch (e) {
        rmSync(part, { force: true });
        throw e;
      } finally {
        clearTimeout(stallTimer);
      }
      const hex = sha256.digest('hex');
      const got = expected ? (other ? other.digest('hex') : hex) : hex;
      if (expected && got !== expected.hex.toLowerCase()) {
        rmSync(part, { force: true });
        throw new ChecksumMismatchError(
          `checksum mismatch for ${url}: expected ${expected.algorithm}:${expected.hex.toLowerCase()}, got ${expected.algorithm}:${got}; nothing was cached`,
          { fix: `the server sent a different file or the checksum is wrong; correct "checksum" or use "none"` },
        );
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
    },
    undefined,
    signal,
  );
}
