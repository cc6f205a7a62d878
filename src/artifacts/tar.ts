/**
 * Shared plumbing for packaged outputs (OVA, Vagrant box, GCE tarball): a scratch directory beside the
 * output, `<out>.partial` renamed into place only on success, errors that name the failing step, and a
 * streaming tar writer (tar-stream, ustar) whose file entries are read in 1 MiB chunks with
 * backpressure, so a disk is never held in memory.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { risingPercent } from '../util/progress.js';

/** A packaging step failed; the message says which output, which step and which tool. */
export class PackageError extends Error {}

/** Runs one named step; any failure is rethrown as "<what> <out>: <step> failed: <cause>". */
export async function step<T>(what: string, out: string, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof PackageError) throw e;
    const detail = e instanceof Error ? e.message : String(e);
    throw new PackageError(`${what} ${out}: ${name} failed: ${detail}`, { cause: e });
  }
}

/**
 * Gives `fn` a scratch directory beside `out` (same file system as the output, so multi-GiB
 * intermediates never land in a small /tmp) and a `<out>.partial` path to write; renames the partial
 * to `out` when `fn` resolves. The scratch directory and any partial are removed either way.
 */
export async function writeAtomically<T>(
  what: string,
  out: string,
  fn: (workDir: string, partial: string) => Promise<T>,
): Promise<T> {
  const partial = `${out}.partial`;
  const workDir = await step(what, out, 'creating a scratch directory beside the output', () =>
    mkdtemp(path.join(path.dirname(out), `.${path.basename(out)}.work-`)),
  );
  try {
    const result = await fn(workDir, partial);
    await step(what, out, `renaming ${path.basename(partial)} into place`, () => rename(partial, out));
    return result;
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

export interface TarFileEntry {
  name: string;
  /** A file streamed into the archive; its size is taken with stat before its header is written. */
  file: string;
  /** Sees every chunk as it is written (digests, progress). */
  onChunk?: (chunk: Buffer) => void;
}

export interface TarDataEntry {
  name: string;
  /** Small contents; a function is called only when the entry's turn comes (e.g. a manifest of digests taken while earlier entries streamed). */
  data: string | Buffer | (() => string | Buffer);
}

export type TarEntry = TarFileEntry | TarDataEntry;

export interface WriteTarOptions {
  gzip?: boolean;
  /** One timestamp for every entry; now by default. */
  mtime?: Date;
  /** Stops writing: the streams are destroyed and the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Writes a ustar archive of `entries`, in order, to `dest` (gzip-compressed if asked). Mode 0644, uid/gid 0. */
export async function writeTar(dest: string, entries: TarEntry[], opts: WriteTarOptions = {}): Promise<void> {
  const pack = tarStream.pack();
  const mtime = opts.mtime ?? new Date();
  // Readable.from pulls from tar-stream's async iterator on demand: backpressure reaches each entry's
  // write() and from there the read loop below.
  const source = Readable.from(pack);
  const written = opts.gzip
    ? pipeline(source, createGzip(), createWriteStream(dest), { signal: opts.signal })
    : pipeline(source, createWriteStream(dest), { signal: opts.signal });
  const produced = (async () => {
    for (const e of entries) {
      const header = { name: e.name, mode: 0o644, uid: 0, gid: 0, mtime, type: 'file' as const };
      if ('file' in e) {
        const { size } = await stat(e.file);
        let sink!: ReturnType<typeof pack.entry>;
        const done = new Promise<void>((resolve, reject) => {
          sink = pack.entry({ ...header, size }, (err) => (err ? reject(err) : resolve()));
        });
        done.catch(() => {
          /* awaited below; a failure mid-stream surfaces through write/drain first */
        });
        sink.on('error', ignore); // reported through `done`, drained() or the pipeline; unhandled it would crash the process
        for await (const chunk of createReadStream(e.file, { highWaterMark: 1 << 20 })) {
          const buf = chunk as Buffer;
          e.onChunk?.(buf);
          if (!sink.write(buf)) await drained(sink);
        }
        sink.end(undefined); // streamx types want an argument; undefined writes nothing
        await done;
      } else {
        const raw = typeof e.data === 'function' ? e.data() : e.data;
        const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
        await new Promise<void>((resolve, reject) => {
          pack
            .entry({ ...header, size: buf.length }, buf, (err) => (err ? reject(err) : resolve()))
            .on('error', ignore);
        });
      }
    }
    pack.finalize();
  })();
  // A failure on either side stops the other: a dead producer destroys the pack (ending the pipeline),
  // a dead pipeline destroys the pack (failing the producer's pending write or entry).
  const results = await Promise.allSettled([
    produced.catch((e: unknown) => {
      pack.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }),
    written.catch((e: unknown) => {
      pack.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }),
  ]);
  // The pipeline's reason first: for a destination failure (ENOSPC, EACCES) it is the root cause, while
  // the producer only saw its entry destroyed; a producer failure reaches the pipeline unchanged.
  opts.signal?.throwIfAborted();
  for (const r of [results[1], results[0]]) if (r?.status === 'rejected') throw r.reason;
}

const ignore = () => {};

type EntrySink = ReturnType<tarStream.Pack['entry']>;

function drained(w: EntrySink): Promise<void> {
  // A destroyed entry drops writes and never drains; its 'close' may already have fired.
  if (w.destroying) return Promise.reject(new Error('tar entry destroyed before it was written'));
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      w.off('drain', onDrain);
      w.off('error', onError);
      w.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      cleanup();
      reject(new Error('tar entry closed before it was written'));
    };
    w.on('drain', onDrain);
    w.on('error', onError);
    w.on('close', onClose);
  });
}

/** Maps fractions of each phase onto one 0-100 scale that never goes backwards. */
export function progressScale(onProgress: ((pct: number) => void) | undefined) {
  const emit = onProgress ? risingPercent(onProgress) : () => undefined;
  return {
    /** A callback for a phase spanning [from, to] of the whole, fed 0-100. */
    phase: (from: number, to: number) => (pct: number) => emit(from + ((to - from) * pct) / 100),
    done: () => emit(100),
  };
}

/** A name safe as a file name inside an archive and as a relative URL (OVF href): [A-Za-z0-9._-], at most 80 characters. */
export function archiveBaseName(name: string): string {
  const safe = name
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._]+/, '')
    .slice(0, 80);
  return safe || 'disk';
}

export const GiB = 2 ** 30;
