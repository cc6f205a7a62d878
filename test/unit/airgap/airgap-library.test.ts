/**
 * Issue 26, what the bundle still missed, through the library: a recording of a failed build never
 * bundles; --var values in the manifest (sensitive ones refused); base images given as URLs carried
 * from the download cache; absolute input paths and files in qemu_args read from the bundle's copy;
 * a recording past its mirror's Valid-Until refused at bundle time; publish()'s allowHosts.
 * Fetches go through kiln's real proxy to a loopback server; no guest is booted (the runs are stand-ins
 * for build(), which runAirgapped takes as a callback).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate, type LoadedTemplate } from '../../../src/template/load.js';
import { runAirgapped, checkAirgapOptions, AirgapUsageError } from '../../../src/airgap/run.js';
import { makeBundle } from '../../../src/airgap/make-bundle.js';
import { loadBundle } from '../../../src/airgap/load-bundle.js';
import { readRecordingStatus, RecordingRefused } from '../../../src/airgap/recording-status.js';
import { parseValidUntil } from '../../../src/airgap/valid-until.js';
import { mapQemuArgPaths } from '../../../src/airgap/carried.js';
import { recordingDirFor } from '../../../src/airgap/store.js';
import { fetchToCache } from '../../../src/cache/download.js';
import { publish } from '../../../src/index.js';
import { publishTargetSchema } from '../../../src/template/schema-publish.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-airgap-library-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
let n = 0;
const fresh = (name: string) => path.join(dir, `${name}-${n++}`);

function serve(
  routes: Record<string, Buffer | string>,
): Promise<{ url: (p: string) => string; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const body = routes[req.url ?? ''];
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200).end(body);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        url: (p) => `http://127.0.0.1:${port}${p}`,
        requests,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    }),
  );
}

/** A GET through kiln's package proxy, as the guest's apt would send it. */
function viaProxy(proxyPort: number, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: proxyPort, path: url, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      })
      .on('error', reject);
  });
}

/** A site: template folder with a base image beside it. */
function site(body: string, name = 'site'): string {
  const root = fresh(name);
  mkdirSync(path.join(root, 'tpl'), { recursive: true });
  writeFileSync(path.join(root, 'tpl', 'base.qcow2'), Buffer.alloc(4096, 1));
  const file = path.join(root, 'tpl', 'kiln.yaml');
  writeFileSync(file, body);
  return file;
}
const simple = `
variables:
  greeting: { default: hello }
  token: { default: "", sensitive: true }
builds:
  - name: b
    output_directory: out/b
    source: { base_image: base.qcow2, checksum: none, communicator: { username: root } }
    provisioners:
      - { type: shell, inline: ['echo \${var.greeting}'] }
`;

async function record(
  t: LoadedTemplate,
  cache: string,
  urls: string[],
  outcome: { ok: boolean; failedStep?: string; error?: Error },
) {
  let sawNoCache: boolean | undefined;
  const results = await runAirgapped(
    t,
    { record: true, cacheDir: cache, selected: 1, log: () => undefined },
    async ({ network, noCache }) => {
      sawNoCache = noCache;
      for (const u of urls) expect(await viaProxy(network.proxyHostPort, u)).toBe(200);
      return [{ build: 'b', ...outcome }];
    },
  );
  return { results, sawNoCache };
}

