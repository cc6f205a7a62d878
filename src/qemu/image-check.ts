/**
 * The base image, checked before QEMU boots it. A damaged or unbootable image boots anyway and fails
 * far from its cause: a truncated qcow2 leaves the serial console silent (30 s), a text file booted as
 * a raw disk hangs until the SSH timeout (10 min). Every check here reads metadata or a few sectors:
 * about 0.2 s for a 400 MiB cloud image, so the verdict is not cached.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { QemuImg, QemuImgError } from './qemu-img.js';
import { formatBytes } from '../template/units.js';
import { KilnError } from '../util/errors.js';

export class BaseImageError extends KilnError {}

export interface CheckedBaseImage {
  format: string;
  /** Harmless findings to pass on (leaked clusters). */
  warnings: string[];
}

/** Smaller than this, no disk holds a boot loader and an operating system that answers SSH. */
const minimumDiskBytes = 1 << 20;
/** Enough for the MBR, a GPT header at LBA 1 of a 512- or 4096-byte-sector disk, and the ISO 9660 volume descriptor. */
const headBytes = 0x8006;
/** Formats whose data lives in the image's own file, so `qemu-img map` offsets can be compared with its size (not vmdk: its extents may be other files). */
const singleFileFormats = new Set(['qcow2', 'qed', 'vdi', 'vhdx', 'vpc']);

const notBootable = (file: string, why: string, fix: string) =>
  new BaseImageError(`base image ${file} is not a bootable disk image: ${why}`, { fix });
const damaged = (file: string, what: string, fix: string) =>
  new BaseImageError(`base image ${file} is damaged: ${what}`, { fix });
const fetchAgain =
  'copy or download it again (an interrupted copy or download leaves a short file), and check it against its published checksum';

function readHead(file: string): Buffer {
  const head = Buffer.alloc(headBytes);
  const fd = openSync(file, 'r');
  try {
    return head.subarray(0, readSync(fd, head, 0, headBytes, 0));
  } finally {
    closeSync(fd);
  }
}

/** No NUL or other control bytes but tab, newline and carriage return: text, never a disk's first sectors. */
function isText(head: Buffer): boolean {
  return head.subarray(0, 4096).every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b !== 0x7f));
}

/** Why the firmware would not boot this raw disk and what to do, or undefined if it has a boot sector or a GPT. */
function bootSectorProblem(head: Buffer): { why: string; fix: string } | undefined {
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa) return undefined;
  const gptAt = (offset: number) => head.subarray(offset, offset + 8).toString('latin1') === 'EFI PART';
  if (gptAt(512) || gptAt(4096)) return undefined;
  if (head.subarray(0x8001, 0x8006).toString('latin1') === 'CD001') {
    return {
      why: 'it is an ISO 9660 CD image without a hybrid boot sector, which boots from a CD drive, not from a disk',
      fix: 'give it as iso: (an installer to boot from CD) instead of base_image',
    };
  }
  const none = 'no MBR boot signature (0x55AA at byte 510) and no GPT header ("EFI PART" at LBA 1)';
  return {
    why: head.subarray(0, 512).every((b) => b === 0) ? `its first sector is blank: ${none}` : `it has ${none}`,
    fix: "point base_image at a whole bootable disk (e.g. a distribution's cloud image); a file system image or a blank disk has no boot loader",
  };
}

