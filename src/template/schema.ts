/**
 * The template schema. Every object is strict, so a misspelt key is an error with a "did you mean"
 * (see errors.ts) instead of being silently ignored — the most common way a Packer template goes wrong.
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';
import { BootCommandError, parseBootCommand } from '../bootcommand/parse.js';

const duration = z.union([z.string(), z.number().nonnegative()]).superRefine((v, ctx) => {
  try { parseDuration(v); } catch (e) { ctx.addIssue({ code: 'custom', message: (e as Error).message }); }
});
const size = z.union([z.string(), z.number().int().positive()]).superRefine((v, ctx) => {
  try { parseSize(v); } catch (e) { ctx.addIssue({ code: 'custom', message: (e as Error).message }); }
});

export const variableSchema = z.strictObject({
  type: z.enum(['string', 'number', 'bool']).default('string'),
  default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  description: z.string().optional(),
  sensitive: z.boolean().default(false),
});

const checksum = z.string().regex(/^(none|sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|file:.+)$/, {
  message: 'checksum must be "sha256:<64 hex>", "sha512:<128 hex>", "file:<path or URL of a SUMS file>" or "none"',
});

const sshCommunicator = z.strictObject({
  type: z.literal('ssh').default('ssh'),
  username: z.string().default('kiln'),
  password: z.string().optional(),
  /** A key the guest already trusts (e.g. a fixture's); kiln otherwise makes an ephemeral one. */
  private_key_file: z.string().optional(),
  port: z.number().int().min(1).max(65535).default(22),
  timeout: duration.default('10m'),
  /** "SHA256:..." as ssh-keygen -lf prints it. */
  host_key_fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/).optional(),
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

const provisionerCommon = {
  pause_before: duration.optional(),
  timeout: duration.optional(),
  max_retries: z.number().int().min(0).default(0),
  only: z.array(z.string()).optional(),
  except: z.array(z.string()).optional(),
  /**
   * Layer cache: false makes this provisioner (and every later one) run on each build. Unset means
   * cached, except shell-local and file downloads, whose effects are on the host, not in the disk.
   */
  cache: z.boolean().optional(),
};

const envMap = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({});

export const shellProvisioner = z.strictObject({
  type: z.literal('shell'),
  ...provisionerCommon,
  inline: z.array(z.string()).optional(),
  script: z.string().optional(),
  scripts: z.array(z.string()).optional(),
  env: envMap,
  /** How the uploaded script is run; {{path}} and {{vars}} are replaced. */
  execute_command: z.string().default('chmod +x {{path}}; {{vars}} {{path}}'),
  remote_folder: z.string().default('/tmp'),
  expect_disconnect: z.boolean().default(false),
  valid_exit_codes: z.array(z.number().int()).default([0]),
}).refine((p) => [p.inline, p.script, p.scripts].filter((x) => x !== undefined).length === 1, {
  message: 'a shell provisioner needs exactly one of "inline", "script" or "scripts"',
});

export const fileProvisioner = z.strictObject({
  type: z.literal('file'),
  ...provisionerCommon,
  source: z.string().optional(),
  content: z.string().optional(),
  destination: z.string(),
  direction: z.enum(['upload', 'download']).default('upload'),
}).refine((p) => (p.source === undefined) !== (p.content === undefined), {
  message: 'a file provisioner needs exactly one of "source" or "content"',
}).refine((p) => !(p.direction === 'download' && p.content !== undefined), {
  message: '"content" only makes sense for uploads; downloads need "source" (the guest path)',
});

export const shellLocalProvisioner = z.strictObject({
  type: z.literal('shell-local'),
  ...provisionerCommon,
  inline: z.array(z.string()).optional(),
  script: z.string().optional(),
  env: envMap,
  valid_exit_codes: z.array(z.number().int()).default([0]),
}).refine((p) => (p.inline === undefined) !== (p.script === undefined), {
  message: 'a shell-local provisioner needs exactly one of "inline" or "script"',
});

export const breakpointProvisioner = z.strictObject({
  type: z.literal('breakpoint'),
  ...provisionerCommon,
  note: z.string().default('breakpoint'),
  disable: z.boolean().default(false),
});

export const provisionerSchema = z.discriminatedUnion('type', [
  shellProvisioner, fileProvisioner, shellLocalProvisioner, breakpointProvisioner,
]);

