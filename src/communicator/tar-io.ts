/**
 * The host's side of directory transfers as tar streams: a local folder packed as it is read (files
 * in 1 MiB chunks with backpressure, never held in memory), and a guest's archive extracted into a
 * folder without letting any entry land outside it (see safeEntryPath, linkStaysInside), nor take
 * more than its limits, nor give the host a mode the guest should not choose (see download-guard.ts).
 */
import { createReadStream, createWriteStream, readdirSync, statSync } from 'node:fs';
import { chmod, link, lstat, mkdir, readdir, realpath, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { DownloadBudget, hostMode, unlimited, type DownloadLimits } from './download-guard.js';
import { linkStaysInside, safeEntryPath, UnsafeEntryError } from './stream-transfer.js';

export interface LocalTree {
  /** Folders relative to the root ('' is the root itself), parents before children. */
  dirs: string[];
  files: { local: string; rel: string; mode: number; size: number }[];
  total: number;
}

/** Walks `root` as the SFTP path does: folders and regular files; links and other kinds are left out. */
export function walkLocal(root: string): LocalTree {
  const dirs: string[] = [];
  const files: LocalTree['files'] = [];
  const walk = (dir: string, rel: string) => {
    dirs.push(rel);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const l = path.join(dir, entry.name);
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(l, r);
      else if (entry.isFile()) {
        const s = statSync(l);
        files.push({ local: l, rel: r, mode: s.mode & 0o777, size: s.size });
      }
    }
  };
  walk(root, '');
  return { dirs, files, total: files.reduce((n, f) => n + f.size, 0) };
}

/**
 * The files of `tree` as a tar stream (no folder entries: the guest makes those itself, so existing
 * folders keep their modes). Owner 0 and now as mtime; the guest extracts with -o -m anyway.
 */
export function packTree(tree: LocalTree, onBytes: (n: number) => void): Readable {
  const pack = tarStream.pack();
  const mtime = new Date();
  void (async () => {
    for (const f of tree.files) {
      let sink!: ReturnType<typeof pack.entry>;
      const done = new Promise<void>((resolve, reject) => {
        sink = pack.entry({ name: f.rel, size: f.size, mode: f.mode, uid: 0, gid: 0, mtime, type: 'file' }, (err) =>
          err ? reject(err) : resolve(),
        );
      });
      done.catch(() => undefined);
      sink.on('error', () => undefined);
      for await (const chunk of createReadStream(f.local, { highWaterMark: 1 << 20 })) {
        onBytes((chunk as Buffer).length);
        if (!sink.write(chunk as Buffer))
          await new Promise<void>((resolve, reject) => {
            if (sink.destroying) {
              reject(new Error('the archive stream was stopped'));
              return;
            }
            sink.once('drain', resolve);
            sink.once('close', () => reject(new Error('the archive stream was stopped')));
          });
      }
      sink.end(undefined);
      await done; // a file that changed size while read fails here ("size mismatch")
    }
    pack.finalize();
  })().catch((e: unknown) => pack.destroy(e instanceof Error ? e : new Error(String(e))));
  return Readable.from(coalesce(pack, 256 * 1024));
}

/**
 * Joins small chunks (a 512-byte header, a small file's data) into writes of `limit` bytes: each write
 * to the channel is an SSH packet, and a TCG guest's sshd pays for every one.
 */
