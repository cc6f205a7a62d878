/**
 * Issue 23: a bundle's manifest and index are self-declared, so kiln treats them as hostile: no digest
 * becomes a path, no template or var-file is read from outside the bundle, no recorded header splits a
 * response or crashes kiln; a pin (--sha256) refuses another bundle before reading it; a second open
 * reuses the verified copy instead of replacing the tree a running build uses.
 */
import http from 'node:http';
import net from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openBundle, BundleError } from '../../../src/airgap/bundle-read.js';
import { PackageProxy, RecordingHttpsError } from '../../../src/airgap/proxy.js';
import { PackageStore, IndexError } from '../../../src/airgap/store.js';
import { listUnpackedBundles, pruneUnpackedBundles } from '../../../src/airgap/unpacked.js';
import { prepareAirgap, AirgapUsageError } from '../../../src/cli/bundle.js';
import { craftBundle, sha } from './airgap-crafted.js';
import { loadTemplate } from '../../../src/template/load.js';
import { writeBundle } from '../../../src/airgap/bundle-write.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-airgap-safety-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
async function write(bytes: Buffer): Promise<string> {
  const f = path.join(dir, `b${n++}.kiln.tar`);
  writeFileSync(f, bytes);
  return f;
}
const cacheOf = () => path.join(dir, `cache${n++}`);

