/**
 * Growing a cloud image's root partition into a larger disk, on the host, before the first boot:
 * what cloud-init's growpart does in the guest (2.6-3.3 s of the Debian fixture's boot under TCG, on
 * the path to sshd), done here in microseconds on the GPT's bytes. Only the plain case is taken: a
 * valid GPT with 512-byte sectors whose backup sits at the end of the old disk, and whose last
 * partition is the one Linux root/filesystem partition; anything else is left to cloud-init (the
 * caller then keeps growpart on). The filesystem is not touched: cloud-init's resizefs grows it.
 */
import { crc32 } from 'node:zlib';

const SECTOR = 512;
const SIGNATURE = 'EFI PART';
/** Partition types a root filesystem has: Linux filesystem data, and the discoverable x86-64 and arm64 roots. */
const LINUX_ROOT_TYPES = new Set([
  '0fc63daf-8483-4772-8e79-3d69d8477de4',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
  'b921b045-1df0-41c3-af44-4c6f280d3fae',
]);

/** A GPT's mixed-endian GUID as text. */
function guidAt(b: Buffer, off: number): string {
  const h = (start: number, len: number, le: boolean) => {
    const part = Buffer.from(b.subarray(off + start, off + start + len));
    return (le ? part.reverse() : part).toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 2, true)}-${h(6, 2, true)}-${h(8, 2, false)}-${h(10, 6, false)}`;
}

/** How much of the disk's start `growRootPartition` needs: the MBR, the header and (at most) 128 x 128-byte entries. */
export const gptHeadBytes = SECTOR * 34;

export interface GrownGpt {
  /** The partition grown (1-based, as the guest numbers it). */
  partition: number;
  /** The grown partition's new last sector (the disk's last usable one). */
  newEndLba: number;
  /** Writes that make the grown table: the new start of the disk, and the backup table at its end. */
  writes: { offset: number; data: Buffer }[];
}

/** Why a disk's table is left to cloud-init, or the writes that grow its root partition to the new size. */
export function growRootPartition(
  head: Buffer,
  oldSizeBytes: number,
  newSizeBytes: number,
): { grown: GrownGpt } | { skipped: string } {
  if (oldSizeBytes % SECTOR || newSizeBytes % SECTOR) return { skipped: 'the disk is not a whole number of sectors' };
  if (newSizeBytes <= oldSizeBytes) return { skipped: 'the disk is not larger than its base' };
  if (head.length < gptHeadBytes) return { skipped: 'the disk is too small for a GPT' };
  const hdr = head.subarray(SECTOR, 2 * SECTOR);
  if (hdr.toString('latin1', 0, 8) !== SIGNATURE) return { skipped: 'no GPT (an MBR disk, or none)' };
  const headerSize = hdr.readUInt32LE(12);
  if (headerSize < 92 || headerSize > SECTOR) return { skipped: 'the GPT header has an odd size' };
  const check = Buffer.from(hdr.subarray(0, headerSize));
  check.writeUInt32LE(0, 16);
  if (crc32(check) !== hdr.readUInt32LE(16)) return { skipped: "the GPT header's checksum does not match" };
  const oldLast = oldSizeBytes / SECTOR - 1;
  const backupLba = Number(hdr.readBigUInt64LE(32));
  if (Number(hdr.readBigUInt64LE(24)) !== 1 || backupLba !== oldLast)
    return { skipped: "the GPT's backup is not at the end of the base image" };
  const entriesLba = Number(hdr.readBigUInt64LE(72));
  const count = hdr.readUInt32LE(80);
  const entrySize = hdr.readUInt32LE(84);
  const entriesBytes = count * entrySize;
  if (entriesLba !== 2 || entrySize < 128 || entriesBytes % SECTOR || SECTOR * 2 + entriesBytes > head.length)
    return { skipped: 'the GPT entries are not where and how a cloud image has them' };
  const entries = Buffer.from(head.subarray(SECTOR * 2, SECTOR * 2 + entriesBytes));
  if (crc32(entries) !== hdr.readUInt32LE(88)) return { skipped: "the GPT entries' checksum does not match" };

  let last = -1;
  let lastEnd = -1;
  let roots = 0;
  for (let i = 0; i < count; i++) {
    const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue;
    const type = guidAt(e, 0);
    if (LINUX_ROOT_TYPES.has(type)) roots++;
    const end = Number(e.readBigUInt64LE(40));
    if (end > lastEnd) {
      lastEnd = end;
      last = i;
    }
  }
  if (last < 0) return { skipped: 'the GPT has no partitions' };
  // cloud-init grows the partition holding "/": on the host that is knowable only when there is one
  // Linux filesystem partition and it is the last.
  if (roots !== 1 || !LINUX_ROOT_TYPES.has(guidAt(entries, last * entrySize)))
    return { skipped: 'the last partition is not the one Linux root partition' };

  const entriesSectors = entriesBytes / SECTOR;
  const newLast = newSizeBytes / SECTOR - 1;
  const newLastUsable = newLast - entriesSectors - 1;
  entries.writeBigUInt64LE(BigInt(newLastUsable), last * entrySize + 40);
  const entriesCrc = crc32(entries);

  const header = (current: number, backup: number, entriesAt: number) => {
    const h = Buffer.from(hdr);
    h.writeBigUInt64LE(BigInt(current), 24);
    h.writeBigUInt64LE(BigInt(backup), 32);
    h.writeBigUInt64LE(BigInt(newLastUsable), 48);
    h.writeBigUInt64LE(BigInt(entriesAt), 72);
    h.writeUInt32LE(entriesCrc, 88);
    h.writeUInt32LE(0, 16);
    h.writeUInt32LE(crc32(h.subarray(0, headerSize)), 16);
    return h;
  };
  // The protective MBR's one partition covers the disk (capped at 2^32 - 1 sectors, as the spec says).
  const mbr = Buffer.from(head.subarray(0, SECTOR));
  if (mbr.readUInt16LE(510) === 0xaa55 && mbr[446 + 4] === 0xee)
    mbr.writeUInt32LE(Math.min(newLast, 0xffffffff), 446 + 12);
  const backupEntriesLba = newLast - entriesSectors;
  return {
    grown: {
      partition: last + 1,
      newEndLba: newLastUsable,
      writes: [
        { offset: 0, data: Buffer.concat([mbr, header(1, newLast, 2), entries]) },
        { offset: backupEntriesLba * SECTOR, data: Buffer.concat([entries, header(newLast, 1, backupEntriesLba)]) },
      ],
    },
  };
}
