import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BootConfigServer } from '../../../src/http/server.js';
import { ChecksumMismatchError, fetchToCache } from '../../../src/cache/download.js';
import { expectedChecksum } from '../../../src/build/steps/fetch-base.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'kiln-dl-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let caches = 0;
const newCache = () => path.join(tmp, `cache-${caches++}`);

describe('download cache', () => {
  const body = Buffer.alloc(3 * 2 ** 20, 7);
  const sha256 = createHash('sha256').update(body).digest('hex');
  const sha512 = createHash('sha512').update(body).digest('hex');
  let hits = 0;
  const server = new BootConfigServer({
    onRequest: () => {
      hits++;
    },
  });
  server.addRoute('/base.img', () => body);
  let url = '';
  beforeAll(async () => {
    url = `http://127.0.0.1:${await server.listen()}/base.img`;
  });
  afterAll(() => server.close());

  it('downloads once, verifies, stores by digest and reuses the file', async () => {
    const cache = newCache();
    const first = await fetchToCache(url, cache, { algorithm: 'sha256', hex: sha256 });
    expect(first.sha256).toBe(sha256);
    expect(path.basename(first.path)).toBe(`sha256-${sha256}`);
    expect(readFileSync(first.path).equals(body)).toBe(true);
    const before = hits;
    const again = await fetchToCache(url, cache, { algorithm: 'sha256', hex: sha256 });
    expect(again.path).toBe(first.path);
    expect(hits).toBe(before); // no second download
    const unverified = await fetchToCache(url, cache, undefined);
    expect(unverified.path).toBe(first.path);
  });

  it('verifies sha512 too', async () => {
    const cache = newCache();
    const r = await fetchToCache(url, cache, { algorithm: 'sha512', hex: sha512 });
    expect(r.sha256).toBe(sha256);
    expect(readFileSync(r.path).length).toBe(body.length);
  });

  it('rejects a checksum mismatch and caches nothing', async () => {
    const cache = newCache();
    await expect(fetchToCache(url, cache, { algorithm: 'sha256', hex: '0'.repeat(64) })).rejects.toBeInstanceOf(
      ChecksumMismatchError,
    );
    const files = readdirSync(path.join(cache, 'downloads'));
    expect(files.filter((f) => f.startsWith('sha') || f.endsWith('.part') || f.endsWith('.lock'))).toEqual([]);
  });

  it('reports an HTTP error clearly', async () => {
    const cache = newCache();
    await expect(fetchToCache(url.replace('base.img', 'missing.img'), cache, undefined)).rejects.toThrow(/HTTP 404/);
    expect(existsSync(path.join(cache, 'downloads'))).toBe(true);
  });
});

describe('checksum file URLs (checksum: file:<url>)', () => {
  const sums = `${'a'.repeat(64)}  base.img\n`;
  const server = new BootConfigServer();
  server.addRoute('/SHA256SUMS', () => sums);
  let base = '';
  beforeAll(async () => {
    base = `http://127.0.0.1:${await server.listen()}`;
  });
  afterAll(() => server.close());
  const signal = new AbortController().signal;

  it("picks the image's line from the fetched list", async () => {
    expect(await expectedChecksum(`file:${base}/SHA256SUMS`, `${base}/base.img`, signal)).toEqual({
      algorithm: 'sha256',
      hex: 'a'.repeat(64),
    });
  });

  it("names an HTTP error as such, not as a list without the image's line", async () => {
    await expect(expectedChecksum(`file:${base}/missing/SHA256SUMS`, `${base}/base.img`, signal)).rejects.toThrow(
      `could not fetch checksum file ${base}/missing/SHA256SUMS: HTTP 404 Not Found\n  fix: correct the URL in "checksum" (file:<url of a SHA256SUMS-style list>), or give the digest itself (sha256:<hex>)`,
    );
  });

  it('names an unreachable server', async () => {
    // A port that just stopped listening: nothing answers there.
    const closed = new BootConfigServer();
    const free = await closed.listen();
    await closed.close();
    await expect(expectedChecksum(`file:http://127.0.0.1:${free}/SHA256SUMS`, 'base.img', signal)).rejects.toThrow(
      new RegExp(
        `^could not fetch checksum file http://127.0.0.1:${free}/SHA256SUMS: fetch failed \\(.*ECONNREFUSED.*\\)\n  fix: check the URL and that the server is reachable$`,
      ),
    );
  });
});
