/**
 * SFTP transfers with many requests in flight. ssh2's SFTP streams send one 32 KiB request and wait
 * for its reply before the next: to a TCG guest that is ~1.5 MiB/s whatever the link. Keeping
 * `requestsInFlight` requests outstanding (as OpenSSH's sftp and scp do) fills the SSH window instead.
 * Unlike ssh2's fastPut/fastGet these stop between requests when `halt` aborts, and report bytes as
 * each request completes.
 */
import { open as openLocal, type FileHandle } from 'node:fs/promises';
import type { SFTPWrapper } from 'ssh2';
import { formatBytes } from '../template/units.js';
import { DownloadLimitError, DownloadRefusedError } from './download-guard.js';

/** Bytes so far and the whole size (undefined while unknown), over everything one call transfers. */
export type TransferProgress = (done: number, total: number | undefined) => void;

/** 64 x 32 KiB: 2 MiB outstanding, ssh2's channel window; more only queues in ssh2 (measured in bench/). */
export const requestsInFlight = 64;
export const requestSize = 32 * 1024;
/**
 * An upload's writes where the server takes them: 128 KiB each, 16 in flight (the same 2 MiB
 * outstanding). Each request costs the guest's sftp-server a read, a pwrite and a reply, which a TCG
 * guest pays for; OpenSSH's scp and sftp write up to 255 KiB a request for the same reason. Measured on
 * the Debian fixture (256 MiB up, rotating order, a sync before every transfer; the medians of two runs
 * of 3 and 4 rounds): 128 KiB x 16 11.30 and 11.34 s, 32 KiB x 64 12.10 and 12.42 s, 256 KiB x 16 12.36
 * and 12.31 s, scp 12.68 and 13.30 s.
 */
export const uploadRequestSize = 128 * 1024;
/**
 * A request's size within one of the server's limits: uploadRequestSize where it allows that
 * (OpenSSH's sftp-server answers ssh2's limits@openssh.com with 255 KiB both ways), else requestSize
 * or the limit if lower: ssh2 sends a request larger than the server takes as pieces one after
 * another, which would undo the parallel lanes. ssh2 keeps the limits in fields of its own; a layout
 * without them gets requestSize, what ssh2 sent before.
 */
function requestSizeWithin(max: unknown): number {
  if (typeof max !== 'number' || max <= 0) return requestSize;
  return max >= uploadRequestSize ? uploadRequestSize : Math.min(requestSize, max);
}

/** The write size for `sftp`'s server (see requestSizeWithin). */
export function uploadWriteSize(sftp: SFTPWrapper): number {
  return requestSizeWithin((sftp as unknown as { _maxWriteLen?: unknown })._maxWriteLen);
}

/**
 * The read size for `sftp`'s server: as large as writes, for the same reason (each request costs the
 * TCG guest's sftp-server a read, a send and a reply), with as many bytes outstanding, where the
 * server states its limit (limits@openssh.com, OpenSSH 8.6 and later). Without it ssh2 assumes
 * 254 KiB of any OpenSSH, whose older sftp-server answers at most 64 KiB a read: a 128 KiB request
 * would come back half full and need a second one. Those servers keep requestSize.
 */
export function downloadReadSize(sftp: SFTPWrapper): number {
  const s = sftp as unknown as { _maxReadLen?: unknown; _extensions?: Record<string, string> };
  if (s._extensions?.['limits@openssh.com'] !== '1') return Math.min(requestSize, requestSizeWithin(s._maxReadLen));
  return requestSizeWithin(s._maxReadLen);
}

/** Requests in flight for `size` a request: the same bytes outstanding, at most requestsInFlight requests. */
export function lanesFor(size: number): number {
  return Math.max(1, Math.min(requestsInFlight, Math.floor((requestsInFlight * requestSize) / size)));
}

/** Files of a directory upload written at once: small files cost a round trip or three each (open, write, close). */
export const filesInFlight = 8;

type Handle = Buffer;

