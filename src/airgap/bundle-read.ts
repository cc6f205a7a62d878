/**
 * Opens a bundle for an offline build. The whole file is hashed first: with a pin (--sha256) a
 * different bundle is refused before any of it is parsed; the digest also names the unpacked copy
 * (`<cache>/airgap/bundles/<sha256>/`), so a bundle already unpacked is reused as is, and a second
 * build from the same bundle never replaces the tree a running one uses. Unpacking reads the manifest
 * (the tar's first member) and checks what it says (bundle-check.ts: no path or digest can reach
 * outside the bundle), then streams every other member into a staging directory while hashing it, and
 * refuses the bundle, naming the member, when a digest or size differs, a member is missing, is not a
 * regular file, or one the manifest does not list is present. Only a bundle that verified whole is
 * renamed into place, its tree laid out from the blobs (hard links) and made read-only.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import {
  KILN_MEMBER,
  MANIFEST_MEMBER,
  PACKAGES_INDEX_MEMBER,
  blobMember,
  type BundleManifest,
} from './bundle-format.js';
import { BundleError, checkManifest, isSafeMemberName } from './bundle-check.js';
import { IndexError, SHA256_HEX, validateIndex } from './store.js';
import { markBundleInUse } from './unpacked.js';

export { BundleError } from './bundle-check.js';

export interface OpenedBundle {
  /** Where it was unpacked (in the cache). */
  dir: string;
  /** The bundle file's SHA-256 (what `kiln bundle` prints and --sha256 pins). */
  sha256: string;
  /** False when an earlier run had unpacked this very bundle already. */
  unpacked: boolean;
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

export interface OpenBundleOptions {
  /** The bundle's expected SHA-256 (kiln build --sha256): checked before anything in it is read. */
  sha256?: string;
}

/** Written last into an unpacked bundle: a directory without it is not whole. */
const COMPLETE = '.complete';
/** A manifest bigger than this is not one kiln wrote (it lists files, not their content). */
const MAX_MANIFEST_BYTES = 64 * 2 ** 20;