describe('a recording of a failed build never becomes a bundle', () => {
  it('marks the recording ok only when the build succeeded; kiln bundle refuses a failed one naming the build and the fix', async () => {
    const internet = await serve({ '/pool/jq.deb': 'jq', '/pool/tree.deb': 'tree' });
    const cache = fresh('cache');
    const t = loadTemplate(site(simple), { env: {} }, { cacheDir: cache });
    const failed = await record(t, cache, [internet.url('/pool/jq.deb')], {
      ok: false,
      failedStep: 'provisioner 1',
      error: new Error('exit status 100\nmore'),
    });
    expect(failed.sawNoCache).toBe(true);
    const recDir = recordingDirFor(cache, t.file);
    expect(readRecordingStatus(recDir)).toMatchObject({
      ok: false,
      builds: [{ name: 'b', ok: false, failedStep: 'provisioner 1', error: 'exit status 100' }],
    });
    const e = await makeBundle(t, { output: fresh('x.kiln.tar'), cacheDir: cache, templateName: 'kiln.yaml' }).catch(
      (x: Error) => x,
    );
    expect(e).toBeInstanceOf(RecordingRefused);
    expect((e as Error).message).toContain(
      'is of a failed build: build "b" failed at "provisioner 1" (exit status 100)',
    );
    expect((e as Error).message).toContain(
      'fix: make the build succeed, then record again: kiln build --record kiln.yaml',
    );

    // Recorded again, successfully: the new run's fetches only (never merged with the failed run's).
    await record(t, cache, [internet.url('/pool/tree.deb')], { ok: true });
    const w = await makeBundle(t, { output: fresh('ok.kiln.tar'), cacheDir: cache });
    expect(w.manifest.packages).toBe(1);
    await internet.close();
  });

  it('refuses a recording whose run never finished (killed: no status), and one stopped by a fatal proxy error', async () => {
    const cache = fresh('cache');
    const t = loadTemplate(site(simple), { env: {} }, { cacheDir: cache });
    const recDir = recordingDirFor(cache, t.file);
    mkdirSync(recDir, { recursive: true });
    writeFileSync(path.join(recDir, 'index.json'), JSON.stringify({ version: 1, responses: [] }));
    await expect(makeBundle(t, { output: fresh('x.kiln.tar'), cacheDir: cache })).rejects.toThrow(
      /has no finished status: its kiln build --record was killed/,
    );
    // HTTPS through the proxy while recording stops the builds with that error: not ok, whatever the run says.
    await runAirgapped(
      t,
      { record: true, cacheDir: cache, selected: 1, log: () => undefined },
      async ({ network, signal }) => {
        await new Promise<void>((resolve) => {
          const req = http.request({
            host: '127.0.0.1',
            port: network.proxyHostPort,
            method: 'CONNECT',
            path: 'deb.example.org:443',
          });
          req.on('connect', (_res, socket) => {
            socket.destroy();
            resolve();
          });
          req.on('error', () => resolve());
          req.end();
        });
        expect(signal.aborted).toBe(true);
        return [{ build: 'b', ok: true }];
      },
    );
    expect(readRecordingStatus(recDir)).toMatchObject({ ok: false });
    expect(readRecordingStatus(recDir)!.stopped).toContain('https://deb.example.org:443/');
  });

  it("refuses a recording that left out one of the template's builds (--only)", async () => {
    const cache = fresh('cache');
    const two =
      simple +
      `  - name: c
    output_directory: out/c
    source: { base_image: base.qcow2, checksum: none, communicator: { username: root } }
`;
    const t = loadTemplate(site(two), { env: {} }, { cacheDir: cache });
    await record(t, cache, [], { ok: true });
    await expect(
      makeBundle(t, { output: fresh('x.kiln.tar'), cacheDir: cache, templateName: 'two.yaml' }),
    ).rejects.toThrow(
      /covers "b" only; the template's "c" was not recorded, so an offline build of it would miss its fetches\n  fix: record every build in one run: kiln build --record two.yaml \(without --only\/--except\)/,
    );
  });

  it('refuses options that do not go together', () => {
    const t = loadTemplate(site(simple), { env: {} }, { cacheDir: fresh('cache') });
    expect(() => checkAirgapOptions(t, { record: true, offline: true })).toThrow(AirgapUsageError);
  });
});

