/** kiln's package proxy: recording through a real upstream on loopback, replaying with it gone. */
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PackageProxy } from '../../../src/airgap/proxy.js';
import { PackageStore } from '../../../src/airgap/store.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-airgap-proxy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function get(
  proxyPort: number,
  url: string,
  method = 'GET',
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: proxyPort, path: url, method, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('package proxy', () => {
  it('records GETs by digest, replays them with the upstream gone, fails a miss at once and refuses CONNECT', async () => {
    const big = 'x'.repeat(300_000);
    const upstream = http.createServer((req, res) => {
      if (req.url === '/pool/a.deb')
        res
          .writeHead(200, {
            'content-type': 'application/vnd.debian.binary-package',
            'last-modified': 'Tue, 01 Jan 2030 00:00:00 GMT',
            'set-cookie': 'no',
          })
          .end(big);
      else if (req.url === '/dists/InRelease') res.writeHead(200, { 'content-type': 'text/plain' }).end('release\n');
      else res.writeHead(404).end('nope');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const up = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
    const storeDir = path.join(dir, 'rec');

    const recorder = new PackageProxy('record', new PackageStore(storeDir));
    const rp = await recorder.listen();
    const a = await get(rp, `${up}/pool/a.deb`, 'GET', { 'if-modified-since': 'Tue, 01 Jan 2030 00:00:00 GMT' });
    expect(a.status).toBe(200);
    expect(a.body).toBe(big);
    expect((await get(rp, `${up}/dists/InRelease`, 'HEAD')).status).toBe(200);
    expect((await get(rp, `${up}/missing`)).status).toBe(404);
    await recorder.close();
    await new Promise<void>((r) => upstream.close(() => r()));

    const index = JSON.parse(readFileSync(path.join(storeDir, 'index.json'), 'utf8')) as {
      responses: { url: string; status: number; headers: Record<string, string>; sha256: string }[];
    };
    expect(index.responses.map((r) => [r.url, r.status])).toEqual([
      [`${up}/dists/InRelease`, 200],
      [`${up}/missing`, 404],
      [`${up}/pool/a.deb`, 200],
    ]);
    const deb = index.responses.find((r) => r.url.endsWith('a.deb'))!;
    expect(deb.headers).toEqual({
      'content-type': 'application/vnd.debian.binary-package',
      'last-modified': 'Tue, 01 Jan 2030 00:00:00 GMT',
    });
    expect(readFileSync(path.join(storeDir, 'blobs', deb.sha256), 'utf8')).toBe(big);

    const misses: string[] = [];
    const refused: string[] = [];
    const replayer = new PackageProxy('replay', new PackageStore(storeDir), {
      onMiss: (u) => misses.push(u),
      onRefused: (w) => refused.push(w),
    });
    const pp = await replayer.listen();
    const again = await get(pp, `${up}/pool/a.deb`);
    expect([again.status, again.body === big, again.headers['last-modified']]).toEqual([
      200,
      true,
      'Tue, 01 Jan 2030 00:00:00 GMT',
    ]);
    expect((await get(pp, `${up}/dists/InRelease`)).body).toBe('release\n');
    expect((await get(pp, `${up}/missing`)).status).toBe(404);
    expect(misses).toEqual([]);
    // What an offline build's provenance names (issue 30): each replayed response once, by its body's digest.
    expect(replayer.served).toEqual(
      ['/pool/a.deb', '/dists/InRelease', '/missing'].map((p) => ({
        url: `${up}${p}`,
        sha256: index.responses.find((r) => r.url === `${up}${p}`)!.sha256,
      })),
    );
    const miss = await get(pp, `${up}/pool/b.deb`);
    expect(miss.status).toBe(404);
    expect(miss.body).toContain('record the build again');
    expect(misses).toEqual([`${up}/pool/b.deb`]);

    // CONNECT (HTTPS through the proxy) cannot be recorded: refused with the reason, reported.
    const connect = await new Promise<string>((resolve, reject) => {
      const s = net.connect(pp, '127.0.0.1', () =>
        s.write('CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\n\r\n'),
      );
      let text = '';
      s.on('data', (c) => {
        text += String(c);
      });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(connect).toMatch(/^HTTP\/1.1 403/);
    expect(connect).toContain('cannot be recorded');
    expect(refused).toEqual(['CONNECT deb.debian.org:443']);
    await replayer.close();
  });
});