const memberPath = (dir: string, name: string) => path.join(dir, ...name.split('/'));

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Verifies `file` (against `o.sha256` when given) and unpacks it into `<cacheDir>/airgap/bundles/<sha256>/`, or reuses that copy. */
export async function openBundle(file: string, cacheDir: string, o: OpenBundleOptions = {}): Promise<OpenedBundle> {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st)
    throw new BundleError(`bundle ${file} does not exist`, { fix: `give the path of a tar written by kiln bundle` });
  if (!st.isFile())
    throw new BundleError(`bundle ${file} is not a file`, { fix: `give the path of a tar written by kiln bundle` });
  const pin = o.sha256?.toLowerCase();
  if (pin !== undefined && !SHA256_HEX.test(pin))
    throw new BundleError(`--sha256 "${o.sha256}" is not a SHA-256 (64 hex digits)`, {
      fix: `give the digest kiln bundle printed (also in ${path.basename(file)}.sha256 beside the bundle)`,
    });
  const sha256 = await fileSha256(file);
  if (pin !== undefined && pin !== sha256) {
    throw new BundleError(
      `bundle ${file} has sha256 ${sha256}, not ${pin} as --sha256 says: it is not the bundle you pinned (changed, damaged or another one); nothing in it was used`,
      { fix: `get the bundle again from where it was written and compare with the sha256 kiln bundle printed there` },
    );
  }
  const bundlesDir = path.join(cacheDir, 'airgap', 'bundles');
  const dir = path.join(bundlesDir, sha256);
  let unpacked = false;
  if (!existsSync(path.join(dir, COMPLETE))) {
    mkdirSync(bundlesDir, { recursive: true });
    const staging = path.join(bundlesDir, `.partial-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      await unpack(file, staging);
      renameSync(staging, dir);
      unpacked = true;
    } catch (e) {
      rmSync(staging, { recursive: true, force: true });
      // Another kiln unpacked the same bundle meanwhile: use its copy (the same bytes, verified).
      const code = (e as NodeJS.ErrnoException).code;
      if (!((code === 'ENOTEMPTY' || code === 'EEXIST') && existsSync(path.join(dir, COMPLETE)))) {
        if (e instanceof BundleError) throw e;
        throw new BundleError(`${file}: cannot read the bundle: ${(e as Error).message}`, {
          fix: `copy it again (a truncated or damaged tar)`,
        });
      }
    }
  }
  markBundleInUse(dir);
  // Last use, for kiln cache prune (least recently used first).
  const now = new Date();
  utimesSync(path.join(dir, COMPLETE), now, now);
  let manifest: BundleManifest;
  try {
    manifest = checkManifest(JSON.parse(readFileSync(path.join(dir, MANIFEST_MEMBER), 'utf8')), file);
  } catch (e) {
    // Only a copy changed in the cache after it was verified gets here.
    throw new BundleError(`${file}: the unpacked copy in ${dir} is damaged (${(e as Error).message.split('\n')[0]})`, {
      fix: `remove it (kiln cache prune, or delete that directory), then build again`,
    });
  }
  const treeRoot = path.join(dir, 'tree');
  const inTree = (field: string, rel: string) => {
    const p = path.join(treeRoot, rel);
    // Laid out by kiln as regular files; refuse anything that resolves out of the tree (a symlink put there since).
    let inside = false;
    try {
      inside = lstatSync(p).isFile() && realpathSync(p).startsWith(realpathSync(treeRoot) + path.sep);
    } catch {
      inside = false;
    }
    if (!inside)
      throw new BundleError(
        `${file}: manifest.json's ${field} "${rel}" is not a file inside the unpacked tree ${treeRoot}`,
        { fix: `kiln cache prune removes unpacked bundles; then build again` },
      );
    return p;
  };
  return {
    dir,
    sha256,
    unpacked,
    manifest,
    treeRoot,
    template: inTree('template', manifest.template),
    varFiles: manifest.varFiles.map((f, i) => inTree(`varFiles[${i}]`, f)),
    packagesDir: path.join(dir, 'packages'),
    blobsDir: path.join(dir, 'blobs'),
    kilnTarball: manifest.members.some((m) => m.name === KILN_MEMBER) ? path.join(dir, KILN_MEMBER) : undefined,
  };
}