function get(port: number, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: url, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += String(c);
      });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a crafted bundle cannot reach outside itself', () => {
  it('refuses a recorded response whose sha256 is a path, naming the entry and field', async () => {
    const f = await write(
      await craftBundle({ responses: [{ url: 'http://deb.example/shadow', body: 'x', sha256: '../../etc/shadow' }] }),
    );
    const cache = cacheOf();
    const e = await openBundle(f, cache).catch((x: Error) => x);
    expect(e).toBeInstanceOf(BundleError);
    expect((e as Error).message).toContain(
      'packages/index.json: responses[0] ("http://deb.example/shadow"): sha256 "../../etc/shadow" is not 64 lower-case hex digits',
    );
    expect(readdirSync(path.join(cache, 'airgap', 'bundles'))).toEqual([]);
  });

  it('a recording whose index names a path is refused at load, and the proxy never serves a path', async () => {
    const rec = path.join(dir, 'rec-path');
    mkdirSync(rec);
    writeFileSync(
      path.join(rec, 'index.json'),
      JSON.stringify({
        version: 1,
        responses: [{ url: 'http://x/p', status: 200, headers: {}, sha256: '../../../../etc/passwd', size: 10 }],
      }),
    );
    expect(() => new PackageStore(rec)).toThrow(IndexError);
    expect(() => new PackageStore(rec)).toThrow(
      /responses\[0\] \("http:\/\/x\/p"\): sha256 "..\/..\/..\/..\/etc\/passwd"/,
    );
    expect(() => new PackageStore(path.join(dir, 'none')).blobPath('../../etc/passwd')).toThrow(/not a sha256 digest/);
  });

  it.each([
    [
      'template',
      { template: '../../../etc/hostname' },
      /manifest.json's template "..\/..\/..\/etc\/hostname" climbs out with ".."/,
    ],
    ['template', { template: '/etc/hostname' }, /manifest.json's template "\/etc\/hostname" is absolute/],
    ['varFiles', { varFiles: ['../../etc/passwd'] }, /manifest.json's varFiles\[0\] "..\/..\/etc\/passwd" climbs out/],
    ['varFiles', { varFiles: ['/etc/passwd'] }, /manifest.json's varFiles\[0\] "\/etc\/passwd" is absolute/],
    [
      'varFiles',
      { varFiles: ['tpl/not-in-tree.yaml'] },
      /varFiles\[0\] "tpl\/not-in-tree.yaml" is not a file of the bundle's tree/,
    ],
  ])('refuses manifest.%s outside the bundle: %j', async (_field, edit, message) => {
    const f = await write(await craftBundle({ editManifest: (m) => Object.assign(m, edit) }));
    await expect(openBundle(f, cacheOf())).rejects.toThrow(message);
  });

  it('refuses tree entries that climb out, name a path as digest, or clash', async () => {
    const bad = async (edit: (m: Record<string, unknown>) => void) =>
      openBundle(
        await write(await craftBundle({ files: { 'tpl/kiln.yaml': 'a', 'tpl/x': 'b' }, editManifest: edit })),
        cacheOf(),
      ).catch((e: Error) => e.message);
    const tree = (m: Record<string, unknown>) => m.tree as { path: string; sha256: string }[];
    expect(
      await bad((m) => {
        tree(m)[1]!.path = '../../x';
      }),
    ).toMatch(/tree\[1\]\.path "..\/..\/x" climbs out/);
    expect(
      await bad((m) => {
        tree(m)[1]!.sha256 = '../blobs/x';
      }),
    ).toMatch(/tree\[1\]\.sha256 "..\/blobs\/x" is not 64 lower-case hex digits/);
    expect(
      await bad((m) => {
        tree(m)[1]!.path = 'tpl/kiln.yaml/x';
      }),
    ).toMatch(/lists "tpl\/kiln.yaml" as a file and as the directory of "tpl\/kiln.yaml\/x"/);
    expect(
      await bad((m) => {
        (m.members as { name: string }[])[0]!.name = '../evil';
      }),
    ).toMatch(/members\[0\]\.name "..\/evil" is not a member name kiln writes/);
  });

  it('refuses symlink and hard-link members, naming them', async () => {
    const blob = `blobs/${sha('a')}`;
    const f = await write(
      await craftBundle({
        files: { 'k.yaml': 'a' },
        editMembers: (l) => {
          l[1] = { name: blob, type: 'symlink', linkname: '/etc/shadow' };
        },
      }),
    );
    await expect(openBundle(f, cacheOf())).rejects.toThrow(
      `member "${blob}" is a symlink (-> "/etc/shadow"): a kiln bundle holds regular files only`,
    );
    const g = await write(
      await craftBundle({
        files: { 'k.yaml': 'a' },
        editMembers: (l) => {
          l[1] = { name: blob, type: 'link', linkname: 'manifest.json' };
        },
      }),
    );
    await expect(openBundle(g, cacheOf())).rejects.toThrow(`member "${blob}" is a link`);
  });

  it('refuses a recorded header with CR LF and a status outside 100-999, naming the entry', async () => {
    const crlf = await write(
      await craftBundle({
        responses: [
          { url: 'http://deb.example/a', body: 'a', headers: { 'content-type': 'text/plain\r\nset-cookie: x=1' } },
        ],
      }),
    );
    await expect(openBundle(crlf, cacheOf())).rejects.toThrow(
      /responses\[0\] \("http:\/\/deb.example\/a"\): header content-type's value .* is not a string free of control characters/,
    );
    const status = await write(
      await craftBundle({ responses: [{ url: 'http://deb.example/b', body: 'b', status: 1000 }] }),
    );
    await expect(openBundle(status, cacheOf())).rejects.toThrow(
      /responses\[0\] \("http:\/\/deb.example\/b"\): status 1000 is not an HTTP status/,
    );
  });
});

describe('the replay proxy never leaves a rejection unhandled', () => {
  it("answers 502 and records the error when a recorded answer cannot be sent; kiln's own hosts are not misses", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    const rec = path.join(dir, 'rec-crlf');
    const store = new PackageStore(rec);
    // A record that went around validation (an in-memory store): writeHead throws on CR LF.
    (store as unknown as { byUrl: Map<string, unknown> }).byUrl.set('http://deb.example/a', {
      url: 'http://deb.example/a',
      status: 200,
      headers: { 'content-type': 'a\r\nb: c' },
      sha256: sha('x'),
      size: 1,
    });
    (store as unknown as { byUrl: Map<string, unknown> }).byUrl.set('http://deb.example/p', {
      url: 'http://deb.example/p',
      status: 200,
      headers: {},
      sha256: '../../etc/passwd',
      size: 1,
    });
    const misses: string[] = [];
    const proxy = new PackageProxy('replay', store, { onMiss: (u) => misses.push(u), kilnHosts: ['10.0.2.101'] });
    const port = await proxy.listen();
    const a = await get(port, 'http://deb.example/a');
    expect(a.status).toBe(502);
    expect(a.body).toContain('failed answering it');
    const p = await get(port, 'http://deb.example/p');
    expect(p.status).toBe(502);
    expect(p.body).not.toContain('root:');
    const own = await get(port, 'http://10.0.2.101:8123/seed/user-data');
    expect(own.status).toBe(502);
    expect(own.body).toContain("is kiln's own HTTP server");
    expect(own.body).toContain('no_proxy');
    expect(misses).toEqual([]);
    expect(proxy.errors).toHaveLength(2);
    expect(proxy.errors[0]).toContain('GET http://deb.example/a');
    await proxy.close();
    await new Promise((r) => setImmediate(r));
    process.off('unhandledRejection', onUnhandled);
    expect(unhandled).toEqual([]);
  });

  it('while recording, HTTPS through the proxy is fatal, naming the host and the fix', async () => {
    const fatal: Error[] = [];
    const proxy = new PackageProxy('record', new PackageStore(path.join(dir, 'rec-https')), {
      onFatal: (e) => fatal.push(e),
    });
    const port = await proxy.listen();
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () =>
        s.write('CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\n\r\n'),
      );
      let text = '';
      s.on('data', (c) => {
        text += String(c);
      });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    // A client that hands the proxy an https:// URL as is (no CONNECT) is refused the same way.
    const direct = await get(port, 'https://mirror.example/debian/InRelease');
    await proxy.close();
    expect(answer).toMatch(/^HTTP\/1.1 403/);
    expect(direct.status).toBe(403);
    expect(fatal).toHaveLength(2);
    expect(fatal[1]!.message).toContain('https://mirror.example/ through');
    expect(fatal[0]).toBeInstanceOf(RecordingHttpsError);
    expect(fatal[0]!.message).toContain('https://deb.debian.org:443/');
    expect(fatal[0]!.message).toContain('http:// mirror of deb.debian.org');
    expect(fatal[0]!.message).toContain('signatures');
  });
});