/** qemu-img's words without its "qemu-img: Could not open '<file>': " framing, said once per layer it opened. */
const qemuImgReason = (detail: string) => detail.replace(/^(qemu-img: )?(Could not open '[^']*': )+/, '');

/**
 * Checks `file`, a base image to boot as a disk: throws a BaseImageError naming what is wrong with it
 * and how to fix it. `bootSectorRequired` is false when QEMU boots a kernel directly (-kernel in
 * qemu_args), so a raw file system image without a boot sector is fine.
 */
export async function checkBaseImage(
  file: string,
  opts: { bootSectorRequired: boolean; signal?: AbortSignal; qemuImg?: QemuImg },
): Promise<CheckedBaseImage> {
  const qemuImg = opts.qemuImg ?? new QemuImg();
  const size = statSync(file).size;
  if (size === 0)
    throw notBootable(
      file,
      'the file is empty',
      `point base_image at a disk image (qcow2, raw, vmdk...); ${fetchAgain}`,
    );
  const head = readHead(file);
  let info;
  try {
    info = await qemuImg.imageInfo(file, undefined, false, opts.signal);
  } catch (e) {
    if (!(e instanceof QemuImgError)) throw e;
    // QEMU's image locking: another VM or qemu-img has it open for writing; the file may be sound.
    if (/Failed to get .* lock/.test(e.detail)) {
      throw new BaseImageError(
        `base image ${file} is in use by another process: ${qemuImgReason(e.detail).split('\n')[0]}`,
        { fix: `stop the VM or program that has it open for writing, or give kiln a copy` },
      );
    }
    throw damaged(file, `qemu-img cannot open it: ${qemuImgReason(e.detail)}`, fetchAgain);
  }
  if (info.format === 'raw' && isText(head)) {
    const start = head.toString('utf8').trim().split('\n')[0]!.slice(0, 60);
    throw notBootable(
      file,
      `it is a text file, starting "${start}"`,
      'point base_image at a disk image (qcow2, raw, vmdk...); if it was downloaded, the server sent a page or a message instead of the image',
    );
  }
  if (info.virtualSize < minimumDiskBytes) {
    throw notBootable(
      file,
      `its disk is only ${formatBytes(info.virtualSize)}, too small to hold an operating system`,
      `point base_image at a whole disk image; ${fetchAgain}`,
    );
  }
  if (info.backingFile) {
    throw new BaseImageError(
      `base image ${file} has a backing file (${info.backingFile}), which kiln does not follow`,
      { fix: `give kiln a self-contained image: qemu-img convert -O ${info.format} ${file} <new file>` },
    );
  }
  if (info.dirty) {
    throw damaged(
      file,
      `its ${info.format} dirty flag is set: the QEMU that last wrote it stopped without closing it, so its reference counts are stale`,
      `repair it with \`qemu-img check -r all ${file}\`, or copy it again from its source`,
    );
  }
  if (info.format === 'raw') {
    const problem = opts.bootSectorRequired ? bootSectorProblem(head) : undefined;
    if (problem) throw notBootable(file, problem.why, problem.fix);
    return { format: info.format, warnings: [] };
  }
  if (singleFileFormats.has(info.format)) {
    const end = await qemuImg.dataEnd(file, info.format, opts.signal);
    if (end > size)
      throw damaged(
        file,
        `its ${info.format} data reaches byte ${end} but the file has ${size} bytes: it was cut short`,
        fetchAgain,
      );
  }
  const check = await qemuImg.checkReport(file, info.format, opts.signal);
  const fullReport = `\`qemu-img check -f ${info.format} ${file}\` lists every problem`;
  switch (check.exitCode) {
    case 0:
    case 63: // the format has no consistency check
      return { format: info.format, warnings: [] };
    case 3:
      return {
        format: info.format,
        warnings: [
          `base image ${file}: qemu-img check found ${check.leaks} leaked cluster(s): wasted space in the file, harmless to its data`,
        ],
      };
    case 2:
      throw damaged(
        file,
        `qemu-img check found ${check.corruptions} corruption(s), the first: ${check.messages[0] ?? '(none printed)'}`,
        `${fetchAgain}; ${fullReport}`,
      );
    default:
      // Its first error and its final word; a badly damaged image can print thousands of lines between.
      throw damaged(
        file,
        `qemu-img check could not finish: ${[...new Set([check.messages[0], check.messages.at(-1)])].filter(Boolean).join('; ') || `exit status ${check.exitCode}`}`,
        `${fetchAgain}; ${fullReport}`,
      );
  }
}