async function* coalesce(source: AsyncIterable<unknown>, limit: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    const c = chunk as Buffer;
    if (size === 0 && c.length >= limit) {
      yield c;
      continue;
    }
    parts.push(c);
    size += c.length;
    if (size >= limit) {
      yield Buffer.concat(parts);
      parts = [];
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(parts);
}

/** A guest's archive being extracted: write the tar stream to `output`. */
export interface Extraction {
  output: Writable;
  /**
   * The modes its folders get (by path relative to the root), once they are where they stay (see
   * applyFolderModes); until then they stay writable, so that their files can be written and moved.
   */
  folderModes: Map<string, number>;
}

/**
 * Extracts a tar stream into `root` (which must exist): folders, regular files, symbolic links that
 * stay inside, hard links to files already extracted. Devices, FIFOs and the like are skipped. Modes
 * are the guest's through hostMode (no setuid/setgid/sticky, no world-write, the host's umask). An
 * entry that would land outside `root` fails the stream with UnsafeEntryError; so does one whose folder
 * turns out (through a link) to lead outside. An entry past `limits` fails it with DownloadLimitError
 * before any of it is written.
 */
export function extractTo(
  root: string,
  onBytes: (n: number) => void,
  limits: DownloadLimits = unlimited,
  umask = process.umask(),
): Extraction {
  const extract = tarStream.extract();
  const budget = new DownloadBudget(limits);
  const folderModes = new Map<string, number>();
  let realRoot: string | undefined;
  const inside = async (rel: string): Promise<string> => {
    // The entry's folder, resolved through any links already extracted, must still be under root.
    realRoot ??= await realpath(root);
    const parent = await realpath(path.join(root, path.dirname(rel)));
    const relParent = path.relative(realRoot, parent);
    if (relParent.startsWith('..') || path.isAbsolute(relParent))
      throw new UnsafeEntryError(`tar entry ${JSON.stringify(rel)} leads outside the destination through a link`);
    return relParent === '' ? path.basename(rel) : `${relParent.split(path.sep).join('/')}/${path.basename(rel)}`;
  };
  extract.on('entry', (header, stream, next) => {
    // A failed extraction destroys the entry's stream with its error: reported once, by the extract.
    stream.on('error', () => undefined);
    void (async () => {
      const rel = safeEntryPath(header.name);
      budget.admit(rel || '.', header.size ?? 0);
      const dest = path.join(root, rel);
      if (header.type === 'directory') {
        if (rel !== '') {
          await inside(rel);
          await mkdir(dest, { recursive: true, mode: 0o700 });
        }
        folderModes.set(rel, hostMode(header.mode ?? 0o755, umask));
        stream.resume();
      } else if (rel === '') {
        throw new UnsafeEntryError(`tar entry ${JSON.stringify(header.name)} names the destination itself`);
      } else if (header.type === 'file' || header.type === 'contiguous-file') {
        await inside(rel);
        await rm(dest, { force: true }); // never write through a link left at that name
        const out = createWriteStream(dest, { mode: 0o600 });
        await pipeline(
          stream as unknown as AsyncIterable<Buffer>,
          async function* (src: AsyncIterable<unknown>) {
            for await (const c of src) {
              onBytes((c as Buffer).length);
              yield c as Buffer;
            }
          },
          out,
        );
        await chmod(dest, hostMode(header.mode ?? 0o644, umask));
      } else if (header.type === 'symlink') {
        const at = await inside(rel);
        if (!linkStaysInside(at, header.linkname ?? ''))
          throw new UnsafeEntryError(
            `tar entry ${JSON.stringify(header.name)} is a link to ${JSON.stringify(header.linkname)}, outside the destination`,
          );
        await rm(dest, { force: true, recursive: true });
        await symlink(header.linkname!, dest);
        stream.resume();
      } else if (header.type === 'link') {
        await inside(rel);
        const target = safeEntryPath(header.linkname ?? '');
        const real = await inside(target);
        if (!(await lstat(path.join(root, real))).isFile())
          throw new UnsafeEntryError(
            `tar entry ${JSON.stringify(header.name)} is a hard link to ${JSON.stringify(header.linkname)}, not a file extracted before it`,
          );
        await rm(dest, { force: true });
        await link(path.join(root, real), dest);
        stream.resume();
      } else {
        stream.resume(); // device, FIFO, ...: not copied (SFTP transfers only files and folders either)
      }
    })().then(
      () => next(),
      (e: unknown) => {
        stream.resume();
        next(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
  return { output: extract as unknown as Writable, folderModes };
}

/**
 * Gives the folders under `root` their modes, except those in `keep` (folders that were there before,
 * which keep theirs). Deepest first, so that a read-only folder does not stop its subfolders' chmod.
 */
export async function applyFolderModes(
  root: string,
  modes: Map<string, number>,
  keep: ReadonlySet<string> = new Set(),
): Promise<void> {
  for (const [rel, mode] of [...modes].sort(([a], [b]) => b.length - a.length)) {
    if (!keep.has(rel)) await chmod(path.join(root, rel), mode);
  }
}

/**
 * Moves an extraction from `from` into `to` (see mergeInto), then gives the folders it brought their
 * modes; folders already in `to` keep theirs, as an upload leaves them.
 */
export async function settleInto(from: string, to: string, folderModes: Map<string, number>): Promise<void> {
  const existing = new Set<string>();
  for (const rel of folderModes.keys())
    if ((await lstat(path.join(to, rel)).catch(() => undefined))?.isDirectory()) existing.add(rel);
  await mergeInto(from, to);
  await applyFolderModes(to, folderModes, existing);
}

/**
 * Moves what `from` holds into `to` (a folder that may already hold files: like SFTP, existing files
 * are replaced, others kept), then removes `from`. Renames only: both are on one file system.
 */
export async function mergeInto(from: string, to: string): Promise<void> {
  let exists = true;
  try {
    await lstat(to);
  } catch {
    exists = false;
  }
  if (!exists) {
    await rename(from, to);
    return;
  }
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    const there = await lstat(dst).catch(() => undefined);
    if (entry.isDirectory() && there?.isDirectory()) await mergeInto(src, dst);
    else {
      if (there?.isDirectory()) await rm(dst, { recursive: true });
      await rename(src, dst);
    }
  }
  await rm(from, { recursive: true, force: true });
}
