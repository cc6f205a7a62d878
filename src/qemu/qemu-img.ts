/** qemu-img, wrapped: every disk operation kiln performs goes through here (a QemuImg, held by the build's Driver). */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { requireExecutable, type ToolSetting } from './process.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import { qemuImgProgressReader } from '../util/progress.js';

/** The qemu-img kiln runs unless told otherwise (DriverOptions.qemuImgBinary; the CLI's KILN_QEMU_IMG). */
export const defaultQemuImgBinary = 'qemu-img';
/** @deprecated the default binary's name; a build runs its Driver's (cache/layers.ts still names it). */
export const qemuImgBinary = defaultQemuImgBinary;

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
  constructor(
    message: string,
    readonly detail: string,
  ) {
    super(message);
  }
}

/** A qemu-img run stopped by the build's signal fails with the signal's reason, not as a qemu-img error. */
function throwIfCanceled(r: { isCanceled: boolean }, signal: AbortSignal | undefined): void {
  if (r.isCanceled && signal?.aborted) throw signal.reason as Error;
}

/**
 * The images a build VM writes use the file system's block size as their cluster size. QEMU drops the
 * part of a discard that does not cover a whole cluster, so with qcow2's default 64 KiB clusters a
 * freed 4 KiB block next to live data keeps its bytes through fstrim: cloud-init rewrites its cache
 * (obj.pkl, holding the seed with the injected host private key) by write-and-rename at every stage,
 * and such an old copy was found in an artifact. With 4 KiB clusters every freed block is trimmed away.
 */
export const buildDiskCreateOptions = ['-o', 'cluster_size=4096'];

export interface ConvertOptions {
  compress?: boolean;
  options?: string[]; // -o values
  onProgress?: (percent: number) => void;
  /** Stops (kills) the conversion. */
  signal?: AbortSignal;
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

/** Runs `fn` in a fresh private directory under the system's temp directory, removed afterwards. */
async function inTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One qemu-img: every disk operation kiln performs goes through here. Each run dies with kiln and stops
 * when its `signal` aborts: an interrupted build must not leave a convert writing on after its
 * cleanups, nor after kiln was killed.
 */
export class QemuImg {
  private found = false;

  constructor(
    readonly binary = defaultQemuImgBinary,
    private readonly setting: Pick<ToolSetting, 'setting' | 'setBySetting'> = {
      setting: 'the qemuImgBinary option',
      setBySetting: false,
    },
  ) {}

  /** Checked once, before the first use, so a missing qemu-img says how to get it rather than ENOENT. */
  require(): void {
    if (this.found) return;
    requireExecutable({ binary: this.binary, name: 'qemu-img', aptPackage: 'qemu-utils', ...this.setting });
    this.found = true;
  }

  private spawn(args: string[], signal: AbortSignal | undefined, opts: { buffer?: boolean } = {}) {
    this.require();
    return execa(...diesWithKiln(this.binary, args), {
      reject: false,
      all: true,
      stdin: 'ignore',
      cancelSignal: signal,
      ...opts,
    });
  }

  private async run(args: string[], what: string, signal?: AbortSignal): Promise<string> {
    const r = await this.spawn(args, signal);
    throwIfCanceled(r, signal);
    if (r.failed) {
      const detail = (r.all ?? r.stderr ?? '').toString().trim() || r.message;
      throw new QemuImgError(`${what} failed: ${detail}\n  command: ${this.binary} ${args.join(' ')}`, detail ?? '');
    }
    return String(r.stdout ?? '');
  }