describe('pinning, sharing and pruning unpacked bundles', () => {
  it('--sha256 refuses a different bundle before unpacking it; a matching pin is accepted', async () => {
    const bytes = await craftBundle();
    const f = await write(bytes);
    const cache = cacheOf();
    const wrong = sha('another bundle');
    await expect(openBundle(f, cache, { sha256: wrong })).rejects.toThrow(
      `has sha256 ${sha(bytes)}, not ${wrong} as --sha256 says`,
    );
    expect(listUnpackedBundles(cache)).toEqual([]);
    await expect(openBundle(f, cache, { sha256: 'abc' })).rejects.toThrow(/is not a SHA-256/);
    const ok = await openBundle(f, cache, { sha256: sha(bytes).toUpperCase() });
    expect(ok.sha256).toBe(sha(bytes));
    expect(path.basename(ok.dir)).toBe(sha(bytes));
  });

  it('a second open of the same bundle reuses the verified tree (the same inode), never replacing it', async () => {
    const f = await write(
      await craftBundle({
        files: { 'tpl/kiln.yaml': 'builds: []\n', 'tpl/vars.yaml': 'a: 1\n' },
        varFiles: ['tpl/vars.yaml'],
      }),
    );
    const cache = cacheOf();
    const one = await openBundle(f, cache);
    const ino = statSync(one.template).ino;
    const two = await openBundle(f, cache);
    expect([one.unpacked, two.unpacked]).toEqual([true, false]);
    expect(two.dir).toBe(one.dir);
    expect(statSync(two.template).ino).toBe(ino);
    expect(readFileSync(two.varFiles[0]!, 'utf8')).toBe('a: 1\n');
    // Shared read-only.
    expect(statSync(one.template).mode & 0o222).toBe(0);
  });

  it('unpacked bundles are listed and pruned, except one a live process uses', async () => {
    const cache = cacheOf();
    const used = await openBundle(await write(await craftBundle({ files: { 'a.yaml': 'a'.repeat(5000) } })), cache);
    const old = await openBundle(await write(await craftBundle({ files: { 'b.yaml': 'b'.repeat(5000) } })), cache);
    // `old` was last used by a process that is gone (its mark names a pid that does not exist).
    rmSync(path.join(old.dir, 'users'), { recursive: true });
    const listed = listUnpackedBundles(cache);
    expect(listed.map((b) => [b.sha256, b.inUse]).sort()).toEqual(
      [
        [used.sha256, true],
        [old.sha256, false],
      ].sort(),
    );
    expect(listed.every((b) => b.bytes >= 5000)).toBe(true);
    const removed = pruneUnpackedBundles(cache, 0);
    expect(removed.map((b) => b.sha256)).toEqual([old.sha256]);
    expect(listUnpackedBundles(cache).map((b) => b.sha256)).toEqual([used.sha256]);
  });
});

