import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BootConfigServer } from '../../../src/http/server.js';

function get(port: number, rawPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // A raw request path, so "../" reaches the server undecoded by any client-side normalization.
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('BootConfigServer', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-http-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const served = path.join(root, 'www');
  mkdirSync(path.join(served, 'sub'), { recursive: true });
  writeFileSync(path.join(served, 'preseed.cfg'), 'd-i x\n');
  writeFileSync(path.join(served, 'sub', 'a.txt'), 'A');
  writeFileSync(path.join(root, 'secret.txt'), 'SECRET');
  symlinkSync(path.join(root, 'secret.txt'), path.join(served, 'escape.txt'));
  // A directory's index.html that is a symlink out of the root, and a directory named like a file.
  mkdirSync(path.join(served, 'linked'));
  symlinkSync(path.join(root, 'secret.txt'), path.join(served, 'linked', 'index.html'));
  mkdirSync(path.join(served, 'user-data'));
  mkdirSync(path.join(served, 'site'));
  writeFileSync(path.join(served, 'site', 'index.html'), '<p>index</p>');
  let counter = 0;
  const server = new BootConfigServer({ directory: served, content: { '/inline.cfg': 'inline' } });
  server.addRoute('/dynamic', () => `n=${++counter}`);
  let port = 0;
  beforeAll(async () => {
    port = await server.listen();
  });
  afterAll(() => server.close());

  it('serves files, content and dynamic routes', async () => {
    expect(await get(port, '/preseed.cfg')).toEqual({ status: 200, body: 'd-i x\n' });
    expect(await get(port, '/sub/a.txt')).toEqual({ status: 200, body: 'A' });
    expect(await get(port, '/inline.cfg')).toEqual({ status: 200, body: 'inline' });
    expect((await get(port, '/dynamic')).body).toBe('n=1');
    expect((await get(port, '/dynamic')).body).toBe('n=2');
  });
  it("serves a directory's index.html", async () => {
    expect(await get(port, '/site/')).toEqual({ status: 200, body: '<p>index</p>' });
  });
  it.each([
    '/../secret.txt',
    '/sub/../../secret.txt',
    '/%2e%2e/secret.txt',
    '/escape.txt',
    '/nope',
    '/sub',
    '/linked',
    '/linked/',
    '/user-data',
  ])('refuses %s', async (p) => {
    const r = await get(port, p);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain('SECRET');
  });
  it('listens on loopback only', () => {
    expect((server as unknown as { server: http.Server }).server.address()).toMatchObject({ address: '127.0.0.1' });
  });
});

describe('BootConfigServer read errors', () => {
  // /proc/self/mem is a regular file whose read at offset 0 fails (EIO): a file that cannot be read.
  const server = new BootConfigServer({ directory: '/proc/self', content: { '/alive': 'yes' } });
  let port = 0;
  beforeAll(async () => {
    port = await server.listen();
  });
  afterAll(() => server.close());

  it('answers 500 for a file it cannot read, and keeps serving', async () => {
    expect(await get(port, '/mem')).toEqual({ status: 500, body: 'cannot read the file\n' });
    expect(await get(port, '/alive')).toEqual({ status: 200, body: 'yes' });
    expect((await get(port, '/mem')).status).toBe(500);
  });
});
