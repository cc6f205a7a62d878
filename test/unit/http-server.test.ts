import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BootConfigServer } from '../../src/http/server.js';

function get(port: number, rawPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // A raw request path, so "../" reaches the server undecoded by any client-side normalization.
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('BootConfigServer', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-http-'));
  const served = path.join(root, 'www');
  mkdirSync(path.join(served, 'sub'), { recursive: true });
  writeFileSync(path.join(served, 'preseed.cfg'), 'd-i x\n');
  writeFileSync(path.join(served, 'sub', 'a.txt'), 'A');
  writeFileSync(path.join(root, 'secret.txt'), 'SECRET');
  symlinkSync(path.join(root, 'secret.txt'), path.join(served, 'escape.txt'));
  let counter = 0;
  const server = new BootConfigServer({ directory: served, content: { '/inline.cfg': 'inline' } });
  server.addRoute('/dynamic', () => `n=${++counter}`);
  let port = 0;
  beforeAll(async () => { port = await server.listen(); });
  afterAll(() => server.close());

  it('serves files, content and dynamic routes', async () => {
    expect(await get(port, '/preseed.cfg')).toEqual({ status: 200, body: 'd-i x\n' });
    expect(await get(port, '/sub/a.txt')).toEqual({ status: 200, body: 'A' });
    expect(await get(port, '/inline.cfg')).toEqual({ status: 200, body: 'inline' });
    expect((await get(port, '/dynamic')).body).toBe('n=1');
    expect((await get(port, '/dynamic')).body).toBe('n=2');
  });
  it.each(['/../secret.txt', '/sub/../../secret.txt', '/%2e%2e/secret.txt', '/escape.txt', '/nope', '/sub'])('refuses %s', async (p) => {
    const r = await get(port, p);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain('SECRET');
  });
  it('listens on loopback only', () => {
    expect((server as unknown as { server: http.Server }).server.address()).toMatchObject({ address: '127.0.0.1' });
  });
});
