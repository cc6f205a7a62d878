/**
 * The template schema. Every object is strict, so a misspelt key is an error with a "did you mean"
 * (see errors.ts) instead of being silently ignored — the most common way a Packer template goes wrong.
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';
import { BootCommandError, parseBootCommand } from '../bootcommand/parse.js';
import { provisionerSchema } from './provisioner-kinds/index.js';
import { envMap } from './provisioner-kinds/common.js';
import { hostCommandFields } from './provisioner-kinds/shell-local.js';
import { checkPublishTargets, publishList } from './schema-publish.js';
import { closest } from './errors.js';

/** A check whose failure carries its fix (errors.ts prints `params.fix` under the message). */
const because = (message: string, fix: string) => ({ message, params: { fix } });

const duration = z.union([z.string(), z.number().nonnegative()]).superRefine((v, ctx) => {
  try { parseDuration(v); } catch {
    ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is not a duration`, 'write e.g. "30s", "5m", "1m30s" or "500ms"') });
  }
});
const size = z.union([z.string(), z.number().int().positive()]).superRefine((v, ctx) => {
  try { parseSize(v); } catch {
    ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is not a size`, 'write e.g. "20G", "512M" or a number of bytes') });
  }
});
/** MiB as a number, or a size string ("2G"); QEMU wants at least 64 MiB either way. */
const memory = z.union([z.number().int().min(64), z.string()]).superRefine((v, ctx) => {
  if (typeof v === 'number') return;
  let bytes: number;
  try { bytes = parseSize(v); } catch {
    ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is not an amount of memory`, 'write MiB as a number (memory: 2048) or a size (memory: "2G")') });
    return;
  }
  if (bytes < 64 * 2 ** 20) ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is less than 64 MiB`, 'give at least 64 MiB, e.g. memory: 1024') });
});

export const variableName = z.string().refine((v) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(v), because(
  'not a variable name', 'use letters, digits and "_", not starting with a digit (it is written ${var.NAME})',
));

export const variableSchema = z.strictObject({
  type: z.enum(['string', 'number', 'bool']).default('string'),
  default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  description: z.string().optional(),
  sensitive: z.boolean().default(false),
});

// md5: and sha1: are there for Packer templates, which allow them (weak: the mapping says so).
const checksum = z.string().refine((v) => /^(none|sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|md5:[0-9a-fA-F]{32}|sha1:[0-9a-fA-F]{40}|file:.+)$/.test(v), because(
  'checksum must be "sha256:<64 hex>", "sha512:<128 hex>", "file:<path or URL of a SUMS file>" or "none" (or the weak md5:<32 hex>, sha1:<40 hex>)',
  'write the image\'s digest as sha256:<hex> or sha512:<hex>, point at a SUMS file with file:, or write none to skip verification',
));

const sshCommunicator = z.strictObject({
  type: z.literal('ssh').default('ssh'),
  username: z.string().default('kiln'),
  password: z.string().optional(),
  /** A key the guest already trusts (e.g. a fixture's); kiln otherwise makes an ephemeral one. */
  private_key_file: z.string().optional(),
  port: z.number().int().min(1).max(65535).default(22),
  timeout: duration.default('10m'),
  /** "SHA256:..." as ssh-keygen -lf prints it. */
  host_key_fingerprint: z.string().refine((v) => /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(v), because(
    'not an SSH host key fingerprint', 'write it as "ssh-keygen -lf <host key>.pub" prints it: SHA256: and 43 base64 characters',
  )).optional(),
  /** Accept whatever host key the guest shows first (with a warning). */
  trust_on_first_use: z.boolean().default(false),
});
const noneCommunicator = z.strictObject({ type: z.literal('none') });

const cloudInit = z.strictObject({
  enabled: z.boolean().default(true),
  delivery: z.enum(['http', 'cdrom']).default('http'),
  /** Merged into kiln's own #cloud-config (keys, host keys, user); an object or a YAML string. */
  user_data: z.union([z.record(z.string(), z.unknown()), z.string()]).default({}),
  meta_data: z.record(z.string(), z.unknown()).default({}),
  /** Wait for `cloud-init status --wait` before provisioning. */
  wait: z.boolean().default(true),
});

/** The provisioner kinds (provisioner-kinds/, one module each) give the provisioner schema. */
export { provisionerSchema };

