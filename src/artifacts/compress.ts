/** Compression post-processor: multi-threaded zstd/xz (gzip single-threaded, or pigz when present). */
import { existsSync, rmSync, renameSync } from 'node:fs';
import { execa } from 'execa';
import { diesWithKiln } from '../util/dies-with-kiln.js';

export const compressionExtension = { gzip: 'gz', zstd: 'zst', xz: 'xz' } as const;
export type Compression = keyof typeof compressionExtension;

function command(algorithm: Compression): [string, string[]] {
  switch (algorithm) {
    case 'zstd':
      return ['zstd', ['-T0', '-q', '-c']];
    case 'xz':
      return ['xz', ['-T0', '-c']];
    case 'gzip':
      return existsSync('/usr/bin/pigz') ? ['pigz', ['-c']] : ['gzip', ['-c']];
  }
}

/** Compresses `file` to `out` (streamed through the tool, never read into memory), atomically; `signal` kills the tool. */
export async function compressFile(
  file: string,
  out: string,
  algorithm: Compression,
  signal?: AbortSignal,
): Promise<void> {
  const [tool, args] = command(algorithm);
  const partial = `${out}.partial`;
  const r = await execa(...diesWithKiln(tool, [...args, file]), {
    stdout: { file: partial },
    stderr: 'pipe',
    reject: false,
    cancelSignal: signal,
  });
  if (r.failed) {
    rmSync(partial, { force: true });
    if (r.isCanceled) throw signal!.reason;
    throw new Error(
      `compressing ${file} with ${tool} failed: ${String(r.stderr).trim() || r.message}\n  (make setup installs ${tool})`,
    );
  }
  renameSync(partial, out);
}
