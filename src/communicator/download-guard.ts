/**
 * What a download from the guest may do to the host. The guest is not trusted: its files' modes are
 * not copied as they are, and what it sends is bounded, so a hostile or broken guest (a setuid file, a
 * folder of 0777s, /dev/zero, a log that keeps growing) can neither plant privileges on the host nor
 * fill its disk.
 */
import { formatBytes } from '../template/units.js';

/**
 * The default bound on one download's bytes (a file, or a folder's files together): ten times what
 * provisioners usually bring back (logs, SBOMs, built packages), far below a disk image, and small
 * enough that a runaway guest cannot fill a CI runner's disk. A template raises it with max_size.
 */
export const defaultMaxDownloadBytes = 10 * 2 ** 30;

/** A folder download holds at most this many entries (each costs an inode, whatever its size). */
export const maxDownloadEntries = 1_000_000;

export interface DownloadLimits {
  maxBytes: number;
  maxEntries: number;
}

export const unlimited: DownloadLimits = { maxBytes: Number.POSITIVE_INFINITY, maxEntries: Number.POSITIVE_INFINITY };

/** kiln refused what the guest sent (a file that grew while read, a limit); not a transfer failure. */
export class DownloadRefusedError extends Error {}

/** A download went past a limit; nothing past it was written. */
export class DownloadLimitError extends DownloadRefusedError {
  constructor(
    message: string,
    readonly kind: 'bytes' | 'entries',
    readonly limit: number,
    /** How much the download needed at least (bytes or entries), when known. */
    readonly atLeast?: number,
  ) {
    super(message);
  }
}

/**
 * The mode a downloaded file or folder gets on the host: the guest's permission bits, without
 * setuid, setgid, sticky and world-write (never taken from a guest), then the host's umask, as any
 * file kiln makes. 04777 -> 0775 & ~umask (0755 under umask 022); 0640 -> 0640.
 */
export function hostMode(guestMode: number, umask: number): number {
  return guestMode & 0o775 & ~umask;
}

/** Counts a folder download's entries and bytes; refuses an entry before any of it is written. */
export class DownloadBudget {
  bytes = 0;
  entries = 0;

  constructor(private readonly limits: DownloadLimits) {}

  /** Accounts for the entry `name` carrying `size` bytes, or throws DownloadLimitError. */
  admit(name: string, size: number): void {
    if (++this.entries > this.limits.maxEntries) {
      throw new DownloadLimitError(
        `the folder holds more than ${this.limits.maxEntries} entries, kiln's limit for one download (reached at ${JSON.stringify(name)})`,
        'entries',
        this.limits.maxEntries,
        this.entries,
      );
    }
    if (this.bytes + size > this.limits.maxBytes) {
      throw new DownloadLimitError(
        `the folder holds more than the limit of ${formatBytes(this.limits.maxBytes)}: ${JSON.stringify(name)} (${formatBytes(size)}) would bring it to ${formatBytes(this.bytes + size)}`,
        'bytes',
        this.limits.maxBytes,
        this.bytes + size,
      );
    }
    this.bytes += size;
  }
}

/** A size as a template writes it, rounded up ("3M", "20G"): what an error suggests for max_size. */
export function templateSize(bytes: number): string {
  return bytes > 2 ** 30 ? `${Math.ceil(bytes / 2 ** 30)}G` : `${Math.max(1, Math.ceil(bytes / 2 ** 20))}M`;
}
