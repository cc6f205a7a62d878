/**
 * What a bundle's manifest may say, checked before anything is laid out or served from it. A manifest
 * is self-declared (whoever edits a member can rewrite the manifest to match), so its paths and digests
 * are treated as hostile: member names are fixed forms, digests are 64 hex digits (a blob's name, never
 * a path), and the template, var-files and tree are relative paths that stay inside the unpacked tree.
 */
import { KILN_MEMBER, PACKAGES_INDEX_MEMBER, blobMember, type BundleManifest } from './bundle-format.js';
import { SHA256_HEX } from './store.js';
import { KilnError } from '../util/errors.js';

export class BundleError extends KilnError {}

/** The only member names a bundle holds besides its manifest. */
export function isSafeMemberName(name: string): boolean {
  return name === PACKAGES_INDEX_MEMBER || name === KILN_MEMBER || /^blobs\/[0-9a-f]{64}$/.test(name);
}

/** Why `p` is not a plain relative path that stays below its root, or undefined when it is one. */
export function unsafeRelativePath(p: unknown): string | undefined {
  if (typeof p !== 'string' || p === '') return 'is not a non-empty string';
  if (p.length > 4096) return 'is longer than 4096 characters';
  // Control characters (NUL, CR LF) have no place in a file name kiln wrote.
  if (/[\u0000-\u001f\u007f]/.test(p)) return 'holds control characters';
  if (p.startsWith('/')) return 'is absolute (a bundle holds paths relative to its tree)';
  const parts = p.split('/');
  if (parts.some((s) => s === '..')) return 'climbs out with ".."';
  if (parts.some((s) => s === '' || s === '.')) return 'has an empty or "." component';
  return undefined;
}

/** Throws a BundleError naming the field and the bundle when the manifest could read or serve anything outside the bundle. */
export function checkManifest(m: unknown, file: string): BundleManifest {
  const bad = (field: string, why: string) =>
    new BundleError(`${file}: manifest.json's ${field} ${why}: the bundle was altered or is not kiln's`, {
      fix: `use the bundle as kiln bundle wrote it (or write it again)`,
    });
  if (!m || typeof m !== 'object') throw bad('top level', 'is not an object');
  const o = m as Record<string, unknown>;
  if (o.kind !== 'kiln-bundle' || (o.version !== 1 && o.version !== 2))
    throw new BundleError(
      `${file}: manifest.json is not a kiln bundle manifest (version 1 or 2)${o.kind === 'kiln-bundle' && typeof o.version === 'number' && o.version > 2 ? `: version ${o.version} was written by a newer kiln\n  fix: build it with the kiln that wrote it (kiln bundle --with-kiln carries it)` : ''}`,
    );
  if (!Array.isArray(o.members)) throw bad('members', 'is not a list');
  const members = new Map<string, { sha256: string; size: number }>();
  o.members.forEach((x: unknown, i) => {
    const e = x as { name?: unknown; sha256?: unknown; size?: unknown } | null;
    const field = `members[${i}]`;
    if (!e || typeof e !== 'object') throw bad(field, 'is not an object');
    if (typeof e.name !== 'string' || !isSafeMemberName(e.name))
      throw bad(
        `${field}.name`,
        `${JSON.stringify(e.name)?.slice(0, 200)} is not a member name kiln writes (manifest.json, ${PACKAGES_INDEX_MEMBER}, ${KILN_MEMBER}, blobs/<sha256>)`,
      );
    if (members.has(e.name)) throw bad(`${field}.name`, `"${e.name}" is listed twice`);
    if (typeof e.sha256 !== 'string' || !SHA256_HEX.test(e.sha256))
      throw bad(`${field}.sha256`, 'is not 64 lower-case hex digits');
    if (e.name.startsWith('blobs/') && e.name !== blobMember(e.sha256))
      throw bad(`${field}`, `names ${e.name} but its sha256 is ${e.sha256} (a blob is named by its digest)`);
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) throw bad(`${field}.size`, 'is not a byte count');
    members.set(e.name, { sha256: e.sha256, size: e.size as number });
  });
  if (!Number.isSafeInteger(o.packages) || (o.packages as number) < 0) throw bad('packages', 'is not a count');
  if (!Array.isArray(o.tree)) throw bad('tree', 'is not a list');
  const paths = new Set<string>();
  o.tree.forEach((x: unknown, i) => {
    const e = x as { path?: unknown; sha256?: unknown; size?: unknown; executable?: unknown } | null;
    const field = `tree[${i}]`;
    if (!e || typeof e !== 'object') throw bad(field, 'is not an object');
    const why = unsafeRelativePath(e.path);
    if (why) throw bad(`${field}.path`, `${JSON.stringify(e.path)?.slice(0, 200)} ${why}`);
    const p = e.path as string;
    if (paths.has(p)) throw bad(`${field}.path`, `"${p}" is listed twice`);
    paths.add(p);
    if (typeof e.sha256 !== 'string' || !SHA256_HEX.test(e.sha256))
      throw bad(
        `${field}.sha256`,
        `${JSON.stringify(e.sha256)?.slice(0, 200)} is not 64 lower-case hex digits (a file in the tree is a blob named by its digest, never a path)`,
      );
    const blob = members.get(blobMember(e.sha256));
    if (!blob) throw bad(`${field}.sha256`, `names blobs/${e.sha256}, which is not a member`);
    if (e.size !== blob.size)
      throw bad(`${field}.size`, `is ${JSON.stringify(e.size)}, but blobs/${e.sha256} holds ${blob.size} bytes`);
    if (typeof e.executable !== 'boolean') throw bad(`${field}.executable`, 'is not true or false');
  });
  // A file cannot also be a directory of another entry ("a" and "a/b").
  for (const p of paths) {
    const parts = p.split('/');
    for (let n = 1; n < parts.length; n++) {
      const dir = parts.slice(0, n).join('/');
      if (paths.has(dir)) throw bad('tree', `lists "${dir}" as a file and as the directory of "${p}"`);
    }
  }
  const inTree = (field: string, v: unknown) => {
    const why = unsafeRelativePath(v);
    if (why) throw bad(field, `${JSON.stringify(v)?.slice(0, 200)} ${why}`);
    if (!paths.has(v as string)) throw bad(field, `"${v as string}" is not a file of the bundle's tree`);
  };
  inTree('template', o.template);
  if (!Array.isArray(o.varFiles)) throw bad('varFiles', 'is not a list');
  o.varFiles.forEach((v, i) => inTree(`varFiles[${i}]`, v));
  if (typeof o.kilnVersion !== 'string') throw bad('kilnVersion', 'is not a string');
  checkVersion2Fields(o, members, bad);
  return m as BundleManifest;
}

