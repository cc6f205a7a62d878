/**
 * The image tool: everything kiln does to disk images (qemu-img create, convert, check, info, rebase),
 * apart from the hypervisor (driver.ts's Hypervisor: QEMU, QMP, ports). A build holds both as its
 * Driver; code that only touches images (packaging, verify, the layer store) takes just this.
 */
import { checkBaseImage, type CheckedBaseImage } from './image-check.js';
import type { CheckReport, ConvertOptions, ImageInfo, QemuImg } from './qemu-img.js';

export interface ImageTool {
  imageInfo(file: string, format?: string, shared?: boolean, signal?: AbortSignal): Promise<ImageInfo>;
  createOverlay(
    base: string,
    baseFormat: string,
    overlay: string,
    sizeBytes?: number,
    signal?: AbortSignal,
  ): Promise<void>;
  createBlank(file: string, sizeBytes: number, signal?: AbortSignal): Promise<void>;
  resize(file: string, format: string, sizeBytes: number, signal?: AbortSignal): Promise<void>;
  convert(src: string, srcFormat: string, dst: string, dstFormat: string, opts?: ConvertOptions): Promise<void>;
  check(file: string, format: string, signal?: AbortSignal): Promise<{ ok: boolean; output: string }>;
  checkReport(file: string, format: string, signal?: AbortSignal): Promise<CheckReport>;
  /** A base image's soundness and bootability, before QEMU boots it (image-check.ts). */
  checkBaseImage(file: string, opts: { bootSectorRequired: boolean; signal?: AbortSignal }): Promise<CheckedBaseImage>;
  /** Repoints an image's backing file by name without touching data (layer store copies). */
  rebaseUnsafe(file: string, backing: { name: string; format: string } | null, signal?: AbortSignal): Promise<void>;
  /** Rebases a qcow2 onto `backing` keeping its content (the remote cache's self-contained final disk). */
  rebase(file: string, backing: { name: string; format: string }, signal?: AbortSignal): Promise<void>;
  qemuImgVersion(signal?: AbortSignal): Promise<string>;
  /** The first `bytes` of the guest's view of an image (a partition table). */
  readStart(file: string, format: string, bytes: number, signal?: AbortSignal): Promise<Buffer>;
  /** Writes pieces, in order, into the guest's view of an image no QEMU has open (a grown partition table). */
  writeBytes(
    file: string,
    format: string,
    writes: readonly { offset: number; data: Buffer }[],
    signal?: AbortSignal,
  ): Promise<void>;
}

/** The real image tool: `qemuImg` run as child processes that die with kiln. */
export function imageToolOf(qemuImg: QemuImg): ImageTool {
  return {
    imageInfo: (...a) => qemuImg.imageInfo(...a),
    createOverlay: (...a) => qemuImg.createOverlay(...a),
    createBlank: (...a) => qemuImg.createBlank(...a),
    resize: (...a) => qemuImg.resize(...a),
    convert: (...a) => qemuImg.convert(...a),
    check: (...a) => qemuImg.check(...a),
    checkReport: (...a) => qemuImg.checkReport(...a),
    checkBaseImage: (file, o) => checkBaseImage(file, { ...o, qemuImg }),
    rebaseUnsafe: (...a) => qemuImg.rebaseUnsafe(...a),
    rebase: (...a) => qemuImg.rebase(...a),
    qemuImgVersion: (...a) => qemuImg.qemuImgVersion(...a),
    readStart: (...a) => qemuImg.readStart(...a),
    writeBytes: (...a) => qemuImg.writeBytes(...a),
  };
}
