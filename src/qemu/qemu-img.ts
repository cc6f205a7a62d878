/** qemu-img, wrapped: every disk operation kiln performs goes through here. */
import { execa } from 'execa';
import { diesWithKiln, requireExecutable } from './process.js';

export const qemuImgBinary = process.env.KILN_QEMU_IMG ?? 'qemu-img';

let qemuImgFound = false;
/** Checked once, before the first use, so a missing qemu-img says how to get it rather than ENOENT. */
function requireQemuImg(): void {
  if (qemuImgFound) return;
  requireExecutable({ binary: qemuImgBinary, name: 'qemu-img', envVar: 'KILN_QEMU_IMG', aptPackage: 'qemu-utils' });
  qemuImgFound = true;
}

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
  backingFormat?: string;
  /** qcow2 with lazy refcounts: the QEMU that last wrote it did not close it, so its refcounts are stale. */
  dirty: boolean;
}

export class QemuImgError extends Error {
  /** What qemu-img itself printed, without kiln's framing. */
  constructor(message: string, readonly detail: string) { super(message); }
}

/**
 * Runs qemu-img so that it dies with kiln, and stops when `signal` aborts: an interrupted build must
 * not leave a convert writing on after its cleanups, nor after kiln was killed.
 */
function runQemuImg(args: string[], signal: AbortSignal | undefined, opts: { buffer?: boolean } = {}) {
  requireQemuImg();
  return execa(...diesWithKiln(qemuImgBinary, args), { reject: false, all: true, stdin: 'ignore', cancelSignal: signal, ...opts });
}

/** A qemu-img run stopped by the build's signal fails with the signal's reason, not as a qemu-img error. */
function throwIfCanceled(r: { isCanceled: boolean }, signal: AbortSignal | undefined): void {
  if (r.isCanceled && signal?.aborted) throw signal.reason as Error;
}

async function qemuImg(args: string[], what: string, signal?: AbortSignal): Promise<string> {
  const r = await runQemuImg(args, signal);
  throwIfCanceled(r, signal);
  if (r.failed) {
    const detail = (r.all ?? r.stderr ?? '').toString().trim() || r.message;
    throw new QemuImgError(`${what} failed: ${detail}\n  command: ${qemuImgBinary} ${args.join(' ')}`, detail ?? '');
  }
  return String(r.stdout ?? '');
}

/** `shared` reads an image a running QEMU holds open (-U); its figures may be a moment old. */
export async function imageInfo(file: string, format?: string, shared = false, signal?: AbortSignal): Promise<ImageInfo> {
  const args = ['info', '--output=json', ...(shared ? ['-U'] : []), ...(format ? ['-f', format] : []), file];
  const j = JSON.parse(await qemuImg(args, `reading ${file}`, signal)) as Record<string, unknown>;
  return {
    format: String(j.format),
    virtualSize: Number(j['virtual-size']),
    actualSize: Number(j['actual-size']),
    backingFile: j['backing-filename'] as string | undefined,
    backingFormat: j['backing-filename-format'] as string | undefined,
    dirty: j['dirty-flag'] === true,
  };
}

/**
 * The images a build VM writes use the file system's block size as their cluster size. QEMU drops the
 * part of a discard that does not cover a whole cluster, so with qcow2's default 64 KiB clusters a
 * freed 4 KiB block next to live data keeps its bytes through fstrim: cloud-init rewrites its cache
 * (obj.pkl, holding the seed with the injected host private key) by write-and-rename at every stage,
 * and such an old copy was found in an artifact. With 4 KiB clusters every freed block is trimmed away.
 */
export const buildDiskCreateOptions = ['-o', 'cluster_size=4096'];

/** A qcow2 overlay whose reads fall through to `base`; the base is never written. */
export async function createOverlay(base: string, baseFormat: string, overlay: string, sizeBytes?: number, signal?: AbortSignal): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', ...buildDiskCreateOptions, '-b', base, '-F', baseFormat, overlay];
  if (sizeBytes) args.push(String(sizeBytes));
  await qemuImg(args, `creating overlay ${overlay}`, signal);
}