/** root, vars and downloads (version 2): checked as hostile like the rest. */
function checkVersion2Fields(
  o: Record<string, unknown>,
  members: Map<string, { sha256: string; size: number }>,
  bad: (field: string, why: string) => BundleError,
): void {
  if (o.root !== undefined) {
    const r = o.root;
    if (
      typeof r !== 'string' ||
      !r.startsWith('/') ||
      r.length > 4096 ||
      /[\u0000-\u001f\u007f]/.test(r) ||
      r.split('/').some((s) => s === '..' || s === '.')
    ) {
      throw bad('root', `${JSON.stringify(r)?.slice(0, 200)} is not an absolute path without "." or ".." components`);
    }
  }
  if (o.vars !== undefined) {
    if (!Array.isArray(o.vars)) throw bad('vars', 'is not a list');
    o.vars.forEach((v, i) => {
      if (typeof v !== 'string' || !/^[A-Za-z_][\w-]*=/.test(v) || v.length > 65536)
        throw bad(`vars[${i}]`, 'is not a name=value string');
    });
  }
  if (o.downloads !== undefined) {
    if (!Array.isArray(o.downloads)) throw bad('downloads', 'is not a list');
    o.downloads.forEach((x: unknown, i) => {
      const d = x as { url?: unknown; sha256?: unknown; size?: unknown } | null;
      if (!d || typeof d !== 'object') throw bad(`downloads[${i}]`, 'is not an object');
      if (typeof d.url !== 'string' || !/^https?:\/\/[^\s\u0000-\u001f\u007f]+$/.test(d.url))
        throw bad(`downloads[${i}].url`, 'is not an http(s) URL');
      if (typeof d.sha256 !== 'string' || !SHA256_HEX.test(d.sha256))
        throw bad(`downloads[${i}].sha256`, 'is not 64 lower-case hex digits');
      const blob = members.get(blobMember(d.sha256));
      if (!blob) throw bad(`downloads[${i}].sha256`, `names blobs/${d.sha256}, which is not a member`);
      if (d.size !== blob.size)
        throw bad(
          `downloads[${i}].size`,
          `is ${JSON.stringify(d.size)}, but blobs/${d.sha256} holds ${blob.size} bytes`,
        );
    });
  }
}