function call<T>(fn: (cb: (err: Error | null | undefined, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}

/**
 * Runs `next()` in up to `width` lanes until it returns false or one fails; stops taking new work once
 * `halt` aborts or a lane failed, and rejects with the first failure once every lane has stopped.
 */
async function lanes(width: number, halt: AbortSignal, next: () => Promise<boolean> | false): Promise<void> {
  let failure: unknown;
  const lane = async () => {
    while (failure === undefined) {
      if (halt.aborted) {
        failure ??= halt.reason;
        return;
      }
      try {
        const more = next();
        if (more === false || !(await more)) return;
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: width }, lane));
  if (failure !== undefined) throw failure;
}

/**
 * Writes the local file `local` (`size` bytes) to `remote`, created or truncated, then sets `mode`
 * (as ssh2's write stream does: its default is 0666). `onBytes` is told of every completed write.
 */
export async function parallelPut(
  sftp: SFTPWrapper,
  local: string,
  remote: string,
  size: number,
  mode: number | undefined,
  halt: AbortSignal,
  onBytes: (n: number) => void,
): Promise<void> {
  halt.throwIfAborted();
  const file = await openLocal(local, 'r');
  let handle: Handle | undefined;
  try {
    handle = await call<Handle>((cb) => sftp.open(remote, 'w', cb));
    const h = handle;
    await call<void>((cb) => sftp.fchmod(h, mode ?? 0o666, (e) => cb(e, undefined)));
    const writeSize = uploadWriteSize(sftp);
    // The local file is read in blocks of 32 requests (one read per 1-4 MiB, not per request): under
    // TCG the host's CPU is shared with the guest, and every request's overhead shows.
    const readBlockSize = 32 * writeSize;
    const blocks = new Map<number, { data: Promise<Buffer>; pending: number }>();
    const block = (index: number) => {
      let b = blocks.get(index);
      if (!b) {
        const start = index * readBlockSize;
        const data = Buffer.allocUnsafe(Math.min(readBlockSize, size - start));
        b = { data: readFully(file, data, start).then(() => data), pending: Math.ceil(data.length / writeSize) };
        b.data.catch(() => undefined); // observed by the requests that use it
        blocks.set(index, b);
      }
      return b;
    };
    let offset = 0;
    await lanes(Math.min(lanesFor(writeSize), Math.max(1, Math.ceil(size / writeSize))), halt, () => {
      if (offset >= size) return false;
      const position = offset;
      const length = Math.min(writeSize, size - position);
      offset += length;
      const index = Math.floor(position / readBlockSize);
      const b = block(index);
      return (async () => {
        const data = await b.data;
        halt.throwIfAborted();
        const at = position - index * readBlockSize;
        await call<void>((cb) => sftp.write(h, data, at, length, position, (e) => cb(e, undefined)));
        if (--b.pending === 0) blocks.delete(index);
        onBytes(length);
        return true;
      })();
    });
  } finally {
    await file.close();
    if (handle) {
      const h = handle;
      await call<void>((cb) => sftp.close(h, (e) => cb(e, undefined))).catch(() => undefined);
    }
  }
}

async function readFully(file: FileHandle, buffer: Buffer, position: number): Promise<void> {
  for (let got = 0; got < buffer.length;) {
    const { bytesRead } = await file.read(buffer, got, buffer.length - got, position + got);
    if (bytesRead === 0)
      throw new Error(`the local file ended early (changed while being uploaded?) at ${position + got} bytes`);
    got += bytesRead;
  }
}

/**
 * Reads `remote` into the local file `local` (created or truncated) with many reads in flight, up to
 * the size the server reports when it is opened, and never more than `maxBytes`. A file that reports
 * no size (/proc, /sys) is then read on to its end, up to `maxBytes`; one that reported a size and has
 * more data past it grew while read: that fails, as its copy would be of no moment in particular.
 */
export async function parallelGet(
  sftp: SFTPWrapper,
  remote: string,
  local: string,
  halt: AbortSignal,
  onBytes: (n: number, total: number | undefined) => void,
  maxBytes: number = Number.POSITIVE_INFINITY,
): Promise<void> {
  halt.throwIfAborted();
  const handle = await call<Handle>((cb) => sftp.open(remote, 'r', cb));
  const file = await openLocal(local, 'w');
  try {
    const size = (await call<{ size?: number }>((cb) => sftp.fstat(handle, cb)).catch(() => ({ size: 0 }))).size ?? 0;
    if (size > maxBytes)
      throw new DownloadLimitError(
        `${remote} is ${formatBytes(size)}, over the limit of ${formatBytes(maxBytes)}`,
        'bytes',
        maxBytes,
        size,
      );
    let offset = 0;
    let short: number | undefined; // where the file turned out to end, if before `size`
    const readAt = async (position: number, length: number): Promise<Buffer> => {
      const buffer = Buffer.allocUnsafe(length);
      const got = await call<number>((cb) => sftp.read(handle, buffer, 0, length, position, (e, n) => cb(e, n)));
      halt.throwIfAborted();
      return buffer.subarray(0, got);
    };
    const keep = async (data: Buffer, position: number) => {
      if (data.length > 0) await file.write(data, 0, data.length, position);
      onBytes(data.length, size || undefined);
    };
    const readSize = downloadReadSize(sftp);
    await lanes(Math.min(lanesFor(readSize), Math.max(1, Math.ceil(size / readSize))), halt, () => {
      if (offset >= size || short !== undefined) return false;
      const position = offset;
      const length = Math.min(readSize, size - position);
      offset += length;
      return (async () => {
        // A server may answer with less than asked: read the rest of this piece before moving on.
        for (let done = 0; done < length;) {
          const data = await readAt(position + done, length - done);
          await keep(data, position + done);
          if (data.length === 0) {
            short = Math.min(short ?? Infinity, position + done);
            return false;
          }
          done += data.length;
        }
        return true;
      })();
    });
    if (short !== undefined) {
      await file.truncate(short);
      return;
    }
    for (let position = size; ;) {
      halt.throwIfAborted();
      const data = await readAt(position, readSize);
      if (data.length === 0) break;
      if (size > 0)
        throw new DownloadRefusedError(
          `${remote} grew while it was read: it had ${size} bytes when opened, and more followed; stop what writes it first, or copy it in the guest (cp in a shell provisioner) and download the copy`,
        );
      if (position + data.length > maxBytes)
        throw new DownloadLimitError(
          `${remote} reports no size and goes on past the limit of ${formatBytes(maxBytes)}`,
          'bytes',
          maxBytes,
          position + data.length,
        );
      await keep(data, position);
      position += data.length;
    }
  } finally {
    await file.close();
    await call<void>((cb) => sftp.close(handle, (e) => cb(e, undefined))).catch(() => undefined);
  }
}
