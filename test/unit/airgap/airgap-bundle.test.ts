/** Bundles: deterministic bytes, every input by digest, verified on open; tampering is named. */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { writeBundle } from '../../../src/airgap/bundle-write.js';
import { openBundle } from '../../../src/airgap/bundle-read.js';
import { PackageStore } from '../../../src/airgap/store.js';
import { Readable } from 'node:stream';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-airgap-bundle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

const site = path.join(dir, 'site');
mkdirSync(path.join(site, 'images'), { recursive: true });
mkdirSync(path.join(site, 'tpl', 'files'), { recursive: true });
mkdirSync(path.join(site, 'tpl', 'www'), { recursive: true });
writeFileSync(path.join(site, 'images', 'base.qcow2'), Buffer.alloc(200_000, 7));
writeFileSync(path.join(site, 'tpl', 'files', 'motd'), 'hello\n');
writeFileSync(path.join(site, 'tpl', 'setup.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
writeFileSync(path.join(site, 'tpl', 'www', 'index.html'), '<p>x</p>\n');
writeFileSync(path.join(site, 'tpl', 'vars.yaml'), 'marker: from-var-file\n');
const templateFile = path.join(site, 'tpl', 'kiln.yaml');
writeFileSync(
  templateFile,
  `
variables:
  marker: { default: m }
builds:
  - name: b
    output_directory: ../out/b
    source:
      base_image: ../images/base.qcow2
      checksum: none
      http_directory: www
      communicator: { username: root }
    provisioners:
      - type: shell
        script: setup.sh
      - type: file
        source: files/motd
        destination: /etc/motd
`,
);

async function recording(): Promise<string> {
  const rec = path.join(dir, 'rec');
  const store = new PackageStore(rec);
  await store.add(
    'http://deb.example/pool/jq.deb',
    200,
    { 'content-type': 'application/octet-stream' },
    Readable.from([Buffer.from('jq package')]),
  );
  store.save();
  return rec;
}

describe('bundles', () => {
  it('carries every input and the recording, gives the same bytes twice, and lays the tree out again on open', async () => {
    const varFile = path.join(site, 'tpl', 'vars.yaml');
    const t = loadTemplate(
      templateFile,
      { vars: [], varFiles: [varFile], env: {} },
      { cacheDir: path.join(dir, 'cache') },
    );
    const rec = await recording();
    const one = await writeBundle({
      template: t,
      varFiles: [varFile],
      recordingDir: rec,
      output: path.join(dir, 'one.kiln.tar'),
      cacheDir: path.join(dir, 'cache'),
    });
    const two = await writeBundle({
      template: t,
      varFiles: [varFile],
      recordingDir: rec,
      output: path.join(dir, 'two.kiln.tar'),
      cacheDir: path.join(dir, 'cache'),
    });
    expect(two.sha256).toBe(one.sha256);
    expect(sha(readFileSync(one.file))).toBe(one.sha256);
    expect(one.manifest.tree.map((e) => e.path)).toEqual([
      'images/base.qcow2',
      'tpl/files/motd',
      'tpl/kiln.yaml',
      'tpl/setup.sh',
      'tpl/vars.yaml',
      'tpl/www/index.html',
    ]);
    expect(one.manifest.template).toBe('tpl/kiln.yaml');
    expect(one.manifest.packages).toBe(1);
    expect(existsSync(path.join(dir, 'one.kiln.tar'))).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes('.partial'))).toEqual([]);

    const opened = await openBundle(one.file, path.join(dir, 'cache2'));
    expect(readFileSync(path.join(opened.treeRoot, 'images/base.qcow2'))).toEqual(Buffer.alloc(200_000, 7));
    expect(readFileSync(opened.template, 'utf8')).toBe(readFileSync(templateFile, 'utf8'));
    const reloaded = loadTemplate(
      opened.template,
      { vars: [], varFiles: opened.varFiles, env: {} },
      { cacheDir: path.join(dir, 'cache2') },
    );
    expect(reloaded.template.builds[0]!.output_directory).toBe(path.join(opened.treeRoot, 'out/b'));
    const store = new PackageStore(opened.packagesDir, opened.blobsDir);
    const hit = store.lookup('http://deb.example/pool/jq.deb')!;
    expect(readFileSync(store.blobPath(hit.sha256), 'utf8')).toBe('jq package');
  });

  it('refuses a tampered member, naming it, and leaves nothing unpacked', async () => {
    const t = loadTemplate(templateFile, { vars: [], varFiles: [], env: {} }, { cacheDir: path.join(dir, 'cache') });
    const w = await writeBundle({
      template: t,
      output: path.join(dir, 'tamper.kiln.tar'),
      cacheDir: path.join(dir, 'cache'),
    });
    const bytes = readFileSync(w.file);
    // The motd blob's content sits in the tar as is: change one byte of it.
    const at = bytes.indexOf(Buffer.from('hello\n'));
    expect(at).toBeGreaterThan(0);
    bytes[at] = 'j'.charCodeAt(0);
    const bad = path.join(dir, 'tampered.kiln.tar');
    writeFileSync(bad, bytes);
    const cache = path.join(dir, 'cache3');
    await expect(openBundle(bad, cache)).rejects.toThrow(new RegExp(`member "blobs/${sha('hello\n')}" is tampered`));
    expect(readdirSync(path.join(cache, 'airgap', 'bundles'))).toEqual([]);
    // A truncated copy is refused too.
    writeFileSync(bad, bytes.subarray(0, 2048));
    await expect(openBundle(bad, cache)).rejects.toThrow(/missing|cannot read/);
  });
});