export async function createBlank(file: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', ...buildDiskCreateOptions, file, String(sizeBytes)], `creating disk ${file}`, signal);
}

/** Grows (never shrinks) an image's virtual size. */
export async function resize(file: string, format: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
  await qemuImg(['resize', '-q', '-f', format, file, String(sizeBytes)], `resizing ${file}`, signal);
}

export interface ConvertOptions {
  compress?: boolean;
  options?: string[];              // -o values
  onProgress?: (percent: number) => void;
  /** Stops (kills) the conversion. */
  signal?: AbortSignal;
}

/** `qemu-img convert`, with `-p` parsed into progress callbacks. */
export async function convert(src: string, srcFormat: string, dst: string, dstFormat: string, opts: ConvertOptions = {}): Promise<void> {
  const args = ['convert', '-f', srcFormat, '-O', dstFormat];
  if (opts.onProgress) args.push('-p');
  if (opts.compress) args.push('-c');
  if (opts.options?.length) args.push('-o', opts.options.join(','));
  args.push(src, dst);
  const child = runQemuImg(args, opts.signal, { buffer: true });
  if (opts.onProgress) {
    let partial = '';
    child.stdout?.on('data', (b: Buffer) => {
      partial += b.toString();
      for (const m of partial.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) opts.onProgress!(Number(m[1]));
      partial = partial.slice(-32);
    });
  }
  const r = await child;
  throwIfCanceled(r, opts.signal);
  if (r.failed) {
    const detail = String(r.stderr ?? '').trim() || r.message;
    throw new QemuImgError(`converting to ${dstFormat} failed: ${detail}\n  command: ${qemuImgBinary} ${args.join(' ')}`, detail ?? '');
  }
}

/** `qemu-img check`; formats without checks (raw) count as passing. */
export async function check(file: string, format: string, signal?: AbortSignal): Promise<{ ok: boolean; output: string }> {
  const r = await runQemuImg(['check', '-f', format, file], signal);
  throwIfCanceled(r, signal);
  // rc 63: "this image format does not support checks" — not a failure.
  return { ok: r.exitCode === 0 || r.exitCode === 63, output: String(r.all ?? '').trim() };
}

/** What `qemu-img check --output=json` found. */
export interface CheckReport {
  /** 0 clean, 1 the check could not finish, 2 corruptions, 3 leaked clusters only, 63 the format has no check. */
  exitCode: number;
  corruptions: number;
  leaks: number;
  /** qemu-img's own lines ("ERROR ...", "Leaked cluster ...", "qemu-img: ..."), in its order. */
  messages: string[];
}

export async function checkReport(file: string, format: string, signal?: AbortSignal): Promise<CheckReport> {
  const r = await runQemuImg(['check', '--output=json', '-f', format, file], signal);
  throwIfCanceled(r, signal);
  let report: { corruptions?: number; leaks?: number } = {};
  try { report = JSON.parse(String(r.stdout ?? '')) as typeof report; } catch { /* no report when the check could not run */ }
  return {
    exitCode: r.exitCode ?? -1,
    corruptions: report.corruptions ?? 0,
    leaks: report.leaks ?? 0,
    messages: String(r.stderr ?? '').split('\n').map((l) => l.trim()).filter(Boolean),
  };
}

/**
 * Where the image's data ends inside its own file, from `qemu-img map`: an end past the file's size
 * means the file was cut short. Compressed clusters have no plain offset and are not counted.
 */
export async function dataEnd(file: string, format: string, signal?: AbortSignal): Promise<number> {
  const out = await qemuImg(['map', '--output=json', '-f', format, file], `mapping ${file}`, signal);
  let end = 0;
  for (const extent of JSON.parse(out) as { length: number; data: boolean; offset?: number }[]) {
    if (extent.data && extent.offset !== undefined) end = Math.max(end, extent.offset + extent.length);
  }
  return end;
}

export async function qemuImgVersion(signal?: AbortSignal): Promise<string> {
  const out = await qemuImg(['--version'], 'qemu-img --version', signal);
  return /version ([^\s]+)/.exec(out)?.[1] ?? out.split('\n')[0] ?? 'unknown';
}