export const outputFormats = ['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd', 'ova', 'vagrant', 'gce'] as const;
export const outputSchema = z.strictObject({
  format: z.enum(outputFormats),
  /** File name inside the build's output directory; defaults to "<build>.<ext>". */
  name: z.string().refine((v) => /^[^/\\]+$/.test(v), because('name is a file name, not a path', 'put the folder in "directory" and only the file name in "name"'))
    // "." and ".." name the output directory and its parent: the artifact would replace a directory.
    .refine((v) => v !== '.' && v !== '..', because('"." and ".." name directories, not a file', 'give the artifact a file name, e.g. name: disk.qcow2')).optional(),
  /** Another directory for this artifact (default: the build's output_directory). */
  directory: z.string().optional(),
  /** qcow2: zstd-compressed clusters; vmdk: same as subformat streamOptimized. */
  compress: z.boolean().default(false),
  /** vmdk only. */
  subformat: z.enum(['monolithicSparse', 'streamOptimized']).optional(),
  /** vmdk only: the controller type written into the descriptor. */
  adapter_type: z.enum(['ide', 'lsilogic', 'buslogic', 'legacyESX']).optional(),
  /** vagrant only: Ruby appended to the box's Vagrantfile, after kiln's provider defaults (Packer's vagrantfile_template). */
  vagrantfile_extra: z.string().optional(),
}).refine((o) => o.format === 'vmdk' || (o.subformat === undefined && o.adapter_type === undefined), because(
  '"subformat" and "adapter_type" only apply to format: vmdk',
  'remove them, or set format: vmdk',
)).refine((o) => o.format === 'vagrant' || o.vagrantfile_extra === undefined, because(
  '"vagrantfile_extra" only applies to format: vagrant',
  'remove it, or set format: vagrant',
));

const bootCommandLine = z.string().superRefine((line, ctx) => {
  try { parseBootCommand(line); } catch (e) {
    if (!(e instanceof BootCommandError)) throw e;
    // The line with a caret under the column, then the fix on its own line like every other problem.
    const caret = `\n      ${e.source}\n      ${' '.repeat(e.pos)}^`;
    ctx.addIssue({ code: 'custom', ...because(`${e.problem} at column ${e.pos + 1}${caret}`, `write ${e.expected}`) });
  }
});

export const postProcessorSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('compress'),
    algorithm: z.enum(['gzip', 'zstd', 'xz']).default('zstd'),
    /** Artifact formats to compress (default: all disk images and packages not already compressed). */
    formats: z.array(z.enum(outputFormats)).optional(),
    /** Keep the uncompressed artifact beside the compressed one. */
    keep_input: z.boolean().default(false),
  }),
  z.strictObject({
    type: z.literal('shell-local'),
    inline: z.array(z.string()).optional(),
    script: z.string().optional(),
    env: envMap,
    ...hostCommandFields,
  }).refine((p) => (p.inline === undefined) !== (p.script === undefined), because(
    'a shell-local post-processor needs exactly one of "inline" or "script"',
    'keep one of them; to run both, use two shell-local post-processors',
  )),
]);

/** A path inside the CD: relative, with no ".." that would climb out of it into kiln's work directory. */
const cdFileName = z.string().refine((v) => !v.startsWith('/') && v.split('/').every((part) => part !== '..') && v.split('/').some((part) => part !== '' && part !== '.'), because(
  'a cd_content name is a path inside the CD: relative, without ".." parts',
  'write it relative to the CD\'s root, e.g. ks.cfg or kickstart/ks.cfg',
));

const firmwareKinds = ['bios', 'uefi', 'uefi-secure'] as const;

