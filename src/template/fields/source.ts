/** A build's `source`: what it boots (a cloud image or an installer ISO) and the VM it boots it in. */
import { z } from 'zod';
import { BootCommandError, parseBootCommand } from '../../bootcommand/parse.js';
import { closest } from '../errors.js';
import { cloudInit } from './cloud-init.js';
import { noneCommunicator, sshCommunicator } from './communicator.js';
import { type Fields, shapeOf } from './field.js';
import { because, duration, memory, size } from './types.js';
import { guestArches } from '../../qemu/arch.js';

// md5: and sha1: are there for Packer templates, which allow them (weak: the mapping says so).
const checksum = z
  .string()
  .refine(
    (v) =>
      /^(none|sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|md5:[0-9a-fA-F]{32}|sha1:[0-9a-fA-F]{40}|file:.+)$/.test(
        v,
      ),
    because(
      'checksum must be "sha256:<64 hex>", "sha512:<128 hex>", "file:<path or URL of a SUMS file>" or "none" (or the weak md5:<32 hex>, sha1:<40 hex>)',
      "write the image's digest as sha256:<hex> or sha512:<hex>, point at a SUMS file with file:, or write none to skip verification",
    ),
  );

const bootCommandLine = z.string().superRefine((line, ctx) => {
  try {
    parseBootCommand(line);
  } catch (e) {
    if (!(e instanceof BootCommandError)) throw e;
    // The line with a caret under the column, then the fix on its own line like every other problem.
    const caret = `\n      ${e.source}\n      ${' '.repeat(e.pos)}^`;
    ctx.addIssue({ code: 'custom', ...because(`${e.problem} at column ${e.pos + 1}${caret}`, `write ${e.expected}`) });
  }
});

/** A path inside the CD: relative, with no ".." that would climb out of it into kiln's work directory. */
const cdFileName = z
  .string()
  .refine(
    (v) =>
      !v.startsWith('/') &&
      v.split('/').every((part) => part !== '..') &&
      v.split('/').some((part) => part !== '' && part !== '.'),
    because(
      'a cd_content name is a path inside the CD: relative, without ".." parts',
      "write it relative to the CD's root, e.g. ks.cfg or kickstart/ks.cfg",
    ),
  );

