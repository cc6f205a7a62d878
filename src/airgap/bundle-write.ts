/**
 * Writes a bundle: one tar holding the manifest (first), every input once by digest (blobs/<sha256>),
 * the recorded package set and, optionally, kiln itself. Deterministic: members sorted by name, mtime
 * 0, uid/gid 0, modes 0644 — the same inputs give the same bytes. Files stream from disk into the tar
 * (no copy in memory or in a temp dir) and are hashed again on the way in: a file that changed since
 * it was hashed fails the bundle. The tar is written beside its destination and renamed when whole.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import tar from 'tar-stream';
import type { LoadedTemplate } from '../template/load.js';
import { cachedFileDigest } from '../cache/digest.js';
import { kilnVersion } from '../version.js';
import { PackageStore } from './store.js';
import { commonRoot, templateInputs } from './inputs.js';
import type { CarriedDownload } from './carried.js';
import {
  KILN_MEMBER,
  MANIFEST_MEMBER,
  PACKAGES_INDEX_MEMBER,
  blobMember,
  type BundleManifest,
} from './bundle-format.js';
import { KilnError } from '../util/errors.js';

export interface WriteBundleOptions {
  template: LoadedTemplate;
  varFiles?: string[];
  /** The template's recording (kiln build --record); absent or empty: no packages. */
  recordingDir?: string;
  /** kiln's packed npm tarball (--with-kiln). */
  kilnTarball?: string;
  output: string;
  cacheDir: string;
  force?: boolean;
  /** `--var name=value` values to store in the manifest (the caller refuses sensitive ones). */
  vars?: string[];
  /** Base images and ISOs given as URLs, from the download cache (carried.ts templateDownloads). */
  downloads?: CarriedDownload[];
}

export interface WrittenBundle {
  file: string;
  sha256: string;
  size: number;
  members: number;
  manifest: BundleManifest;
  /** The folder the tree's paths are relative to (the deepest one holding the template and every input). */
  root: string;
}

type Source = { name: string; sha256: string; size: number } & ({ file: string } | { bytes: Buffer });