/** Streams the tar into `staging`, verifying every member, then lays out the tree and marks it whole. */
async function unpack(file: string, staging: string): Promise<void> {
  mkdirSync(staging, { recursive: true });
  let manifest: BundleManifest | undefined;
  const expected = new Map<string, { sha256: string; size: number }>();
  const seen = new Set<string>();
  const extract = tar.extract();
  const input = createReadStream(file);
  input.on('error', (e) => extract.destroy(e));
  input.pipe(extract as unknown as NodeJS.WritableStream);
  for await (const entry of extract) {
    const { name, type } = entry.header;
    const shown = JSON.stringify(name).slice(0, 300);
    if (type !== 'file') {
      throw new BundleError(
        `${file}: member ${shown} is a ${type}${entry.header.linkname ? ` (-> ${JSON.stringify(entry.header.linkname).slice(0, 300)})` : ''}: a kiln bundle holds regular files only, so the bundle was altered`,
        { fix: `use the bundle as kiln bundle wrote it (or write it again)` },
      );
    }
    if (!manifest) {
      if (name !== MANIFEST_MEMBER)
        throw new BundleError(`${file}: the first member is ${shown}, not ${MANIFEST_MEMBER}: not a kiln bundle`, {
          fix: `give a tar written by kiln bundle`,
        });
      if ((entry.header.size ?? 0) > MAX_MANIFEST_BYTES)
        throw new BundleError(
          `${file}: ${MANIFEST_MEMBER} is ${entry.header.size} bytes, more than a kiln manifest: not a kiln bundle`,
        );
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      const bytes = Buffer.concat(chunks);
      let parsed: unknown;
      try {
        parsed = JSON.parse(bytes.toString('utf8'));
      } catch (e) {
        throw new BundleError(`${file}: ${MANIFEST_MEMBER} is not JSON (${(e as Error).message})`, {
          fix: `the bundle is damaged; copy it again`,
        });
      }
      manifest = checkManifest(parsed, file);
      writeFileSync(path.join(staging, MANIFEST_MEMBER), bytes, { mode: 0o444 });
      for (const m of manifest.members) expected.set(m.name, m);
      continue;
    }
    const want = expected.get(name);
    if (!want || !isSafeMemberName(name) || seen.has(name)) {
      throw new BundleError(
        `${file}: member ${shown} is not listed in the bundle's manifest${seen.has(name) ? ' (it appears twice)' : ''}: the bundle was altered`,
        { fix: `use the bundle as kiln bundle wrote it (or write it again)` },
      );
    }
    seen.add(name);
    const dest = memberPath(staging, name);
    mkdirSync(path.dirname(dest), { recursive: true });
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _e, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    await pipeline(
      entry as unknown as NodeJS.ReadableStream,
      meter,
      createWriteStream(dest, { mode: 0o444, flags: 'wx' }),
    );
    const got = hash.digest('hex');
    if (got !== want.sha256 || size !== want.size) {
      throw new BundleError(
        `${file}: member "${name}" is tampered or damaged: sha256 ${got} (${size} bytes), the manifest says ${want.sha256} (${want.size} bytes)`,
        { fix: `copy the bundle again from where it was written, or write it again with kiln bundle` },
      );
    }
  }
  if (!manifest) throw new BundleError(`${file} is empty: not a kiln bundle`);
  const missing = [...expected.keys()].filter((n) => !seen.has(n));
  if (missing.length)
    throw new BundleError(
      `${file}: member${missing.length > 1 ? 's' : ''} ${missing.map((m) => `"${m}"`).join(', ')} listed in the manifest ${missing.length > 1 ? 'are' : 'is'} missing (a truncated copy?)`,
      { fix: `copy the bundle again` },
    );
  if (expected.has(PACKAGES_INDEX_MEMBER)) checkPackages(file, staging, expected);
  else if (manifest.packages)
    throw new BundleError(
      `${file}: manifest.json's packages says ${manifest.packages} recorded responses, but there is no ${PACKAGES_INDEX_MEMBER}: the bundle was altered`,
    );
  // Lay the template's tree out from the blobs; every path was checked to stay below tree/.
  const treeRoot = path.join(staging, 'tree');
  for (const t of manifest.tree) {
    const dest = path.join(treeRoot, ...t.path.split('/'));
    mkdirSync(path.dirname(dest), { recursive: true });
    const blob = memberPath(staging, blobMember(t.sha256));
    if (t.executable) {
      copyFileSync(blob, dest);
      chmodSync(dest, 0o555);
    } else linkSync(blob, dest);
  }
  writeFileSync(path.join(staging, COMPLETE), '');
}

/** The recorded package set's index: valid entries (no CR LF in headers, statuses 100-999) whose bodies are members of the size it says. */
function checkPackages(file: string, staging: string, members: Map<string, { sha256: string; size: number }>): void {
  const where = `${file}: ${PACKAGES_INDEX_MEMBER}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(memberPath(staging, PACKAGES_INDEX_MEMBER), 'utf8'));
  } catch (e) {
    throw new BundleError(`${where} is not JSON (${(e as Error).message})`);
  }
  let index;
  try {
    index = validateIndex(parsed, where);
  } catch (e) {
    if (e instanceof IndexError) throw new BundleError(e.message);
    throw e;
  }
  index.responses.forEach((r, i) => {
    const blob = members.get(blobMember(r.sha256));
    if (!blob || blob.size !== r.size) {
      throw new BundleError(
        `${where}: responses[${i}] (${JSON.stringify(r.url).slice(0, 200)}) names blobs/${r.sha256} (${r.size} bytes), which ${blob ? `holds ${blob.size} bytes` : 'is not a member'}: the bundle was altered`,
        { fix: `use the bundle as kiln bundle wrote it (or write it again)` },
      );
    }
  });
}
