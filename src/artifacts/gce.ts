/**
 * Google Compute Engine image tarball: one member named exactly `disk.raw` (a raw disk) in a
 * gzip-compressed tar in the old GNU format, the layout `gcloud compute images create --source-uri`
 * imports. Google documents the command `tar --format=oldgnu -Sczf image.tar.gz disk.raw`, so this uses
 * GNU tar itself rather than tar-stream (which writes ustar only): `-S` stores the raw disk sparse, so a
 * mostly empty 10 GiB disk costs what its data costs instead of 10 GiB of zeros through gzip.
 *
 * GCE also requires the raw disk's size to be a whole number of GiB. The disk is first converted to a
 * temporary sparse raw file beside the output; if its virtual size is not a multiple of 1 GiB, that copy
 * is grown to the next GiB with `qemu-img resize` (the new tail reads as zeros and occupies no space;
 * partitions and file systems are untouched — the guest sees a slightly larger disk). The source image is
 * never modified.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import type { ImageTool } from '../qemu/image-tool.js';
import { GiB, progressScale, step, writeAtomically } from './tar.js';

/** GNU tar, unless the caller names another (the CLI: KILN_TAR). */
export const defaultTarBinary = 'tar';

export interface GceTarballOptions {
  source: string;
  sourceFormat: string;
  out: string;
  onProgress?: (pct: number) => void;
  /** Stops the packaging: its tools are killed, its partial output removed. */
  signal?: AbortSignal;
  /** The GNU tar to run (default: tar on PATH). */
  tarBinary?: string;
  /** The image tool to convert, read and resize with (the build's). */
  qemuImg: Pick<ImageTool, 'convert' | 'imageInfo' | 'resize'>;
}

/** The GNU tar command line (run in the directory holding disk.raw). */
export function gceTarArgs(archive: string): string[] {
  return [
    '--format=oldgnu',
    '--sparse',
    '--gzip',
    '--create',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '--mode=0644',
    '--file',
    archive,
    'disk.raw',
  ];
}

export async function writeGceTarball(opts: GceTarballOptions): Promise<{ size: number }> {
  const tools = opts.qemuImg;
  const what = 'GCE tarball';
  const tarBinary = opts.tarBinary ?? defaultTarBinary;
  const progress = progressScale(opts.onProgress);
  return writeAtomically(what, opts.out, async (workDir, partial) => {
    const raw = path.join(workDir, 'disk.raw');
    await step(what, opts.out, 'converting the disk to raw (qemu-img convert)', () =>
      tools.convert(opts.source, opts.sourceFormat, raw, 'raw', {
        onProgress: progress.phase(0, 60),
        signal: opts.signal,
      }),
    );
    const { virtualSize } = await step(what, opts.out, 'reading disk.raw (qemu-img info)', () =>
      tools.imageInfo(raw, 'raw', false, opts.signal),
    );
    if (virtualSize % GiB !== 0) {
      const rounded = Math.ceil(virtualSize / GiB) * GiB;
      await step(
        what,
        opts.out,
        `growing disk.raw to a whole GiB, ${rounded} bytes, as GCE requires (qemu-img resize)`,
        () => tools.resize(raw, 'raw', rounded, opts.signal),
      );
    }
    progress.phase(0, 100)(65);
    const args = gceTarArgs(path.resolve(partial));
    await step(what, opts.out, 'writing the archive (GNU tar --format=oldgnu -Sz)', async () => {
      const r = await execa(...diesWithKiln(tarBinary, args), {
        cwd: workDir,
        reject: false,
        all: true,
        cancelSignal: opts.signal,
      });
      if (r.isCanceled) throw opts.signal!.reason;
      if (r.failed) {
        const detail = String(r.all ?? '').trim() || r.message;
        const hint =
          r.code === 'ENOENT' || r.exitCode === 127
            ? `\n  fix: install GNU tar (apt-get install tar gzip), or give its path (kiln: KILN_TAR)`
            : '';
        throw new Error(`${detail}\n  command: ${tarBinary} ${args.join(' ')}${hint}`);
      }
    });
    const { size } = await stat(partial);
    progress.done();
    return { size };
  });
}