describe("a version 2 manifest's root, vars and downloads are checked as hostile (issue 26)", () => {
  const cases: [string, (m: Record<string, unknown>) => void, RegExp][] = [
    [
      'a root climbing out',
      (m) => {
        m.version = 2;
        m.root = '/srv/../etc';
      },
      /manifest\.json's root "\/srv\/\.\.\/etc" is not an absolute path without "\." or "\.\." components/,
    ],
    [
      'a relative root',
      (m) => {
        m.version = 2;
        m.root = 'srv';
      },
      /manifest\.json's root "srv" is not an absolute path/,
    ],
    [
      'a var that is not name=value',
      (m) => {
        m.version = 2;
        m.vars = ['--force'];
      },
      /manifest\.json's vars\[0\] is not a name=value string/,
    ],
    [
      'a download naming no member',
      (m) => {
        m.version = 2;
        m.downloads = [{ url: 'http://x/base.qcow2', sha256: sha('elsewhere'), size: 9 }];
      },
      /downloads\[0\]\.sha256 names blobs\/[0-9a-f]{64}, which is not a member/,
    ],
    [
      'a download whose url is a path',
      (m) => {
        m.version = 2;
        m.downloads = [{ url: '/etc/shadow', sha256: sha('builds: []\n'), size: 10 }];
      },
      /downloads\[0\]\.url is not an http\(s\) URL/,
    ],
    [
      'a newer version',
      (m) => {
        m.version = 3;
      },
      /version 3 was written by a newer kiln/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    it(`refuses ${what}, naming the field`, async () => {
      const f = await write(await craftBundle({ editManifest: edit }));
      const cache = cacheOf();
      await expect(openBundle(f, cache)).rejects.toThrow(message);
      expect(readdirSync(path.join(cache, 'airgap', 'bundles'))).toEqual([]);
    });
  }
});

describe('kiln build --bundle', () => {
  it('refuses a template beside --bundle instead of ignoring it', async () => {
    await expect(prepareAirgap({ bundle: 'x.kiln.tar', template: 'other.yaml' }, cacheOf())).rejects.toThrow(
      AirgapUsageError,
    );
    await expect(prepareAirgap({ bundle: 'x.kiln.tar', template: 'other.yaml' }, cacheOf())).rejects.toThrow(
      /give a template or --bundle, not both: the bundle carries its own template, so other.yaml would be ignored/,
    );
    await expect(prepareAirgap({ sha256: sha('x'), template: 'a.yaml' }, cacheOf())).rejects.toThrow(
      /--sha256 pins the bundle given with --bundle/,
    );
  });

  it("puts outputs and downloads where the template says, relative to the current directory, not under the tree's path", async () => {
    const site = path.join(dir, 'site-out');
    mkdirSync(path.join(site, 'deep', 'tpl'), { recursive: true });
    mkdirSync(path.join(site, 'images'));
    writeFileSync(path.join(site, 'images', 'base.qcow2'), 'disk');
    const file = path.join(site, 'deep', 'tpl', 'kiln.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: b
    output_directory: out/b
    source: { base_image: ${path.join(site, 'images', 'base.qcow2')}, checksum: none, communicator: { username: root } }
    provisioners:
      - { type: file, direction: download, source: /etc/hostname, destination: fetched/hostname }
  - name: c
    output_directory: ../../output/c
    source: { base_image: ../../images/base.qcow2, checksum: none, communicator: { username: root } }
`,
    );
    const cache = cacheOf();
    const t = loadTemplate(file, { vars: [], varFiles: [], env: {} }, { cacheDir: cache });
    const w = await writeBundle({ template: t, output: path.join(dir, 'out.kiln.tar'), cacheDir: cache });
    expect(w.manifest.template).toBe('deep/tpl/kiln.yaml');
    const airgap = (await prepareAirgap({ bundle: w.file, sha256: w.sha256 }, cache))!;
    const offline = airgap.template!;
    expect(airgap.options.bundle!.pinned).toBe(true);
    const b = offline.template.builds[0]!;
    // Named by an absolute path on the recording machine: read from the bundle's copy.
    expect(b.source.base_image).toBe(path.join(airgap.options.bundle!.treeRoot, 'images', 'base.qcow2'));
    expect(b.output_directory).toBe(path.resolve('out/b'));
    const download = b.provisioners[0] as { destination: string };
    expect(download.destination).toBe(path.resolve('fetched/hostname'));
    // Above the template's folder: below the folder they share, never above the current directory.
    expect(offline.template.builds[1]!.output_directory).toBe(path.resolve('output/c'));
  });
});
