// Host-side work stops when its signal aborts: a download (the connection is dropped, nothing is left
// in the cache), a compression (the tool is killed, its partial output removed), a tar archive (its
// streams are destroyed). Each is stopped mid-way through work that would otherwise take minutes.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, ftruncateSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { fetchToCache } from '../../../src/cache/download.js';
import { compressFile } from '../../../src/artifacts/compress.js';
import { writeTar } from '../../../src/artifacts/tar.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cancel-transfers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A deadline for facts that never come, not a speed check (10 s was passed by xz at load 21).
async function until(what: string, check: () => boolean, ms = 90_000): Promise<void> {
  for (const deadline = Date.now() + ms; !check(); await sleep(20))
    if (Date.now() > deadline) throw new Error(`waited ${ms} ms for ${what}`);
}

/** A sparse file of `bytes`: costs no disk, reads as zeros, and takes the tools a long while. */
function sparseFile(name: string, bytes: number): string {
  const file = path.join(dir, name);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, bytes);
  closeSync(fd);
  return file;
}

const processesReading = (file: string) => spawnSync('pgrep', ['-f', file], { encoding: 'utf8' }).stdout.trim();

describe('stopping host-side work', () => {
  it('a download that trickles: abort drops the connection, rejects with the reason, caches nothing', async () => {
    let serverSawClose!: () => void;
    const closed = new Promise<void>((resolve) => {
      serverSawClose = resolve;
    });
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(1 << 20) });
      const timer = setInterval(() => res.write(Buffer.alloc(16)), 50);
      res.on('close', () => {
        clearInterval(timer);
        serverSawClose();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/base.img`;
      const cache = path.join(dir, 'cache');
      const stop = new AbortController();
      const reason = new Error('stopped by the test');
      let progressed = false;
      const download = fetchToCache(
        url,
        cache,
        undefined,
        () => {
          progressed = true;
        },
        stop.signal,
      );
      download.catch(() => undefined);
      await until('the first bytes', () => progressed);
      stop.abort(reason);
      await expect(download).rejects.toBe(reason);
      await closed;
      expect(readdirSync(path.join(cache, 'downloads'))).toEqual([]);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('compression: abort kills the tool and removes the partial output', async () => {
    const input = sparseFile('big.raw', 64 * 2 ** 30);
    const out = `${input}.xz`;
    const stop = new AbortController();
    const reason = new Error('stopped by the test');
    const compressing = compressFile(input, out, 'xz', stop.signal);
    compressing.catch(() => undefined);
    await until('xz to write', () => existsSync(`${out}.partial`) && statSync(`${out}.partial`).size > 0);
    stop.abort(reason);
    await expect(compressing).rejects.toBe(reason);
    expect(readdirSync(dir).filter((n) => n.startsWith('big.raw.'))).toEqual([]);
    expect(processesReading(input)).toBe('');
  });

  it('a tar archive (OVA, Vagrant box): abort destroys its streams and rejects with the reason', async () => {
    const input = sparseFile('disk.img', 64 * 2 ** 30);
    const out = path.join(dir, 'box.tar.gz');
    const stop = new AbortController();
    const reason = new Error('stopped by the test');
    const writing = writeTar(out, [{ name: 'box.img', file: input }], { gzip: true, signal: stop.signal });
    writing.catch(() => undefined);
    await until('the archive to grow', () => existsSync(out) && statSync(out).size > 0);
    stop.abort(reason);
    await expect(writing).rejects.toBe(reason);
  });
});