describe('what the bundle carries', () => {
  it("stores --var values (sensitive ones refused unless in a var-file) and applies them offline before the caller's", async () => {
    const cache = fresh('cache');
    const file = site(simple);
    const t = loadTemplate(file, { vars: ['greeting=bonjour', 'token=s3cr3t-value'], env: {} }, { cacheDir: cache });
    const e = await makeBundle(t, {
      output: fresh('x.kiln.tar'),
      cacheDir: cache,
      vars: ['greeting=bonjour', 'token=s3cr3t-value'],
    }).catch((x: Error) => x);
    expect((e as Error).message).toMatch(/^--var token: the variable is sensitive/);
    expect((e as Error).message).toContain('fix: give it in a var-file');
    expect((e as Error).message).not.toContain('s3cr3t');
    const varFile = path.join(path.dirname(file), 'secret.yaml');
    writeFileSync(varFile, 'token: s3cr3t-value\n');
    const t2 = loadTemplate(file, { vars: ['greeting=bonjour'], varFiles: [varFile], env: {} }, { cacheDir: cache });
    const w = await makeBundle(t2, {
      output: fresh('v.kiln.tar'),
      cacheDir: cache,
      vars: ['greeting=bonjour'],
      varFiles: [varFile],
    });
    expect(w.manifest.vars).toEqual(['greeting=bonjour']);
    const offline = await loadBundle(w.file, { cacheDir: fresh('far'), cwd: fresh('cwd') });
    expect(offline.template.variables.values.greeting).toBe('bonjour');
    expect(offline.template.variables.values.token).toBe('s3cr3t-value');
    const overridden = await loadBundle(w.file, { cacheDir: fresh('far'), vars: ['greeting=hej'], cwd: fresh('cwd') });
    expect(overridden.template.variables.values.greeting).toBe('hej');
  });

  it('carries a base image given as a URL from the download cache, by digest, and builds it from the bundle offline', async () => {
    const image = Buffer.alloc(100_000, 9);
    const internet = await serve({ '/images/debian.qcow2': image });
    const cache = fresh('cache');
    const url = internet.url('/images/debian.qcow2');
    const file = site(
      simple.replace(
        'base_image: base.qcow2, checksum: none',
        `base_image: "${url}", checksum: "sha256:${sha(image)}"`,
      ),
    );
    const t = loadTemplate(file, { env: {} }, { cacheDir: cache });
    await expect(
      makeBundle(t, { output: fresh('x.kiln.tar'), cacheDir: cache, templateName: 'kiln.yaml' }),
    ).rejects.toThrow(
      new RegExp(
        `builds\\[0\\]\\.source\\.base_image ${url.replace(/[.]/g, '\\.')} is not in the download cache .*\\n  fix: run the recording build first \\(kiln build --record kiln.yaml\\)`,
      ),
    );
    await fetchToCache(url, cache, { algorithm: 'sha256', hex: sha(image) });
    const w = await makeBundle(t, { output: fresh('u.kiln.tar'), cacheDir: cache });
    expect(w.manifest.downloads).toEqual([{ url, sha256: sha(image), size: image.length }]);
    await internet.close();
    const offline = await loadBundle(w.file, { cacheDir: fresh('far'), cwd: fresh('cwd') });
    const s = offline.template.template.builds[0]!.source;
    expect(readFileSync(s.base_image!)).toEqual(image);
    expect(s.checksum).toBe(`sha256:${sha(image)}`);
  });

  it('reads inputs named by far-away absolute paths and files in qemu_args from the bundle, not the offline host', async () => {
    const far = fresh('far-away');
    mkdirSync(path.join(far, 'boot'), { recursive: true });
    mkdirSync(path.join(far, 'www'), { recursive: true });
    writeFileSync(path.join(far, 'base.qcow2'), Buffer.alloc(4096, 2));
    writeFileSync(path.join(far, 'boot', 'vmlinuz'), 'kernel');
    writeFileSync(path.join(far, 'boot', 'extra.img'), 'extra disk');
    writeFileSync(path.join(far, 'www', 'index.html'), '<p>far</p>');
    writeFileSync(path.join(far, 'setup.sh'), 'echo far\n');
    const file = site(`
builds:
  - name: b
    output_directory: out/b
    source:
      base_image: ${far}/base.qcow2
      checksum: none
      http_directory: ${far}/www
      communicator: { username: root }
      qemu_args: [["-kernel", "${far}/boot/vmlinuz"], ["-drive", "file=${far}/boot/extra.img,if=virtio,format=raw"]]
    provisioners:
      - { type: shell, script: ${far}/setup.sh }
`);
    const cache = fresh('cache');
    const t = loadTemplate(file, { env: {} }, { cacheDir: cache });
    const w = await makeBundle(t, { output: fresh('abs.kiln.tar'), cacheDir: cache });
    // Gone from this machine: the offline build can only read the bundle's copies.
    rmSync(far, { recursive: true });
    const offline = await loadBundle(w.file, { cacheDir: fresh('far'), cwd: fresh('cwd') });
    const b = offline.template.template.builds[0]!;
    const inTree = (p: string) => p.startsWith(offline.treeRoot + path.sep);
    expect(inTree(b.source.base_image!)).toBe(true);
    expect(readFileSync(b.source.http_directory! + '/index.html', 'utf8')).toBe('<p>far</p>');
    expect(readFileSync((b.provisioners[0] as { script: string }).script, 'utf8')).toBe('echo far\n');
    const [kernel, drive] = b.source.qemu_args;
    expect(inTree(kernel![1]!)).toBe(true);
    expect(readFileSync(kernel![1]!, 'utf8')).toBe('kernel');
    expect(drive![1]).toMatch(/^file=.*,if=virtio,format=raw$/);
    expect(readFileSync(drive![1]!.slice(5, drive![1]!.indexOf(',')), 'utf8')).toBe('extra disk');
  });

  it('maps only carried paths inside qemu_args, keeping the rest byte for byte', () => {
    const map = (p: string) => (p === '/srv/k' ? '/tree/srv/k' : p);
    expect(
      mapQemuArgPaths(
        [
          ['-kernel', '/srv/k'],
          ['-drive', 'file=/srv/k,if=virtio'],
          ['-append', 'root=/dev/vda1 console=ttyS0'],
        ],
        map,
      ),
    ).toEqual([
      ['-kernel', '/tree/srv/k'],
      ['-drive', 'file=/tree/srv/k,if=virtio'],
      ['-append', 'root=/dev/vda1 console=ttyS0'],
    ]);
  });
});