export const sourceSchema = z.strictObject({
  /** A bootable disk image (cloud image) to build on; or `iso` to install onto a blank disk. */
  base_image: z.string().optional(),
  iso: z.string().optional(),
  checksum,
  /** Typed at the installer's boot prompt; parsed at validate time. */
  boot_command: z.array(bootCommandLine).default([]),
  boot_wait: duration.default('0s'),
  boot_key_interval: duration.optional(),
  boot_console: z.enum(['keyboard', 'serial']).default('keyboard'),
  /** An extra ISO built from these files (e.g. a kickstart on an OEMDRV-labelled disc). */
  cd_files: z.array(z.string()).default([]),
  cd_content: z.record(cdFileName, z.string()).default({}),
  cd_label: z.string().max(32).default('cidata'),
  floppy_files: z.array(z.string()).default([]),
  floppy_label: z.string().max(11).default('KILN'),
  /** How long an ISO installer may run before kiln gives up on it. */
  install_timeout: duration.default('1h'),
  disk_size: size.optional(),
  cpus: z.number().int().min(1).max(256).default(2),
  memory: memory.default(1024),
  accelerator: z.enum(['auto', 'kvm', 'tcg', 'hvf', 'whpx']).default('auto'),
  /**
   * bios (SeaBIOS), uefi (OVMF without Secure Boot), uefi-secure (Secure Boot on, Microsoft keys enrolled),
   * or the path of a QEMU firmware descriptor (.json): UEFI is chosen through QEMU's descriptors (src/qemu/firmware.ts).
   */
  firmware: z.string().superRefine((v, ctx) => {
    if ((firmwareKinds as readonly string[]).includes(v) || v.endsWith('.json')) return;
    const guess = closest(v, firmwareKinds);
    ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is not allowed`, `${guess ? `did you mean "${guess}"? (` : ''}one of: ${firmwareKinds.join(', ')}, or the path of a QEMU firmware descriptor (.json)${guess ? ')' : ''}`) });
  }).default('bios'),
  /** A TPM 2.0 (swtpm, one per build); optional so that unset it changes no layer key. */
  tpm: z.boolean().optional(),
  machine: z.string().default('pc'),
  /** QEMU's -cpu model; unset: an x86-64-v2 model under TCG, "host" under KVM (src/qemu/argv.ts). Not in the layer key. */
  cpu_model: z.string().min(1).optional(),
  disk_interface: z.enum(['virtio', 'virtio-scsi', 'ide', 'sata', 'scsi']).default('virtio'),
  net_device: z.enum(['virtio-net-pci', 'e1000', 'rtl8139', 'vmxnet3']).default('virtio-net-pci'),
  /** Extra switches, each a list (["-cpu", "max"]); a switch given here replaces kiln's own of that name. */
  qemu_args: z.array(z.array(z.string()).min(1)).default([]),
  /**
   * Packer's qemuargs rule: each switch in qemu_args replaces all of kiln's defaults of that switch
   * (its -drive lines, -device lines...), kiln's QMP, console and SSH network excepted (src/qemu/argv.ts).
   * Set by Packer templates; optional so that unset it changes no layer key.
   */
  qemu_args_replace: z.boolean().optional(),
  headless: z.boolean().default(true),
  http_directory: z.string().optional(),
  http_content: z.record(z.string(), z.string()).default({}),
  cloud_init: z.union([z.literal(false), cloudInit]).prefault({}),
  communicator: z.union([sshCommunicator, noneCommunicator]).prefault({}),
  shutdown_command: z.string().optional(),
  shutdown_timeout: duration.default('5m'),
});

export const buildSchema = z.strictObject({
  name: z.string().refine((v) => /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v), because(
    'build names use letters, digits, ".", "_" and "-" (they name files and directories)',
    'rename it, e.g. "my build" -> my-build',
  )),
  output_directory: z.string().optional(),
  source: sourceSchema,
  provisioners: z.array(provisionerSchema).default([]),
  /**
   * Layer cache options. vm_state: also save the running VM (RAM, devices) with each layer, so a rebuild
   * restores it instead of booting (src/qemu/vm-state.ts; README "Layer cache"). Off by default.
   */
  cache: z.strictObject({ vm_state: z.boolean().default(false) }).optional(),
  outputs: z.array(outputSchema).min(1).prefault([{ format: 'qcow2' }]),
  /** Digest files written beside the artifacts (SHA256SUMS, SHA512SUMS), streamed. */
  checksums: z.array(z.enum(['sha256', 'sha512'])).min(1).default(['sha256']),
  /** Run on the finished artifacts, in order, before checksums and the manifest are written. */
  post_processors: z.array(postProcessorSchema).default([]),
  /** Where the finished artifacts are uploaded, after checksums and the manifest (schema-publish.ts). */
  publish: publishList,
  /** Sign SHA256SUMS, the provenance and the SBOMs with an ed25519 key (ssh-keygen -Y sign, namespace "kiln"). */
  sign: z.strictObject({ key: z.string().min(1) }).optional(),
}).superRefine((b, ctx) => checkPublishTargets(b.publish, b.outputs.map((o) => o.format), ctx));

export const templateSchema = z.strictObject({
  description: z.string().optional(),
  variables: z.record(variableName, variableSchema).default({}),
  builds: z.array(buildSchema).min(1),
});

/** Whether a source's firmware setting boots UEFI (anything but bios). */
export const usesUefi = (firmware: string): boolean => firmware !== 'bios';

export type TemplateInput = z.input<typeof templateSchema>;
export type Template = z.output<typeof templateSchema>;
export type BuildConfig = z.output<typeof buildSchema>;
export type SourceConfig = z.output<typeof sourceSchema>;
export type Provisioner = z.output<typeof provisionerSchema>;
export type OutputConfig = z.output<typeof outputSchema>;
export type PostProcessor = z.output<typeof postProcessorSchema>;
export type VariableDef = z.output<typeof variableSchema>;
export type SshCommunicatorConfig = z.output<typeof sshCommunicator>;
export type CloudInitConfig = z.output<typeof cloudInit>;

/** Packer's names for source fields, as kiln writes them: a Packer user's most likely "unknown key". */
export const packerSourceAliases: Readonly<Record<string, string>> = {
  ssh_username: 'communicator: { username: ... }',
  ssh_password: 'communicator: { password: ... }',
  ssh_private_key_file: 'communicator: { private_key_file: ... }',
  ssh_port: 'communicator: { port: ... }',
  ssh_timeout: 'communicator: { timeout: ... }',
  ssh_wait_timeout: 'communicator: { timeout: ... }',
  ssh_host_key_fingerprint: 'communicator: { host_key_fingerprint: ... }',
  iso_url: 'iso: ...',
  iso_checksum: 'checksum: ...',
  disk_image: 'base_image: <the image> instead of iso',
  qemuargs: 'qemu_args: [[...]]',
  machine_type: 'machine: ...',
  efi_boot: 'firmware: uefi',
  vm_name: 'the build\'s name (and outputs[].name)',
  format: 'outputs: [{ format: ... }] on the build',
  output_directory: 'output_directory on the build, beside "source"',
  cd_files: 'cd_files: [...]',
};

interface SchemaDef { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType>; element?: z.ZodType; valueType?: z.ZodType; options?: z.ZodType[] }
const defOf = (schema: z.ZodType) => schema._zod.def as unknown as SchemaDef;
const fieldOf = (data: unknown, key: string | number): unknown => (data && typeof data === 'object' && Object.hasOwn(data, key) ? (data as Record<string, unknown>)[key] : undefined);

/**
 * The keys valid in the object at `path` of a template, for "did you mean". `data` is the template as
 * written: it picks the right member of a union (a provisioner's keys depend on its `type`).
 */
export function knownKeysAt(path: readonly (string | number)[], data: unknown, schema: z.ZodType = templateSchema): readonly string[] | undefined {
  const def = defOf(schema);
  const [head, ...rest] = path;
  switch (def.type) {
    case 'optional': case 'default': case 'prefault': case 'nullable': case 'readonly':
      return def.innerType && knownKeysAt(path, data, def.innerType);
    case 'pipe':
      return def.in && knownKeysAt(path, data, def.in);
    case 'object': {
      if (head === undefined) return Object.keys(def.shape ?? {});
      const child = typeof head === 'string' && def.shape && Object.hasOwn(def.shape, head) ? def.shape[head] : undefined;
      return child && knownKeysAt(rest, fieldOf(data, head), child);
    }
    case 'array':
      return typeof head === 'number' && def.element ? knownKeysAt(rest, fieldOf(data, head), def.element) : undefined;
    case 'record':
      return head !== undefined && def.valueType ? knownKeysAt(rest, fieldOf(data, head), def.valueType) : undefined;
    case 'union': {
      // Members whose `type` accepts the given one (all of them when it matches none), keys merged.
      const members = def.options ?? [];
      const typeOf = (m: z.ZodType) => { const d = defOf(m); return d.type === 'object' ? d.shape?.type : undefined; };
      const given = fieldOf(data, 'type');
      const matching = members.filter((m) => typeOf(m)?.safeParse(given).success);
      const keys = new Set<string>();
      for (const m of matching.length ? matching : members) for (const k of knownKeysAt(path, data, m) ?? []) keys.add(k);
      return keys.size ? [...keys] : undefined;
    }
    default:
      return undefined;
  }
}
