/**
 * Opens a bundle for an offline build: reads the manifest (the tar's first member), then streams every
 * other member into the cache while hashing it, and refuses the bundle, naming the member, when a
 * digest or size differs, a member is missing, or one the manifest does not list is present. Only a
 * bundle that verified whole is renamed into place; then the template's tree is laid out from the
 * blobs (hard links), so the template's relative paths resolve as they did where it was recorded.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, createWriteStream, existsSync, linkSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { KILN_MEMBER, MANIFEST_MEMBER, PACKAGES_INDEX_MEMBER, type BundleManifest } from './bundle-format.js';

export class BundleError extends Error {}

export interface OpenedBundle {
  /** Where it was unpacked (in the cache). */
  dir: string;
  manifest: BundleManifest;
  /** The root of the laid-out tree; the template and var-files are inside. */
  treeRoot: string;
  template: string;
  varFiles: string[];
  /** The recorded package set's index directory and its blobs (PackageStore(packagesDir, blobsDir)). */
  packagesDir: string;
  blobsDir: string;
  kilnTarball?: string;
}

const memberPath = (dir: string, name: string) => path.join(dir, ...name.split('/'));

function isSafeName(name: string): boolean {
  return name === PACKAGES_INDEX_MEMBER || name === KILN_MEMBER || /^blobs\/[0-9a-f]{64}$/.test(name);
}

/** Verifies and unpacks `file` into `<cacheDir>/airgap/bundles/<manifest digest>/`. */
export async function openBundle(file: string, cacheDir: string): Promise<OpenedBundle> {
  if (!existsSync(file)) throw new BundleError(`bundle ${file} does not exist\n  fix: give the path of a tar written by kiln bundle`);
  const bundlesDir = path.join(cacheDir, 'airgap', 'bundles');
  mkdirSync(bundlesDir, { recursive: true });
  const staging = path.join(bundlesDir, `.partial-${randomBytes(6).toString('hex')}`);
  mkdirSync(staging, { recursive: true });
  let manifest: BundleManifest | undefined;
  let manifestDigest = '';
  const expected = new Map<string, { sha256: string; size: number }>();
  const seen = new Set<string>();
  try {
    const extract = tar.extract();
    const input = createReadStream(file);
    input.on('error', (e) => extract.destroy(e));
    input.pipe(extract as unknown as NodeJS.WritableStream);
    for await (const entry of extract) {
      const name = entry.header.name;
      if (!manifest) {
        if (name !== MANIFEST_MEMBER) throw new BundleError(`${file}: the first member is "${name}", not ${MANIFEST_MEMBER}: not a kiln bundle\n  fix: give a tar written by kiln bundle`);
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        const bytes = Buffer.concat(chunks);
        manifestDigest = createHash('sha256').update(bytes).digest('hex');
        try { manifest = JSON.parse(bytes.toString('utf8')) as BundleManifest; } catch (e) { throw new BundleError(`${file}: ${MANIFEST_MEMBER} is not JSON (${(e as Error).message})\n  fix: the bundle is damaged; copy it again`); }
        if (manifest.kind !== 'kiln-bundle' || manifest.version !== 1) throw new BundleError(`${file}: ${MANIFEST_MEMBER} is not a kiln bundle manifest (version 1)`);
        for (const m of manifest.members) expected.set(m.name, m);
        continue;
      }
      const want = expected.get(name);
      if (!want || !isSafeName(name) || seen.has(name)) {
        throw new BundleError(`${file}: member "${name}" is not listed in the bundle's manifest${seen.has(name) ? ' (it appears twice)' : ''}: the bundle was altered\n  fix: use the bundle as kiln bundle wrote it (or write it again)`);
      }
      seen.add(name);
      const dest = memberPath(staging, name);
      mkdirSync(path.dirname(dest), { recursive: true });
      const hash = createHash('sha256');
      let size = 0;
      const meter = new Transform({ transform(chunk: Buffer, _e, done) { hash.update(chunk); size += chunk.length; done(null, chunk); } });
      await pipeline(entry as unknown as NodeJS.ReadableStream, meter, createWriteStream(dest, { mode: 0o644 }));
      const got = hash.digest('hex');
      if (got !== want.sha256 || size !== want.size) {
        throw new BundleError(`${file}: member "${name}" is tampered or damaged: sha256 ${got} (${size} bytes), the manifest says ${want.sha256} (${want.size} bytes)\n  fix: copy the bundle again from where it was written, or write it again with kiln bundle`);
      }
    }
    if (!manifest) throw new BundleError(`${file} is empty: not a kiln bundle`);
    const missing = [...expected.keys()].filter((n) => !seen.has(n));
    if (missing.length) throw new BundleError(`${file}: member${missing.length > 1 ? 's' : ''} ${missing.map((m) => `"${m}"`).join(', ')} listed in the manifest ${missing.length > 1 ? 'are' : 'is'} missing (a truncated copy?)\n  fix: copy the bundle again`);
    for (const t of manifest.tree) {
      if (t.path.split('/').includes('..') || path.isAbsolute(t.path) || !expected.has(`blobs/${t.sha256}`)) {
        throw new BundleError(`${file}: the manifest's tree entry "${t.path}" is not a relative path to one of its blobs: the bundle was altered`);
      }
    }
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    if (e instanceof BundleError) throw e;
    throw new BundleError(`${file}: cannot read the bundle: ${(e as Error).message}\n  fix: copy it again (a truncated or damaged tar)`);
  }
  // Lay the template's tree out from the blobs.
  const treeRoot = path.join(staging, 'tree');
  for (const t of manifest.tree) {
    const dest = path.join(treeRoot, t.path);
    mkdirSync(path.dirname(dest), { recursive: true });
    const blob = memberPath(staging, `blobs/${t.sha256}`);
    if (t.executable) { copyFileSync(blob, dest); chmodSync(dest, 0o755); } else linkSync(blob, dest);
  }
  const dir = path.join(bundlesDir, manifestDigest.slice(0, 32));
  rmSync(dir, { recursive: true, force: true });
  renameSync(staging, dir);
  return {
    dir, manifest, treeRoot: path.join(dir, 'tree'),
    template: path.join(dir, 'tree', manifest.template),
    varFiles: manifest.varFiles.map((f) => path.join(dir, 'tree', f)),
    packagesDir: path.join(dir, 'packages'),
    blobsDir: path.join(dir, 'blobs'),
    kilnTarball: expected.has(KILN_MEMBER) ? path.join(dir, KILN_MEMBER) : undefined,
  };
}