const firmwareKinds = ['bios', 'uefi', 'uefi-secure'] as const;
const firmware = z.string().superRefine((v, ctx) => {
  if ((firmwareKinds as readonly string[]).includes(v) || v.endsWith('.json')) return;
  const guess = closest(v, firmwareKinds);
  ctx.addIssue({
    code: 'custom',
    ...because(
      `${JSON.stringify(v)} is not allowed`,
      `${guess ? `did you mean "${guess}"? (` : ''}one of: ${firmwareKinds.join(', ')}, or the path of a QEMU firmware descriptor (.json)${guess ? ')' : ''}`,
    ),
  });
});

/** Certificate files (PEM or DER) for secure_boot.keys; read and checked when the VM's variable store is made. */
const certFiles = z.array(z.string().min(1)).min(1);
const secureBoot = z.strictObject({ keys: z.strictObject({ pk: z.string().min(1), kek: certFiles, db: certFiles }) });

export const sourceFields = {
  base_image: {
    schema: z.string().optional(),
    cache: 'base',
    doc: 'A bootable disk image (a cloud image) to build on: a path or an http(s) URL. Give this or iso.',
  },
  iso: {
    schema: z.string().optional(),
    cache: 'base',
    doc: 'An installer ISO to install onto a blank disk of disk_size: a path or an http(s) URL. Give this or base_image.',
  },
  checksum: {
    schema: checksum,
    cache: 'base',
    packer: ['iso_checksum'],
    doc: "The image's digest: sha256:<hex>, sha512:<hex>, file:<SUMS file or URL>, or none.",
  },
  boot_command: {
    schema: z.array(bootCommandLine).default([]),
    cache: 'disk',
    doc: "Keys typed at the installer's boot prompt (Packer's grammar: <enter>, <wait5s>...); checked when the template loads.",
  },
  boot_wait: {
    schema: duration.prefault('0s'),
    cache: 'disk',
    doc: 'How long after the VM starts kiln begins typing boot_command.',
  },
  boot_key_interval: {
    schema: duration.optional(),
    cache: 'runtime',
    packer: ['boot_key_interval'],
    doc: "The pause between two keys of boot_command (kiln's own pace when unset).",
  },
  boot_console: {
    schema: z.enum(['keyboard', 'serial']).default('keyboard'),
    cache: 'disk',
    doc: 'Where boot_command is typed: the emulated keyboard, or the serial console.',
  },
  cd_files: {
    schema: z.array(z.string()).default([]),
    cache: 'disk',
    packer: ['cd_files'],
    doc: 'Files and folders put on an extra ISO (e.g. a kickstart on an OEMDRV disc).',
  },
  cd_content: {
    schema: z.record(cdFileName, z.string()).default({}),
    cache: 'disk',
    doc: 'Files on the extra ISO given inline: path in the CD -> content.',
  },
  cd_label: {
    schema: z.string().max(32).default('cidata'),
    cache: 'disk',
    packer: ['cd_label'],
    doc: "The extra ISO's volume label.",
  },
  floppy_files: {
    schema: z.array(z.string()).default([]),
    cache: 'disk',
    packer: ['floppy_files'],
    doc: 'Files put on a floppy image (old installers read answers files from one).',
  },
  floppy_label: {
    schema: z.string().max(11).default('KILN'),
    cache: 'disk',
    packer: ['floppy_label'],
    doc: "The floppy's volume label.",
  },
  install_timeout: {
    schema: duration.prefault('1h'),
    cache: 'runtime',
    doc: 'How long an ISO installer may run before kiln gives up on it.',
  },
  disk_size: {
    schema: size.optional(),
    cache: 'disk',
    packer: ['disk_size'],
    doc: 'The disk\'s size ("20G", "20480M", bytes): a blank disk for an ISO install (required), or the image grown to it (with its root partition, on a GPT cloud image).',
  },
  cpus: {
    schema: z.number().int().min(1).max(256).default(2),
    cache: 'runtime',
    packer: ['cpus'],
    doc: 'Virtual CPUs.',
  },
  memory: {
    schema: memory.prefault(1024),
    cache: 'runtime',
    packer: ['memory'],
    doc: 'Guest RAM: MiB as a number (2048) or a size ("2G"); at least 64 MiB.',
  },
  memory_prealloc: {
    schema: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    cache: 'runtime',
    doc: "Give the guest all its RAM when QEMU starts (-mem-prealloc) instead of page by page as it touches it: the boot is not slowed by the host's page faults and the warm base saves in a fraction of the time. auto: when the host has the guest's memory free and 1 GiB to spare; false: never (the guest's untouched memory stays the host's).",
  },
  accelerator: {
    schema: z.enum(['auto', 'kvm', 'tcg', 'hvf', 'whpx']).default('auto'),
    cache: 'runtime',
    packer: ['accelerator'],
    doc: 'auto uses KVM when the host has it, else TCG (emulation).',
  },
  firmware: {
    schema: firmware.default('bios'),
    cache: 'disk',
    doc: 'bios (SeaBIOS), uefi (OVMF), uefi-secure (Secure Boot with Microsoft keys), or a QEMU firmware descriptor (.json).',
  },
  tpm: { schema: z.boolean().optional(), cache: 'disk', packer: ['vtpm'], doc: 'A TPM 2.0 (swtpm, one per build).' },
  secure_boot: {
    schema: secureBoot.optional(),
    cache: 'disk',
    doc: "Your own Secure Boot keys, enrolled into the build's UEFI variable store: keys.pk (a certificate file, PEM or DER), keys.kek and keys.db (lists of them). Needs firmware: uefi-secure.",
  },
  arch: {
    schema: z.enum(guestArches).optional(),
    cache: 'disk',
    doc: "The guest's architecture: x86_64 (unset) or aarch64 (qemu-system-aarch64 -M virt with UEFI; emulated on an x86 host).",
  },
  machine: {
    schema: z.string().default('pc'),
    cache: 'disk',
    packer: ['machine_type'],
    doc: "QEMU's -machine type (pc, q35...).",
  },
  cpu_model: {
    schema: z.string().min(1).optional(),
    cache: 'runtime',
    doc: "QEMU's -cpu model; unset: an x86-64-v2 model under TCG, host under KVM.",
  },
  disk_interface: {
    schema: z.enum(['virtio', 'virtio-scsi', 'ide', 'sata', 'scsi']).default('virtio'),
    cache: 'disk',
    packer: ['disk_interface'],
    doc: 'How the disk is attached to the guest.',
  },
  net_device: {
    schema: z.enum(['virtio-net-pci', 'e1000', 'rtl8139', 'vmxnet3']).default('virtio-net-pci'),
    cache: 'disk',
    doc: "The guest's network card.",
  },
  qemu_args: {
    schema: z.array(z.array(z.string()).min(1)).default([]),
    cache: 'disk',
    packer: ['qemuargs'],
    doc: 'Extra QEMU switches, each a list (["-cpu", "max"]); a switch given here replaces kiln\'s own of that name.',
  },
  qemu_args_replace: {
    schema: z.boolean().optional(),
    cache: 'disk',
    doc: "Packer's qemuargs rule: each switch in qemu_args replaces all of kiln's defaults of that switch (set by Packer templates).",
  },
  headless: {
    schema: z.boolean().default(true),
    cache: 'runtime',
    doc: 'Run QEMU without a display window (kiln console shows the serial console).',
  },
  http_directory: {
    schema: z.string().optional(),
    cache: 'disk',
    packer: ['http_directory'],
    doc: 'A folder kiln serves to the guest over HTTP during the build (${build.http_url}).',
  },
  http_content: {
    schema: z.record(z.string(), z.string()).default({}),
    cache: 'disk',
    packer: ['http_content'],
    doc: 'Files served over HTTP given inline: path -> content.',
  },
  cloud_init: {
    schema: z.union([z.literal(false), cloudInit]).prefault({}),
    cache: 'disk',
    doc: "kiln's cloud-init seed (build key, host keys, user), or false for none; off by default for an ISO install.",
  },
  communicator: {
    schema: z.union([sshCommunicator, noneCommunicator]).prefault({}),
    cache: 'disk',
    doc: 'How kiln reaches the guest: ssh (default) or none.',
  },
  shutdown_command: {
    schema: z.string().optional(),
    cache: 'disk',
    packer: ['shutdown_command'],
    doc: "Run in the guest to power it off (default: kiln's own poweroff).",
  },
  shutdown_timeout: {
    schema: duration.prefault('5m'),
    cache: 'runtime',
    packer: ['shutdown_timeout'],
    doc: 'How long the guest may take to power off.',
  },
} as const satisfies Fields;

export const sourceSchema = z.strictObject(shapeOf(sourceFields));