  /** `shared` reads an image a running QEMU holds open (-U); its figures may be a moment old. */
  async imageInfo(file: string, format?: string, shared = false, signal?: AbortSignal): Promise<ImageInfo> {
    const args = ['info', '--output=json', ...(shared ? ['-U'] : []), ...(format ? ['-f', format] : []), file];
    const j = JSON.parse(await this.run(args, `reading ${file}`, signal)) as Record<string, unknown>;
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
   * A qcow2 overlay on an image a running QEMU holds (and locks): -u, so qemu-img does not open the
   * backing file, and the size is given instead of read.
   */
  async createOverlayUnsafe(active: string, overlay: string, virtualSize: number, signal?: AbortSignal): Promise<void> {
    await this.run(
      [
        'create',
        '-q',
        '-f',
        'qcow2',
        ...buildDiskCreateOptions,
        '-u',
        '-b',
        active,
        '-F',
        'qcow2',
        overlay,
        String(virtualSize),
      ],
      `creating overlay ${overlay}`,
      signal,
    );
  }

  /** Points `file` at another backing file (by name, relative to `file`), or none, without touching data (-u). */
  /** Rebases `file` onto `backing` keeping its content (what the old chain held beyond the new backing is copied in). */
  async rebase(file: string, backing: { name: string; format: string }, signal?: AbortSignal): Promise<void> {
    await this.run(
      ['rebase', '-f', 'qcow2', '-F', backing.format, '-b', backing.name, file],
      `rebasing ${file} onto ${backing.name}`,
      signal,
    );
  }

  async rebaseUnsafe(
    file: string,
    backing: { name: string; format: string } | null,
    signal?: AbortSignal,
  ): Promise<void> {
    await this.run(
      ['rebase', '-u', ...(backing ? ['-F', backing.format, '-b', backing.name] : ['-b', '']), file],
      `rebasing ${file}`,
      signal,
    );
  }

  /** A qcow2 overlay whose reads fall through to `base`; the base is never written. */
  async createOverlay(
    base: string,
    baseFormat: string,
    overlay: string,
    sizeBytes?: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const args = ['create', '-q', '-f', 'qcow2', ...buildDiskCreateOptions, '-b', base, '-F', baseFormat, overlay];
    if (sizeBytes) args.push(String(sizeBytes));
    await this.run(args, `creating overlay ${overlay}`, signal);
  }

  async createBlank(file: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
    await this.run(
      ['create', '-q', '-f', 'qcow2', ...buildDiskCreateOptions, file, String(sizeBytes)],
      `creating disk ${file}`,
      signal,
    );
  }

  /** Grows (never shrinks) an image's virtual size. */
  async resize(file: string, format: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
    await this.run(['resize', '-q', '-f', format, file, String(sizeBytes)], `resizing ${file}`, signal);
  }

  /** `qemu-img convert`, with `-p` parsed into progress callbacks. */
  async convert(
    src: string,
    srcFormat: string,
    dst: string,
    dstFormat: string,
    opts: ConvertOptions = {},
  ): Promise<void> {
    const args = ['convert', '-f', srcFormat, '-O', dstFormat];
    if (opts.onProgress) args.push('-p');
    if (opts.compress) args.push('-c');
    if (opts.options?.length) args.push('-o', opts.options.join(','));
    args.push(src, dst);
    const child = this.spawn(args, opts.signal, { buffer: true });
    if (opts.onProgress) {
      const read = qemuImgProgressReader(opts.onProgress);
      child.stdout?.on('data', (b: Buffer) => read(b.toString()));
    }
    const r = await child;
    throwIfCanceled(r, opts.signal);
    if (r.failed) {
      const detail = String(r.stderr ?? '').trim() || r.message;
      throw new QemuImgError(
        `converting to ${dstFormat} failed: ${detail}\n  command: ${this.binary} ${args.join(' ')}`,
        detail ?? '',
      );
    }
  }

  /** The first `bytes` of what the guest sees of an image (qemu-img dd; a multiple of 512). */
  async readStart(file: string, format: string, bytes: number, signal?: AbortSignal): Promise<Buffer> {
    return inTempDir('kiln-read-', async (dir) => {
      const out = path.join(dir, 'start.raw');
      await this.run(
        ['dd', '-f', format, '-O', 'raw', 'bs=512', `count=${Math.ceil(bytes / 512)}`, `if=${file}`, `of=${out}`],
        `reading the start of ${file}`,
        signal,
      );
      return readFileSync(out);
    });
  }

  /**
   * Writes each of `writes` (in order) into what the guest sees of an image no QEMU has open: one
   * qemu-io, beside qemu-img, with one `write -s` per piece. qemu-io splits its commands at spaces,
   * so the pieces are named relative to its working directory, never by a path that could hold one.
   */
  async writeBytes(
    file: string,
    format: string,
    writes: readonly { offset: number; data: Buffer }[],
    signal?: AbortSignal,
  ): Promise<void> {
    this.require();
    const io = path.isAbsolute(this.binary) ? path.join(path.dirname(this.binary), 'qemu-io') : 'qemu-io';
    await inTempDir('kiln-write-', async (dir) => {
      const commands = writes.flatMap((w, i) => {
        writeFileSync(path.join(dir, `piece-${i}`), w.data, { mode: 0o600 });
        return ['-c', `write -q -s piece-${i} ${w.offset} ${w.data.length}`];
      });
      const r = await execa(...diesWithKiln(io, ['-f', format, ...commands, path.resolve(file)]), {
        reject: false,
        all: true,
        stdin: 'ignore',
        cwd: dir,
        cancelSignal: signal,
      });
      throwIfCanceled(r, signal);
      // qemu-io reports a failed command on its output and still exits 0.
      const said = String(r.all ?? '').trim();
      if (r.failed || said)
        throw new QemuImgError(
          `writing ${writes.reduce((n, w) => n + w.data.length, 0)} bytes into ${file} failed: ${said || r.message}`,
          said,
        );
    });
  }

  /** `qemu-img check`; formats without checks (raw) count as passing. */
  async check(file: string, format: string, signal?: AbortSignal): Promise<{ ok: boolean; output: string }> {
    const r = await this.spawn(['check', '-f', format, file], signal);
    throwIfCanceled(r, signal);
    // rc 63: "this image format does not support checks" — not a failure.
    return { ok: r.exitCode === 0 || r.exitCode === 63, output: String(r.all ?? '').trim() };
  }

  async checkReport(file: string, format: string, signal?: AbortSignal): Promise<CheckReport> {
    const r = await this.spawn(['check', '--output=json', '-f', format, file], signal);
    throwIfCanceled(r, signal);
    let report: { corruptions?: number; leaks?: number } = {};
    try {
      report = JSON.parse(String(r.stdout ?? '')) as typeof report;
    } catch {
      /* no report when the check could not run */
    }
    return {
      exitCode: r.exitCode ?? -1,
      corruptions: report.corruptions ?? 0,
      leaks: report.leaks ?? 0,
      messages: String(r.stderr ?? '')
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    };
  }

  /**
   * Where the image's data ends inside its own file, from `qemu-img map`: an end past the file's size
   * means the file was cut short. Compressed clusters have no plain offset and are not counted.
   */
  async dataEnd(file: string, format: string, signal?: AbortSignal): Promise<number> {
    const out = await this.run(['map', '--output=json', '-f', format, file], `mapping ${file}`, signal);
    let end = 0;
    for (const extent of JSON.parse(out) as { length: number; data: boolean; offset?: number }[]) {
      if (extent.data && extent.offset !== undefined) end = Math.max(end, extent.offset + extent.length);
    }
    return end;
  }

  async qemuImgVersion(signal?: AbortSignal): Promise<string> {
    const out = await this.run(['--version'], 'qemu-img --version', signal);
    return /version ([^\s]+)/.exec(out)?.[1] ?? out.split('\n')[0] ?? 'unknown';
  }
}

/** The default qemu-img, for code outside a build (artifact packaging, verify, tests). */
const standard = new QemuImg();
export const imageInfo: QemuImg['imageInfo'] = (...a) => standard.imageInfo(...a);
export const createOverlay: QemuImg['createOverlay'] = (...a) => standard.createOverlay(...a);
export const createBlank: QemuImg['createBlank'] = (...a) => standard.createBlank(...a);
export const resize: QemuImg['resize'] = (...a) => standard.resize(...a);
export const convert: QemuImg['convert'] = (...a) => standard.convert(...a);
export const check: QemuImg['check'] = (...a) => standard.check(...a);
export const checkReport: QemuImg['checkReport'] = (...a) => standard.checkReport(...a);
export const dataEnd: QemuImg['dataEnd'] = (...a) => standard.dataEnd(...a);
export const qemuImgVersion: QemuImg['qemuImgVersion'] = (...a) => standard.qemuImgVersion(...a);