const sha256Of = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export async function writeBundle(o: WriteBundleOptions): Promise<WrittenBundle> {
  const output = path.resolve(o.output);
  if (existsSync(output) && !o.force)
    throw new KilnError(`${o.output} exists`, { fix: `give another -o, or --force to replace it` });
  const inputs = templateInputs(o.template, o.varFiles ?? []);
  const root = commonRoot(inputs.map((i) => i.abs));
  const members = new Map<string, Source>();
  const tree: BundleManifest['tree'] = [];
  for (const i of inputs) {
    if (i.abs === output) continue;
    const sha256 = await cachedFileDigest(i.abs, o.cacheDir);
    tree.push({ path: path.relative(root, i.abs), sha256, size: i.size, executable: i.executable });
    members.set(blobMember(sha256), { name: blobMember(sha256), sha256, size: i.size, file: i.abs });
  }
  const downloads = (o.downloads ?? []).map(({ url, sha256, size, file }) => {
    if (!members.has(blobMember(sha256)))
      members.set(blobMember(sha256), { name: blobMember(sha256), sha256, size, file });
    return { url, sha256, size };
  });
  let packages = 0;
  if (o.recordingDir && existsSync(PackageStore.indexFile(o.recordingDir))) {
    const store = new PackageStore(o.recordingDir);
    const responses = store.responses();
    packages = responses.length;
    const index = Buffer.from(JSON.stringify({ version: 1, responses }, null, 1) + '\n');
    members.set(PACKAGES_INDEX_MEMBER, {
      name: PACKAGES_INDEX_MEMBER,
      sha256: sha256Of(index),
      size: index.length,
      bytes: index,
    });
    for (const r of responses) {
      const name = blobMember(r.sha256);
      if (!members.has(name))
        members.set(name, { name, sha256: r.sha256, size: r.size, file: store.blobPath(r.sha256) });
    }
  }
  if (o.kilnTarball) {
    const size = statSync(o.kilnTarball).size;
    members.set(KILN_MEMBER, {
      name: KILN_MEMBER,
      sha256: await cachedFileDigest(o.kilnTarball, o.cacheDir),
      size,
      file: o.kilnTarball,
    });
  }
  const sorted = [...members.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const manifest: BundleManifest = {
    kind: 'kiln-bundle',
    version: 2,
    kilnVersion,
    root,
    template: path.relative(root, path.resolve(o.template.file)),
    varFiles: (o.varFiles ?? []).map((f) => path.relative(root, path.resolve(f))),
    tree,
    packages,
    ...(o.vars?.length ? { vars: o.vars } : {}),
    ...(downloads.length ? { downloads } : {}),
    members: sorted.map(({ name, sha256, size }) => ({ name, sha256, size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 1) + '\n');

  const partial = `${output}.partial-${randomBytes(4).toString('hex')}`;
  try {
    const { sha256, size } = await writeTar(partial, [
      { name: MANIFEST_MEMBER, sha256: sha256Of(manifestBytes), size: manifestBytes.length, bytes: manifestBytes },
      ...sorted,
    ]);
    renameSync(partial, output);
    return { file: output, sha256, size, members: sorted.length + 1, manifest, root };
  } catch (e) {
    rmSync(partial, { force: true });
    throw e;
  }
}

const header = (name: string, size: number): tar.Header => ({
  name,
  size,
  mode: 0o644,
  mtime: new Date(0),
  uid: 0,
  gid: 0,
  uname: '',
  gname: '',
  type: 'file',
  linkname: '',
  devmajor: 0,
  devminor: 0,
});

async function writeTar(file: string, sources: Source[]): Promise<{ sha256: string; size: number }> {
  const pack = tar.pack();
  const whole = createHash('sha256');
  let size = 0;
  const out = createWriteStream(file, { mode: 0o644 });
  const written = new Promise<void>((resolve, reject) => {
    out.on('finish', resolve);
    out.on('error', reject);
  });
  pack.on('data', (data: unknown) => {
    const chunk = data as Buffer;
    whole.update(chunk);
    size += chunk.length;
    if (!out.write(chunk)) {
      pack.pause();
      out.once('drain', () => pack.resume());
    }
  });
  const packEnded = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const s of sources) {
    if ('bytes' in s) {
      await new Promise<void>((resolve, reject) =>
        pack.entry(header(s.name, s.size), s.bytes, (err) => (err ? reject(err) : resolve())),
      );
      continue;
    }
    const hash = createHash('sha256');
    let seen = 0;
    await new Promise<void>((resolve, reject) => {
      const entry = pack.entry(header(s.name, s.size), (err) => (err ? reject(err) : resolve()));
      const meter = new Transform({
        transform(chunk: Buffer, _e, done) {
          hash.update(chunk);
          seen += chunk.length;
          done(null, chunk);
        },
      });
      const input = createReadStream(s.file, { start: 0, end: Math.max(0, s.size - 1) });
      input.on('error', reject);
      if (s.size === 0) {
        input.destroy();
        (entry as unknown as NodeJS.WritableStream).end();
        return;
      }
      input.pipe(meter).pipe(entry as unknown as NodeJS.WritableStream);
    });
    const got = s.size === 0 ? sha256Of(Buffer.alloc(0)) : hash.digest('hex');
    if (seen !== s.size || got !== s.sha256) {
      throw new KilnError(
        `${s.file} changed while the bundle was written (expected sha256 ${s.sha256}, ${s.size} bytes; read ${got}, ${seen} bytes)`,
        { fix: `let whatever writes it finish, then bundle again` },
      );
    }
  }
  pack.finalize();
  await packEnded;
  out.end();
  await written;
  // Whatever was written must be on disk before the rename makes it the bundle.
  return { sha256: whole.digest('hex'), size };
}
