/**
 * Folder transfers over an exec channel instead of SFTP: one tar stream into `tar -x` in the guest (or
 * out of `tar -c`), so a thousand small files cost one stream, not a thousand opens, writes and
 * closes. Single files go by SFTP (see sftp-parallel.ts), which measured as fast. This file holds the
 * pure parts: the guest's shell commands, the checks on tar entries read from a guest, and the
 * progress throttle.
 */
import path from 'node:path';
import { shellQuote } from './remote-command.js';

/** Asks whether the guest has what the stream path needs (busybox's applets will do). */
export const probeCommand = 'for t in tar mkdir; do command -v $t >/dev/null 2>&1 || exit 1; done; echo kiln-stream-ok';

/** Reads the probe's output; anything unexpected (a shell that is not POSIX) means SFTP only. */
export function parseProbe(stdout: string): boolean {
  return stdout.split('\n').some((l) => l.trim() === 'kiln-stream-ok');
}

/**
 * Extracts a tar stream from stdin into `target` (made if missing, as SFTP's mkdir; its parent must
 * exist). The folders are made first with the guest's umask, as SFTP makes them; then the files come
 * out with the archive's exact modes (umask 0), owned by the SSH user (-o), stamped now (-m).
 */
export function extractCommand(target: string, dirs: readonly string[]): string {
  const t = shellQuote(target);
  const mk = dirs.length ? `mkdir -p -- ${dirs.map((d) => shellQuote(d)).join(' ')} || exit 1\n` : '';
  return `mkdir ${t} 2>/dev/null; cd ${t} || exit 1\n${mk}umask 0\nexec tar -x -o -m -f -`;
}

/**
 * Writes `source` as a tar stream to stdout: the folder itself under its name, or (`contents`) what
 * is in it. A source that is not a folder exits 3 with nothing written.
 */
export function archiveCommand(source: string, contents: boolean): string {
  const s = shellQuote(source);
  if (contents) return `[ -d ${s} ] || exit 3\ncd ${s} || exit 1\nexec tar -c -f - .`;
  const parent = shellQuote(path.posix.dirname(source.replace(/\/+$/, '')) || '/');
  const name = shellQuote(path.posix.basename(source.replace(/\/+$/, '')));
  return `[ -d ${s} ] || exit 3\ncd ${parent} || exit 1\nexec tar -c -f - ${name}`;
}

/** The command is too long for one SSH exec request (OpenSSH takes 256 KiB; stay far below). */
export const maxCommandLength = 64 * 1024;

/** Folders that hold no other folder: `mkdir -p` of these makes them all. */
export function leafDirectories(dirs: readonly string[]): string[] {
  const set = new Set(dirs);
  const parents = new Set<string>();
  for (const d of set) {
    const p = path.posix.dirname(d);
    if (p !== d && p !== '.') parents.add(p);
  }
  return [...set].filter((d) => !parents.has(d));
}

/** A tar entry kiln refuses to extract: it would land outside the destination. */
export class UnsafeEntryError extends Error {}

/**
 * The path of a tar entry relative to the extraction root, normalized (`./a//b/` -> `a/b`), or '' for
 * the root itself. Absolute paths and any `..` are refused: a guest's archive must not reach out.
 */
export function safeEntryPath(name: string): string {
  if (name.includes('\0')) throw new UnsafeEntryError(`tar entry ${JSON.stringify(name)} holds a NUL byte`);
  if (name.startsWith('/')) throw new UnsafeEntryError(`tar entry ${JSON.stringify(name)} is an absolute path`);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new UnsafeEntryError(`tar entry ${JSON.stringify(name)} climbs out with ".."`);
  return parts.join('/');
}

/**
 * Whether a symbolic link at `entry` (a safe entry path) pointing to `target` stays inside the
 * extraction root: relative, its `..` only leading and never above the root. `entry` is where the link
 * really is (its folder resolved through links already extracted).
 */
export function linkStaysInside(entry: string, target: string): boolean {
  if (target === '' || target.startsWith('/') || target.includes('\0')) return false;
  const depth = entry.split('/').length - 1; // folders between the root and the link
  let at = depth;
  let descended = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      // "a/.." climbs from wherever a symlink "a" leads, not from "a"'s folder: refused.
      if (descended || --at < 0) return false;
    } else {
      at++;
      descended = true;
    }
  }
  return true;
}

/**
 * Calls `emit` at most once per `intervalMs` (the first call and the last — done reaching total —
 * always go through), so a transfer of many small writes does not flood the event stream.
 */
export function throttleProgress(
  emit: (done: number, total: number | undefined) => void,
  intervalMs: number,
  now: () => number = Date.now,
): (done: number, total: number | undefined) => void {
  let last: number | undefined;
  let finished = false;
  return (done, total) => {
    if (finished) return;
    const t = now();
    const complete = total !== undefined && done >= total;
    if (!complete && last !== undefined && t - last < intervalMs) return;
    last = t;
    finished = complete;
    emit(done, total);
  };
}
