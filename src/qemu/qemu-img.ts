/** qemu-img, wrapped: every disk operation kiln performs goes through here. */
import { execa } from 'execa';
import { requireExecutable } from './process.js';

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
}

export class QemuImgError extends Error {}

async function qemuImg(args: string[], what: string): Promise<string> {
  requireQemuImg();
  const r = await execa(qemuImgBinary, args, { reject: false, all: true });
  if (r.failed) {
    const detail = (r.all ?? r.stderr ?? '').toString().trim() || r.message;
    throw new QemuImgError(`${what} failed: ${detail}\n  command: ${qemuImgBinary} ${args.join(' ')}`);
  }
  return String(r.stdout ?? '');
}

/** `shared` reads an image a running QEMU holds open (-U); its figures may be a moment old. */
export async function imageInfo(file: string, format?: string, shared = false): Promise<ImageInfo> {
  const args = ['info', '--output=json', ...(shared ? ['-U'] : []), ...(format ? ['-f', format] : []), file];
  const j = JSON.parse(await qemuImg(args, `reading ${file}`)) as Record<string, unknown>;
  return {
    format: String(j.format),
    virtualSize: Number(j['virtual-size']),
    actualSize: Number(j['actual-size']),
    backingFile: j['backing-filename'] as string | undefined,
    backingFormat: j['backing-filename-format'] as string | undefined,
  };
}

/** A qcow2 overlay whose reads fall through to `base`; the base is never written. */
export async function createOverlay(base: string, baseFormat: string, overlay: string, sizeBytes?: number): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-b', base, '-F', baseFormat, overlay];
  if (sizeBytes) args.push(String(sizeBytes));
  await qemuImg(args, `creating overlay ${overlay}`);
}

export async function createBlank(file: string, sizeBytes: number): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', file, String(sizeBytes)], `creating disk ${file}`);
}

/** Grows (never shrinks) an image's virtual size. */
export async function resize(file: string, format: string, sizeBytes: number): Promise<void> {
  await qemuImg(['resize', '-q', '-f', format, file, String(sizeBytes)], `resizing ${file}`);
}

export interface ConvertOptions {
  compress?: boolean;
  options?: string[];              // -o values
  onProgress?: (percent: number) => void;
}

/** `qemu-img convert`, with `-p` parsed into progress callbacks. */
export async function convert(src: string, srcFormat: string, dst: string, dstFormat: string, opts: ConvertOptions = {}): Promise<void> {
  const args = ['convert', '-f', srcFormat, '-O', dstFormat];
  if (opts.onProgress) args.push('-p');
  if (opts.compress) args.push('-c');
  if (opts.options?.length) args.push('-o', opts.options.join(','));
  args.push(src, dst);
  requireQemuImg();
  const child = execa(qemuImgBinary, args, { reject: false, all: true, buffer: true });
  if (opts.onProgress) {
    let partial = '';
    child.stdout?.on('data', (b: Buffer) => {
      partial += b.toString();
      for (const m of partial.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) opts.onProgress!(Number(m[1]));
      partial = partial.slice(-32);
    });
  }
  const r = await child;
  if (r.failed) {
    const detail = String(r.stderr ?? '').trim() || r.message;
    throw new QemuImgError(`converting to ${dstFormat} failed: ${detail}\n  command: ${qemuImgBinary} ${args.join(' ')}`);
  }
}

/** `qemu-img check`; formats without checks (raw) count as passing. */
export async function check(file: string, format: string): Promise<{ ok: boolean; output: string }> {
  requireQemuImg();
  const r = await execa(qemuImgBinary, ['check', '-f', format, file], { reject: false, all: true });
  // rc 63: "this image format does not support checks" — not a failure.
  return { ok: r.exitCode === 0 || r.exitCode === 63, output: String(r.all ?? '').trim() };
}

export async function qemuImgVersion(): Promise<string> {
  const out = await qemuImg(['--version'], 'qemu-img --version');
  return /version ([^\s]+)/.exec(out)?.[1] ?? out.split('\n')[0] ?? 'unknown';
}