export const outputFormats = ['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd', 'ova', 'vagrant', 'gce'] as const;
export const outputSchema = z.strictObject({
  format: z.enum(outputFormats),
  /** File name inside the build's output directory; defaults to "<build>.<ext>". */
  name: z.string().regex(/^[^/\\]+$/, { message: 'name is a file name, not a path; use "directory" for where' }).optional(),
  /** Another directory for this artifact (default: the build's output_directory). */
  directory: z.string().optional(),
  /** qcow2: zstd-compressed clusters; vmdk: same as subformat streamOptimized. */
  compress: z.boolean().default(false),
  /** vmdk only. */
  subformat: z.enum(['monolithicSparse', 'streamOptimized']).optional(),
  /** vmdk only: the controller type written into the descriptor. */
  adapter_type: z.enum(['ide', 'lsilogic', 'buslogic', 'legacyESX']).optional(),
}).refine((o) => o.format === 'vmdk' || (o.subformat === undefined && o.adapter_type === undefined), {
  message: '"subformat" and "adapter_type" only apply to format: vmdk',
});

const bootCommandLine = z.string().superRefine((line, ctx) => {
  try { parseBootCommand(line); } catch (e) {
    ctx.addIssue({ code: 'custom', message: e instanceof BootCommandError ? e.message : String(e) });
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
    env: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  }).refine((p) => (p.inline === undefined) !== (p.script === undefined), { message: 'a shell-local post-processor needs exactly one of "inline" or "script"' }),
]);

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
  cd_content: z.record(z.string(), z.string()).default({}),
  cd_label: z.string().max(32).default('cidata'),
  floppy_files: z.array(z.string()).default([]),
  floppy_label: z.string().max(11).default('KILN'),
  /** How long an ISO installer may run before kiln gives up on it. */
  install_timeout: duration.default('1h'),
  disk_size: size.optional(),
  cpus: z.number().int().min(1).max(256).default(2),
  memory: z.union([z.number().int().min(64), z.string()]).default(1024),
  accelerator: z.enum(['auto', 'kvm', 'tcg', 'hvf', 'whpx']).default('auto'),
  firmware: z.enum(['bios', 'uefi']).default('bios'),
  machine: z.string().default('pc'),
  disk_interface: z.enum(['virtio', 'virtio-scsi', 'ide', 'scsi']).default('virtio'),
  net_device: z.enum(['virtio-net-pci', 'e1000', 'rtl8139', 'vmxnet3']).default('virtio-net-pci'),
  /** Extra switches, each a list (["-cpu", "max"]); a switch given here replaces kiln's own of that name. */
  qemu_args: z.array(z.array(z.string()).min(1)).default([]),
  headless: z.boolean().default(true),
  http_directory: z.string().optional(),
  http_content: z.record(z.string(), z.string()).default({}),
  cloud_init: z.union([z.literal(false), cloudInit]).prefault({}),
  communicator: z.union([sshCommunicator, noneCommunicator]).prefault({}),
  shutdown_command: z.string().optional(),
  shutdown_timeout: duration.default('5m'),
});

export const buildSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, {
    message: 'build names use letters, digits, ".", "_" and "-" (they name files and directories)',
  }),
  output_directory: z.string().optional(),
  source: sourceSchema,
  provisioners: z.array(provisionerSchema).default([]),
  outputs: z.array(outputSchema).min(1).prefault([{ format: 'qcow2' }]),
  /** Digest files written beside the artifacts (SHA256SUMS, SHA512SUMS), streamed. */
  checksums: z.array(z.enum(['sha256', 'sha512'])).min(1).default(['sha256']),
  /** Run on the finished artifacts, in order, before checksums and the manifest are written. */
  post_processors: z.array(postProcessorSchema).default([]),
});

export const templateSchema = z.strictObject({
  description: z.string().optional(),
  variables: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), variableSchema).default({}),
  builds: z.array(buildSchema).min(1),
});

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

/** Every key the schema knows, per object path shape, for "did you mean" suggestions. */
export const knownKeys = {
  template: Object.keys(templateSchema.shape),
  build: Object.keys(buildSchema.shape),
  source: Object.keys(sourceSchema.shape),
  output: ['format', 'name', 'directory', 'compress', 'subformat', 'adapter_type'],
  variable: Object.keys(variableSchema.shape),
} as const;