describe("a recording past its mirror's Valid-Until", () => {
  const release = (validUntil: string) =>
    `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nDate: Sat, 28 Nov 2026 20:13:38 UTC\nValid-Until: ${validUntil}\nSHA256:\n abc 12 main/binary-amd64/Packages\n`;

  it('reads Valid-Until from a clear-signed InRelease', () => {
    expect(parseValidUntil(release('Sat, 05 Dec 2026 20:13:38 UTC'))?.toISOString()).toBe('2026-12-05T20:13:38.000Z');
    expect(parseValidUntil('Origin: Debian\n')).toBeUndefined();
  });

  it("is refused at bundle time with the date and the fix (Acquire::Check-Valid-Until is the site's choice)", async () => {
    const internet = await serve({
      '/debian-security/dists/bookworm-security/InRelease': release('Sat, 05 Dec 2026 20:13:38 UTC'),
    });
    const cache = fresh('cache');
    const t = loadTemplate(site(simple), { env: {} }, { cacheDir: cache });
    await record(t, cache, [internet.url('/debian-security/dists/bookworm-security/InRelease')], { ok: true });
    await internet.close();
    const before = await makeBundle(t, {
      output: fresh('a.kiln.tar'),
      cacheDir: cache,
      now: new Date('2026-12-03T00:00:00Z'),
    });
    expect(before.validUntil?.validUntil.toISOString()).toBe('2026-12-05T20:13:38.000Z');
    const late = new Date('2026-12-06T00:00:00Z');
    const e = await makeBundle(t, {
      output: fresh('b.kiln.tar'),
      cacheDir: cache,
      now: late,
      templateName: 'kiln.yaml',
    }).catch((x: Error) => x);
    expect((e as Error).message).toContain('InRelease says Valid-Until Sat, 05 Dec 2026 20:13:38 GMT');
    expect((e as Error).message).toContain('fix: record again (kiln build --record kiln.yaml)');
    expect((e as Error).message).toContain('Acquire::Check-Valid-Until "false" (its own choice, not kiln\'s)');
    const allowed = await makeBundle(t, {
      output: fresh('c.kiln.tar'),
      cacheDir: cache,
      now: late,
      allowExpired: true,
    });
    expect(existsSync(allowed.file)).toBe(true);
  });
});

describe('publish() through the library', () => {
  it('sends credentials to a host the manifest names only when allowHosts lists it, like kiln publish --allow-host', async () => {
    const artifact = path.join(dir, 'disk.qcow2');
    const data = Buffer.alloc(4096, 3);
    writeFileSync(artifact, data);
    const manifestFile = path.join(dir, 'manifest.json');
    // TEST-NET-3: never routed; a refused host is never contacted.
    const config = publishTargetSchema.parse({
      type: 's3',
      bucket: 'images',
      endpoint: 'http://203.0.113.7:9000',
      force_path_style: true,
      timeout: { connect: '300ms', idle: '1s' },
    });
    writeFileSync(
      manifestFile,
      JSON.stringify({
        build: 'b',
        artifacts: [{ name: 'disk.qcow2', path: artifact, format: 'qcow2', size: data.length, sha256: sha(data) }],
        published: [{ target: 's3', type: 's3', format: 'qcow2', status: 'published', config }],
      }),
    );
    const env = { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret-example' };
    const lines: string[] = [];
    const refused = await publish(manifestFile, { env, log: (l) => lines.push(l) }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(refused).toContain('names S3 at 203.0.113.7:9000');
    expect(refused).toContain('--allow-host 203.0.113.7:9000');
    expect(lines.join('\n')).not.toContain('sending credentials');
    await publish(manifestFile, { env, log: (l) => lines.push(l), allowHosts: ['203.0.113.7:9000'] }).catch(
      () => undefined,
    );
    expect(lines).toContain(
      'publish s3: sending credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to S3 at 203.0.113.7:9000',
    );
  }, 30_000);
});
