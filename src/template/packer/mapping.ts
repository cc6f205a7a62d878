/**
 * Packer's QEMU builder, provisioners and post-processors mapped onto kiln's template fields. Every
 * Packer field is either mapped, reported as a one-line note (purely cosmetic: VNC, display...), or an
 * error naming file:line, the field and what kiln does instead. Nothing is dropped silently.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { isObject, type Value } from './eval.js';
import { GoTemplateError, hclBuildContext, renderGoTemplate } from './gotemplate.js';
import type { Field, PackerBuild, PackerProblem, PackerStep, PackerTemplate, Where } from './model.js';
import { hasUrlScheme } from '../../util/url.js';
import { mapQemuArgs } from './qemu-args-mapping.js';
import { goGlob, hasGlobMeta } from './go-glob.js';
import { packerNameOf } from '../fields/field.js';
import { sourceFields } from '../fields/source.js';
import { sshCommunicatorFields } from '../fields/communicator.js';
import { isProvisionerType, listed, provisionerKinds, provisionerTypes } from '../provisioner-kinds/index.js';

export interface MappedTemplate {
  /** A tree of kiln's template shape (what a kiln YAML file would hold). */
  raw: { description?: string; builds: Record<string, unknown>[] };
  /** Where each kiln field came from: JSON.stringify(path) -> file:line and the Packer field. */
  origins: Map<string, Where & { field: string }>;
  notes: string[];
  problems: PackerProblem[];
}

/** Fields with no effect on the image: one warning line each, then ignored. */
const cosmetic: Record<string, string> = {
  vnc_bind_address: 'kiln starts no VNC server (use kiln console for the serial console)',
  vnc_port_min: 'kiln starts no VNC server',
  vnc_port_max: 'kiln starts no VNC server',
  vnc_use_password: 'kiln starts no VNC server',
  vnc_password: 'kiln starts no VNC server',
  display: 'kiln runs QEMU without a display window',
  use_default_display: 'kiln runs QEMU without a display window',
  http_port_min: 'kiln picks a free port for its HTTP server',
  http_port_max: 'kiln picks a free port for its HTTP server',
  http_bind_address: "kiln's HTTP server listens on loopback (the guest reaches it as 10.0.2.2)",
  ssh_host_port_min: 'kiln picks a free host port for SSH',
  ssh_host_port_max: 'kiln picks a free host port for SSH',
  host_port_min: 'kiln picks a free host port for SSH',
  host_port_max: 'kiln picks a free host port for SSH',
  skip_nat_mapping: "kiln always forwards a host port to the guest's SSH port",
  ssh_handshake_attempts: 'kiln retries SSH until communicator.timeout',
  ssh_pty: 'kiln runs commands without a pty',
  ssh_keep_alive_interval: "kiln's SSH client keeps its own keep-alive",
  ssh_read_write_timeout: 'kiln uses its own SSH timeouts',
  ssh_clear_authorized_keys: "kiln's build key is never written into a cloud-init-less guest's authorized_keys by kiln",
  iso_target_extension: 'kiln keeps downloads in its own cache',
  disk_cache: 'kiln chooses the disk cache mode',
  disk_discard: 'kiln chooses the disk discard mode',
  disk_detect_zeroes: 'kiln chooses detect-zeroes',
  skip_compaction: 'kiln always converts the disk with qemu-img (which compacts it)',
  skip_resize_disk: 'kiln resizes only when disk_size is set',
  boot_keygroup_interval: 'kiln types key groups with boot_key_interval',
  pause_before_connecting: 'kiln polls SSH from boot and waits for the guest to answer',
  ssh_file_transfer_method: 'kiln uses SFTP',
  ssh_disable_agent_forwarding: 'kiln never forwards an agent',
  communicator_timeout: 'kiln uses communicator.timeout',
};

/**
 * Go's zero values. Packer decodes a template into Go structs, where a field set to its zero value is
 * the field left out (Prepare then fills in the default), so such a field asks for nothing kiln lacks.
 * "false" is there because Packer weakly decodes a string into a bool (ssh_agent_auth = "false").
 */
export function isNoOpValue(v: Value): boolean {
  return (
    v === null ||
    v === false ||
    v === '' ||
    v === 'false' ||
    v === 0 ||
    (Array.isArray(v) && v.length === 0) ||
    (isObject(v) && Object.keys(v).length === 0)
  );
}

const noOpNote = (f: Field, field: string) =>
  `${f.at.file}:${f.at.line}: ${field} = ${JSON.stringify(f.value)}: ignored: Packer reads that value as the field left out`;

/** Provisioners that need a Windows guest (with the WinRM communicator: one refusal line per template). */
const windowsProvisioners = new Set(['powershell', 'windows-shell', 'windows-restart', 'windows-update']);

export function mapTemplate(t: PackerTemplate): MappedTemplate {
  const origins = new Map<string, Where & { field: string }>();
  const notes: string[] = [];
  const problems: PackerProblem[] = [];
  const windows: { at: Where; what: string }[] = [];
  const builds = t.builds.map((b, i) => mapBuild(t, b, ['builds', i], { origins, notes, problems, windows }));
  if (windows.length) {
    // One line for the whole template: the same reason would otherwise repeat for each field and step.
    // Grouped by kind, so a template with a dozen powershell steps still gets a readable line.
    const lines = new Map<string, number[]>();
    for (const w of windows) lines.set(w.what, [...new Set([...(lines.get(w.what) ?? []), w.at.line])]);
    const what = [...lines].map(([k, l]) => `${k} (line${l.length > 1 ? 's' : ''} ${l.join(', ')})`);
    problems.push({
      at: windows[0]!.at,
      field: 'this template',
      message: `needs a Windows guest (${what.join(', ')}): kiln refuses WinRM and the Windows provisioners, as no Windows guest can be made offline here to test them`,
      fix: 'kiln builds guests it reaches over SSH (communicator = "ssh", Windows with OpenSSH too) with shell, file, shell-local, ansible, ansible-local and puppet-masterless provisioners',
    });
  }
  const raw = { ...(t.description ? { description: t.description } : {}), builds };
  return { raw, origins, notes, problems };
}

interface Out {
  origins: MappedTemplate['origins'];
  notes: string[];
  problems: PackerProblem[];
  windows: { at: Where; what: string }[];
}

function mapBuild(t: PackerTemplate, b: PackerBuild, at: (string | number)[], out: Out): Record<string, unknown> {
  const cwd = process.cwd();
  // Normalised too (`${path.root}/../x` is absolute with `..` in it): a path means one thing, written one way.
  const abs = (p: string) => (hasUrlScheme(p) ? p : path.resolve(cwd, p));
  const origin = (p: (string | number)[], f: Field | undefined, field: string) => {
    if (f) out.origins.set(JSON.stringify([...at, ...p]), { ...f.at, field });
  };
  const fields = new Map(b.source.fields);
  const used = new Set<string>();
  const take = (k: string): Field | undefined => {
    used.add(k);
    return fields.get(k);
  };
  const problem = (f: Field | undefined, field: string, message: string, fix?: string) =>
    out.problems.push({ at: f?.at ?? b.source.at, field: `${b.fullName}: ${field}`, message, fix });
  const note = (f: Field, field: string, what: string) =>
    out.notes.push(`${f.at.file}:${f.at.line}: ${field}: ignored: ${what}`);
  // In HCL, Packer's Go-template values ({{ .HTTPIP }}) are still written as such; JSON was rendered already.
  const runtime = (v: Value, f: Field | undefined, field: string, executeCommand = false): Value => {
    if (typeof v === 'string') {
      if (t.language === 'json') return v;
      try {
        return renderGoTemplate(v, { now: new Date(), executeCommand, ...hclBuildContext(b) });
      } catch (e) {
        if (!(e instanceof GoTemplateError)) throw e;
        problem(f, field, e.problem, e.fix);
        return v;
      }
    }
    if (Array.isArray(v)) return v.map((x) => runtime(x, f, field, executeCommand));
    if (isObject(v))
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, runtime(x, f, field, executeCommand)]));
    return v;
  };
  const str = (k: string): string | undefined => {
    const f = take(k);
    if (!f || f.value === null) return undefined;
    return String(runtime(f.value, f, k));
  };
  const num = (k: string): number | undefined => {
    const f = take(k);
    if (!f || f.value === null) return undefined;
    const n = typeof f.value === 'number' ? f.value : Number(f.value);
    if (!Number.isFinite(n)) {
      problem(f, k, `expected a number, got ${JSON.stringify(f.value)}`);
      return undefined;
    }
    return n;
  };
  const bool = (k: string): boolean | undefined => {
    const f = take(k);
    if (!f || f.value === null) return undefined;
    return f.value === true || f.value === 'true';
  };
  const list = (k: string): string[] | undefined => {
    const f = take(k);
    if (!f || f.value === null) return undefined;
    // Packer decodes a single string as a one-item list (bento's legacy boot_command is one string).
    if (typeof f.value === 'string') return [String(runtime(f.value, f, k))];
    if (!Array.isArray(f.value)) {
      problem(f, k, `expected a list, got ${JSON.stringify(f.value)}`, `write ${k} = ["..."]`);
      return undefined;
    }
    return f.value.map((x) => String(runtime(x, f, k)));
  };

  const source: Record<string, unknown> = {};
  const set = (key: string | string[], value: unknown, packerField: string) => {
    if (value === undefined) return;
    const keys = Array.isArray(key) ? key : [key];
    let o = source;
    for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
    o[keys[keys.length - 1]!] = value;
    origin(['source', ...keys], fields.get(packerField), packerField);
  };
  // A field whose Packer value passes unchanged under another name: the name is the field registry's.
  const renamed = (field: keyof typeof sourceFields & string) => {
    const p = packerNameOf(sourceFields, field);
    set(field, str(p), p);
  };

  // The image to start from.
  const isoUrls = list('iso_urls');
  // Packer tries iso_urls in order: a local path that does not exist fails and the next entry is tried
  // (templates list a local cache first, a mirror last). kiln takes the first entry that can succeed.
  const usable = (u: string) =>
    hasUrlScheme(u) && !u.startsWith('file://') ? true : existsSync(abs(u.replace(/^file:\/\//, '')));
  const firstUsable = isoUrls?.findIndex(usable) ?? -1;
  const pick = firstUsable < 0 ? 0 : firstUsable;
  let isoUrl = str('iso_url') ?? isoUrls?.[pick];
  if (isoUrls && !fields.has('iso_url') && isoUrls.length > 1) {
    const at = `${fields.get('iso_urls')!.at.file}:${fields.get('iso_urls')!.at.line}: iso_urls`;
    if (pick > 0)
      out.notes.push(
        `${at}: ${isoUrls.slice(0, pick).join(', ')}: not found on this machine, so kiln uses ${isoUrls[pick]} (Packer tries the entries in order)`,
      );
    if (pick < isoUrls.length - 1)
      out.notes.push(`${at}: kiln uses ${isoUrls[pick]}; the entries after it are not tried if that download fails`);
  }
  const diskImage = bool('disk_image') ?? false;
  if (isoUrl === undefined)
    problem(
      undefined,
      'iso_url',
      'the qemu builder needs iso_url or iso_urls',
      'add iso_url (with disk_image = true for a disk image)',
    );
  else {
    isoUrl = isoUrl.startsWith('file://') ? isoUrl.slice(7) : isoUrl;
    set(diskImage ? 'base_image' : 'iso', abs(isoUrl), fields.has('iso_url') ? 'iso_url' : 'iso_urls');
  }
  const backing = take('use_backing_file');
  if (backing?.value === true)
    out.notes.push(
      `${backing.at.file}:${backing.at.line}: use_backing_file: kiln always writes standalone artifacts (its build disk is an overlay on the cached image)`,
    );
  const sum = take('iso_checksum');
  const sumType = str('iso_checksum_type');
  const sumUrl = str('iso_checksum_url');
  let checksum: string | undefined;
  if (sumUrl) checksum = `file:${abs(sumUrl)}`;
  else if (sum && typeof sum.value === 'string') {
    const v = sum.value.trim();
    const m = /^([a-z0-9]+):(.+)$/i.exec(v);
    const kind = (
      m
        ? m[1]!
        : (sumType ??
          (v.length === 64
            ? 'sha256'
            : v.length === 128
              ? 'sha512'
              : v.length === 32
                ? 'md5'
                : v.length === 40
                  ? 'sha1'
                  : v === 'none'
                    ? 'none'
                    : '?'))
    ).toLowerCase();
    const hex = m ? m[2]! : v;
    if (kind === 'none') checksum = 'none';
    else if (kind === 'file') checksum = `file:${abs(hex)}`;
    else if (kind === 'sha256' || kind === 'sha512') checksum = `${kind}:${hex}`;
    else if ((kind === 'md5' && /^[0-9a-f]{32}$/i.test(hex)) || (kind === 'sha1' && /^[0-9a-f]{40}$/i.test(hex))) {
      // Packer accepts them, so kiln verifies them too; but a forged image can match them.
      checksum = `${kind}:${hex}`;
      const weak = `${sum.at.file}:${sum.at.line}: iso_checksum: ${kind} is weak (files with the same ${kind} can be forged): kiln verifies it, but give the image's sha256 if it is published`;
      if (!out.notes.includes(weak)) out.notes.push(weak);
    } else
      problem(
        sum,
        'iso_checksum',
        `kiln verifies images with sha256, sha512, sha1 or md5, not ${kind === '?' ? `"${v}"` : kind}`,
        'give the image\'s sha256:<hex> (or sha512:), a file:<SUMS file> holding it, or "none"',
      );
  } else if (sum) problem(sum, 'iso_checksum', 'expected a string', 'write iso_checksum = "sha256:<hex>"');
  else
    problem(
      undefined,
      'iso_checksum',
      'Packer (and kiln) need iso_checksum',
      'add iso_checksum = "sha256:<hex>", "file:<SUMS URL>" or "none"',
    );
  set('checksum', checksum, 'iso_checksum');

  // Machine.
  const diskSize = take('disk_size');
  if (diskSize && diskSize.value !== null)
    set(
      'disk_size',
      typeof diskSize.value === 'number' || /^\d+$/.test(String(diskSize.value))
        ? `${diskSize.value}M`
        : String(diskSize.value),
      'disk_size',
    );
  else if (!diskImage) set('disk_size', '40960M', 'disk_size');
  let smp: string | undefined;
  {
    // Packer's -smp (packer-plugin-qemu's QemuSMPConfig): the count is cpus, else the product of the
    // topology's given terms, and never more than that product; then each given term.
    const [cpus, sockets, cores, threads] = ['cpus', 'sockets', 'cores', 'threads'].map((k) => num(k) ?? 0) as [
      number,
      number,
      number,
      number,
    ];
    const terms = [sockets, cores, threads].filter((n) => n > 0);
    const product = terms.length ? terms.reduce((a, n) => a * n, 1) : 0;
    const count = cpus > 0 ? (product > 0 ? Math.min(cpus, product) : cpus) : product || 1;
    set(
      'cpus',
      count,
      fields.has('cpus') ? 'cpus' : (['cores', 'sockets', 'threads'].find((k) => fields.has(k)) ?? 'cpus'),
    );
    const given = ['sockets', 'cores', 'threads'].filter((k, i) => [sockets, cores, threads][i]! > 0);
    if (given.length) smp = [String(count), ...given.map((k) => `${k}=${String(num(k))}`)].join(',');
  }
  set('memory', num('memory') ?? 512, 'memory');
  const accel = str('accelerator');
  if (accel) {
    const a = accel === 'none' ? 'tcg' : accel;
    if (['kvm', 'tcg', 'hvf', 'whpx'].includes(a)) set('accelerator', a, 'accelerator');
    else
      problem(
        fields.get('accelerator'),
        'accelerator',
        `kiln knows kvm, tcg, hvf and whpx, not "${accel}"`,
        'use one of them, or leave it out for the best available',
      );
  }
  renamed('machine');
  const efi = bool('efi_boot');
  const firmware = str('firmware');

  if (efi) set('firmware', 'uefi', 'efi_boot');
  else if (firmware) {
    if (/ovmf|efi/i.test(firmware)) {
      set('firmware', 'uefi', 'firmware');
      out.notes.push(
        `${fields.get('firmware')!.at.file}:${fields.get('firmware')!.at.line}: firmware: kiln boots UEFI with the system's OVMF (/usr/share/OVMF), not ${firmware}`,
      );
    } else
      problem(
        fields.get('firmware'),
        'firmware',
        `kiln boots SeaBIOS or the system's OVMF, not ${firmware}`,
        'remove firmware for BIOS, or set efi_boot = true for UEFI',
      );
  }
  for (const k of ['efi_firmware_code', 'efi_firmware_vars']) {
    const f = take(k);
    if (f) out.notes.push(`${f.at.file}:${f.at.line}: ${k}: ignored: kiln uses the system's OVMF_CODE_4M/OVMF_VARS_4M`);
  }
  const nd = str('net_device');
  if (nd) {
    const m: Record<string, string> = {
      'virtio-net': 'virtio-net-pci',
      'virtio-net-pci': 'virtio-net-pci',
      e1000: 'e1000',
      rtl8139: 'rtl8139',
      vmxnet3: 'vmxnet3',
    };
    if (m[nd]) set('net_device', m[nd], 'net_device');
    else
      problem(
        fields.get('net_device'),
        'net_device',
        `kiln supports virtio-net, e1000, rtl8139 and vmxnet3, not ${nd}`,
        'pick one of those',
      );
  }
  const di = str('disk_interface');
  if (di) {
    const m: Record<string, string> = {
      virtio: 'virtio',
      'virtio-scsi': 'virtio-scsi',
      ide: 'ide',
      scsi: 'scsi',
      sata: 'sata',
    };
    if (m[di]) set('disk_interface', m[di], 'disk_interface');
    else
      problem(
        fields.get('disk_interface'),
        'disk_interface',
        `kiln supports virtio, virtio-scsi, ide, sata and scsi, not ${di}`,
        'pick one of those',
      );
  }
  const qemuArgs = mapQemuArgs({ take, str, runtime, problem, notes: out.notes, communicator: str('communicator') });
  // The topology goes to QEMU as Packer gives it, unless the template's own qemuargs -smp wins (Packer's rule).
  if (smp && !qemuArgs.args.some((a) => a[0] === '-smp') && qemuArgs.sourceFields.cpus === undefined)
    qemuArgs.args.push(['-smp', smp]);
  if (qemuArgs.args.length) {
    source.qemu_args = qemuArgs.args;
    origin(['source', 'qemu_args'], qemuArgs.from, 'qemuargs');
  }
  for (const [k, v] of Object.entries(qemuArgs.sourceFields)) {
    source[k] = v;
    origin(['source', k], qemuArgs.from, 'qemuargs');
  }
  const binary = str('qemu_binary');
  // Debian's and Ubuntu's `kvm` is a wrapper: qemu-system-x86_64 -enable-kvm (alvistack's boxes name it).
  if (binary && /(^|\/)kvm$/.test(binary))
    out.notes.push(
      `${fields.get('qemu_binary')!.at.file}:${fields.get('qemu_binary')!.at.line}: qemu_binary = "${binary}": kiln runs qemu-system-x86_64, which that wrapper runs; with KVM when the host has it (accelerator)`,
    );
  // An arm64 template (Apple-silicon and Graviton users name the arm emulator): kiln's arch: aarch64.
  else if (binary && /(^|\/)qemu-system-aarch64$/.test(binary)) set('arch', 'aarch64', 'qemu_binary');
  else if (binary && !/qemu-system-x86_64$|qemu-kvm$/.test(binary))
    problem(
      fields.get('qemu_binary'),
      'qemu_binary',
      `kiln runs qemu-system-x86_64 (qemu-system-aarch64 for arm64 guests), not ${binary}`,
      'remove qemu_binary',
    );
  const headless = bool('headless');
  if (headless === false)
    out.notes.push(
      `${fields.get('headless')!.at.file}:${fields.get('headless')!.at.line}: headless: ignored: kiln always runs QEMU headless (kiln console shows the serial console)`,
    );

  // What the guest is given.
  const httpDir = str('http_directory');
  if (httpDir) set('http_directory', abs(httpDir), 'http_directory');
  const hc = take('http_content');
  if (hc && isObject(hc.value))
    set(
      'http_content',
      Object.fromEntries(
        Object.entries(hc.value).map(([k, v]) => [k.replace(/^\//, ''), String(runtime(v, hc, 'http_content'))]),
      ),
      'http_content',
    );
  // boot_steps is boot_command with a description per step: kiln types the commands.
  const steps = take('boot_steps');
  const bootSteps =
    steps && Array.isArray(steps.value)
      ? steps.value.map((s) => String(runtime(Array.isArray(s) ? (s[0] ?? '') : s, steps, 'boot_steps')))
      : undefined;
  set('boot_command', bootSteps ?? list('boot_command'), bootSteps ? 'boot_steps' : 'boot_command');
  set('boot_wait', str('boot_wait') ?? '10s', 'boot_wait');
  renamed('boot_key_interval');
  // Packer expands glob patterns in cd_files (Go's filepath.Glob); each match goes on the CD by its name.
  const cdFiles = list('cd_files')?.flatMap((p) => {
    if (!hasGlobMeta(p)) return [abs(p)];
    const matches = goGlob(abs(p));
    if (!matches.length)
      out.notes.push(
        `${fields.get('cd_files')!.at.file}:${fields.get('cd_files')!.at.line}: cd_files: warning: ${p} matches no file: nothing of it goes on the CD`,
      );
    return matches;
  });
  if (cdFiles) set('cd_files', cdFiles, 'cd_files');
  const cdc = take('cd_content');
  if (cdc && isObject(cdc.value))
    set(
      'cd_content',
      Object.fromEntries(Object.entries(cdc.value).map(([k, v]) => [k, String(runtime(v, cdc, 'cd_content'))])),
      'cd_content',
    );
  renamed('cd_label');
  // Packer 1.6.6 decodes a string given for a list by splitting it at commas ("a.cfg,b.sh").
  const floppy = list('floppy_files')
    ?.flatMap((x) => (typeof fields.get('floppy_files')!.value === 'string' ? x.split(',') : [x]))
    .filter((x) => x !== '');
  if (floppy?.length) set('floppy_files', floppy.map(abs), 'floppy_files');
  renamed('floppy_label');
  // vtpm: a TPM 2.0 from swtpm (tpm: true). A TPM 1.2 (use_tpm1) kiln does not offer; the device model is kiln's (tpm-crb).
  const vtpm = take('vtpm');
  if (vtpm && isNoOpValue(vtpm.value)) out.notes.push(noOpNote(vtpm, 'vtpm'));
  else if (vtpm) set('tpm', vtpm.value === true || vtpm.value === 'true', 'vtpm');
  const tpmDevice = take('tpm_device_type');
  if (tpmDevice && !isNoOpValue(tpmDevice.value))
    out.notes.push(
      `${tpmDevice.at.file}:${tpmDevice.at.line}: tpm_device_type: ignored: kiln attaches the TPM as tpm-crb`,
    );
  for (const k of [
    'floppy_dirs',
    'floppy_content',
    'disk_additional_size',
    'net_bridge',
    'use_tpm1',
    'cdrom_interface',
  ]) {
    const f = take(k);
    if (f && isNoOpValue(f.value)) out.notes.push(noOpNote(f, k));
    // cdrom_interface shapes the ISO -drive Packer adds, which it adds only when qemuargs give no -drive.
    else if (f && k === 'cdrom_interface' && qemuArgs.args.some((a) => a[0] === '-drive'))
      note(
        f,
        k,
        'qemuargs give their own -drive, so Packer attaches no install ISO drive of its own to shape (nor does kiln)',
      );
    else if (f)
      problem(
        f,
        k,
        'kiln has no equivalent of this qemu builder field',
        k === 'floppy_dirs' || k === 'floppy_content' ? 'list the files in floppy_files, or use cd_files' : 'remove it',
      );
  }
  // Packer has no cloud-init of its own: the template brings its seed (http_directory, cd_files), so kiln adds none.
  source.cloud_init = false;

  // Communicator.
  const comm = str('communicator') ?? 'ssh';
  if (comm === 'none') source.communicator = { type: 'none' };
  else if (comm === 'winrm') out.windows.push({ at: fields.get('communicator')!.at, what: 'communicator = "winrm"' });
  else if (comm !== 'ssh')
    problem(
      fields.get('communicator'),
      'communicator',
      `kiln talks to guests over SSH, not ${comm}`,
      'use communicator = "ssh" (or "none")',
    );
  else {
    const user = str('ssh_username');
    if (!user)
      problem(
        undefined,
        'ssh_username',
        'the SSH communicator needs ssh_username (Packer requires it too)',
        'add ssh_username = "..."',
      );
    set(['communicator', 'username'], user, 'ssh_username');
    const password = packerNameOf(sshCommunicatorFields, 'password');
    set(['communicator', 'password'], str(password), password);
    const key = str('ssh_private_key_file');
    if (key) set(['communicator', 'private_key_file'], abs(key), 'ssh_private_key_file');
    set(['communicator', 'port'], num('ssh_port'), 'ssh_port');
    const timeout = str('ssh_timeout');
    const waitTimeout = str('ssh_wait_timeout');
    set(
      ['communicator', 'timeout'],
      timeout ?? waitTimeout ?? '5m',
      fields.has('ssh_timeout') ? 'ssh_timeout' : 'ssh_wait_timeout',
    );
    // Packer does not check the guest's host key; kiln accepts the first one it sees (and says so).
    (source.communicator as Record<string, unknown>).trust_on_first_use = true;
    for (const k of [
      'ssh_agent_auth',
      'ssh_bastion_host',
      'ssh_proxy_host',
      'ssh_certificate_file',
      'ssh_host',
      'ssh_interface',
    ]) {
      const f = take(k);
      if (f && isNoOpValue(f.value)) out.notes.push(noOpNote(f, k));
      else if (f)
        problem(
          f,
          k,
          "kiln connects straight to the build VM's forwarded SSH port with a key or password",
          'remove it',
        );
    }
  }
  // winrm_* are read only by the WinRM communicator: with SSH (or none) Packer leaves them unused too.
  const winrm = [...fields.keys()].filter((k) => /^winrm_/.test(k));
  for (const k of winrm) used.add(k);
  if (winrm.length && comm !== 'winrm')
    out.notes.push(
      `${fields.get(winrm[0]!)!.at.file}:${fields.get(winrm[0]!)!.at.line}: ${winrm.join(', ')}: ignored: the communicator is ${comm}, which does not read them (nor does Packer)`,
    );
  renamed('shutdown_command');
  // Packer takes ssh_username etc. even with communicator = "none"; they are simply unused then.
  for (const k of [
    'ssh_username',
    'ssh_password',
    'ssh_private_key_file',
    'ssh_port',
    'ssh_timeout',
    'ssh_wait_timeout',
  ])
    used.add(k);
  set('shutdown_timeout', str('shutdown_timeout') ?? '5m', 'shutdown_timeout');

  // The build around the source.
  const build: Record<string, unknown> = {
    name: b.fullName.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'qemu',
  };
  if (build.name !== b.fullName)
    out.notes.push(
      `${b.source.at.file}:${b.source.at.line}: build "${b.fullName}" is called "${build.name}" in kiln (names become file names)`,
    );
  out.origins.set(JSON.stringify([...at, 'name']), { ...b.source.at, field: 'name' });
  const outDir = str('output_directory') ?? `output-${b.source.name}`;
  build.output_directory = abs(outDir);
  origin(['output_directory'], fields.get('output_directory'), 'output_directory');
  build.source = source;
  out.origins.set(JSON.stringify([...at, 'source']), { ...b.source.at, field: `source "qemu" "${b.source.name}"` });
  const format = str('format') ?? 'qcow2';
  if (!['qcow2', 'raw'].includes(format))
    problem(fields.get('format'), 'format', `the qemu builder writes qcow2 or raw, not ${format}`, 'use qcow2 or raw');
  const vmName = str('vm_name') ?? `packer-${b.source.name}`;
  const outputs: ({ format: string; name?: string; directory?: string } & Record<string, unknown>)[] = [
    { format, name: vmName, ...(bool('disk_compression') && format === 'qcow2' ? { compress: true } : {}) },
  ];
  origin(['outputs', 0], fields.get('format') ?? fields.get('vm_name'), 'format');
  mapQemuImgArgs(take('qemu_img_args'), format, outputs[0]!, problem, out.notes);

  for (const [k, f] of fields) {
    if (used.has(k)) continue;
    if (Object.hasOwn(cosmetic, k)) note(f, k, cosmetic[k]!);
    else if (isNoOpValue(f.value)) out.notes.push(noOpNote(f, k));
    else
      problem(
        f,
        k,
        `kiln does not know the qemu builder field "${k}"`,
        "remove it, or see kiln's docs/packer.md for what maps",
      );
  }

  const provisioners: Record<string, unknown>[] = [];
  for (const p of b.provisioners)
    provisioners.push(...mapStep(p, 'provisioner', [...at, 'provisioners'], provisioners.length, runtime, abs, out));
  build.provisioners = provisioners;
  const post: Record<string, unknown>[] = [];
  let checksums: string[] | undefined;
  // kiln writes no artifact straight into the folder it runs in (a --force build there would replace
  // files it did not write): Packer's default outputs (packer_<build>_libvirt.box) go to output_directory.
  const inOutputDir = (o: string) => {
    const p = abs(o);
    if (path.dirname(p) !== cwd) return p;
    out.notes.push(
      `${b.source.at.file}:${b.source.at.line}: ${b.fullName}: ${path.basename(p)} goes into the output directory ${String(build.output_directory)}, not the current folder, where kiln writes no artifacts`,
    );
    return path.join(String(build.output_directory), path.basename(p));
  };
  // A post-processor's output: its run-time Go templates rendered, relative to the folder Packer runs in.
  const postOutput = (v: Value) =>
    inOutputDir(
      String(
        runtime(
          String(v).replace(/\{\{\s*\.(BuildName|BuilderType|Provider)\s*\}\}/g, (_, k: string) =>
            k === 'BuildName' ? b.source.name : k === 'BuilderType' ? 'qemu' : 'libvirt',
          ),
          undefined,
          'output',
        ),
      ),
    );
  for (const chain of b.postProcessors) {
    for (const p of chain) {
      const f = (k: string) => p.fields.get(k);
      const pAt = (field: string) => ({
        at: p.at,
        field: `${b.fullName}: post-processor "${p.type}"${field ? `.${field}` : ''}`,
      });
      const warnUnknown = (known: string[]) => {
        for (const k of p.fields.keys())
          if (!known.includes(k) && k !== 'name')
            out.problems.push({
              ...pAt(k),
              message: `kiln does not know this ${p.type} post-processor field`,
              fix: 'remove it',
            });
      };
      switch (p.type) {
        case 'checksum': {
          warnUnknown(['checksum_types', 'output', 'keep_input_artifact']);
          const types = Array.isArray(f('checksum_types')?.value)
            ? (f('checksum_types')!.value as Value[]).map(String)
            : ['md5'];
          const bad = types.filter((x) => x !== 'sha256' && x !== 'sha512');
          if (bad.length)
            out.problems.push({
              ...pAt('checksum_types'),
              message: `kiln writes sha256 and sha512 digests, not ${bad.join(', ')}${f('checksum_types') ? '' : " (Packer's default is md5)"}`,
              fix: 'set checksum_types = ["sha256"]',
            });
          checksums = [...new Set([...(checksums ?? []), ...types.filter((x) => !bad.includes(x))])];
          if (f('output'))
            out.notes.push(
              `${p.at.file}:${p.at.line}: checksum output: ignored: kiln writes SHA256SUMS/SHA512SUMS beside the artifacts`,
            );
          break;
        }
        case 'compress': {
          warnUnknown(['output', 'compression_level', 'keep_input_artifact', 'format']);
          const o = postOutput(f('output')?.value ?? 'packer_{{.BuildName}}_{{.BuilderType}}');
          // Packer picks the archive and the compression from the name's extensions (or output + "." + format).
          const kind = f('format') ? `${o}.${String(f('format')!.value)}` : o;
          const ext = /\.(gz|xz|zst)$/.exec(kind)?.[1];
          const algorithm = ext === 'gz' ? 'gzip' : ext === 'xz' ? 'xz' : ext === 'zst' ? 'zstd' : undefined;
          const keep = f('keep_input_artifact')?.value === true;
          if (/\.(tar|tgz|zip)(\.|$)/.test(path.basename(kind)) || !path.basename(kind).includes('.')) {
            out.problems.push({
              ...pAt('output'),
              message: `Packer writes a ${/zip/.test(path.basename(kind)) ? 'zip' : 'tar'} archive of the build's files to ${o}; kiln compresses the disk image on its own and writes no archive`,
              fix: `set output = "${vmName}.gz" (the disk image, gzip'd), or make the archive in a shell-local post-processor`,
            });
            break;
          }
          if (!algorithm) {
            out.problems.push({
              ...pAt('output'),
              message: `kiln compresses with gzip, xz or zstd; "${o}" asks for another format`,
              fix: 'end output with .gz, .xz or .zst',
            });
            break;
          }
          // kiln writes "<disk image>.<ext>" beside the image: the image's name and folder give Packer's output.
          const disk = outputs[0]!;
          const want = { name: path.basename(o).slice(0, -(ext!.length + 1)), directory: path.dirname(o) };
          if (want.name !== disk.name || want.directory !== (disk.directory ?? build.output_directory)) {
            if (keep || !want.name) {
              out.problems.push({
                ...pAt('output'),
                message: `kiln writes the compressed image beside the disk image${keep ? ' it keeps (keep_input_artifact)' : ''}, as ${path.join(String(disk.directory ?? build.output_directory), `${String(disk.name)}.${ext!}`)}, not ${o}`,
                fix: keep
                  ? 'remove keep_input_artifact, or output that name'
                  : 'output a name ending in .gz, .xz or .zst',
              });
              break;
            }
            disk.name = want.name;
            if (want.directory !== build.output_directory) disk.directory = want.directory;
          }
          post.push({ type: 'compress', algorithm, formats: [format], ...(keep ? { keep_input: true } : {}) });
          break;
        }
        case 'shell-local': {
          const [m] = mapStep(p, 'post-processor', [...at, 'post_processors'], post.length, runtime, abs, out);
          if (m) {
            const { type, inline, script, env, inline_shebang, working_directory } = m;
            post.push({
              type,
              ...(inline ? { inline } : {}),
              ...(script ? { script } : {}),
              ...(env ? { env } : {}),
              ...(inline_shebang ? { inline_shebang } : {}),
              working_directory,
            });
          }
          break;
        }
        case 'manifest':
          out.notes.push(
            `${p.at.file}:${p.at.line}: manifest: kiln always writes manifest.json in the output directory${f('output') ? `, not ${String(f('output')!.value)}` : ''}`,
          );
          break;
        case 'vagrant': {
          warnUnknown([
            'output',
            'compression_level',
            'keep_input_artifact',
            'provider_override',
            'include',
            'vagrantfile_template',
            'architecture',
          ]);
          // Packer's box is packer_<build>_<provider>.box in the current folder unless output says otherwise.
          const o = postOutput(f('output')?.value ?? 'packer_{{ .BuildName }}_{{.Provider}}.box');
          const box: (typeof outputs)[number] = {
            format: 'vagrant',
            name: path.basename(o),
            ...(path.dirname(o) !== build.output_directory ? { directory: path.dirname(o) } : {}),
          };
          // Packer appends the (rendered) vagrantfile_template to the provider's Vagrantfile in the box.
          const vt = f('vagrantfile_template');
          if (vt && !isNoOpValue(vt.value)) {
            const file = abs(String(runtime(vt.value, vt, 'vagrantfile_template')));
            try {
              box.vagrantfile_extra = String(runtime(readFileSync(file, 'utf8'), vt, 'vagrantfile_template'));
            } catch (e) {
              out.problems.push({
                ...pAt('vagrantfile_template'),
                message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
                fix: 'correct the path (relative to the folder kiln runs in, as in Packer)',
              });
            }
          }
          const twin = outputs.find(
            (x) => x.format === 'vagrant' && x.name === box.name && x.directory === box.directory,
          );
          if (twin)
            out.problems.push({
              ...pAt('output'),
              message: `a vagrant post-processor before this one writes ${o} too (Packer would overwrite that box with this one)`,
              fix: 'give each vagrant post-processor an output of its own, e.g. output = "{{ .BuildName }}-2.box"',
            });
          else outputs.push(box);
          const po = f('provider_override');
          if (po && po.value !== 'libvirt')
            out.problems.push({
              ...pAt('provider_override'),
              message: `kiln writes boxes for the libvirt provider (from a QEMU image), not ${String(po.value)}`,
              fix: 'remove provider_override',
            });
          if (f('compression_level'))
            out.notes.push(
              `${p.at.file}:${p.at.line}: vagrant compression_level: ignored: kiln gzips the box at gzip's default level`,
            );
          // Packer copies each file to the box's top folder; its paths are relative to where it runs.
          const inc = f('include');
          if (inc && !isNoOpValue(inc.value)) {
            if (Array.isArray(inc.value)) box.include = inc.value.map((v) => abs(String(runtime(v, inc, 'include'))));
            else
              out.problems.push({
                ...pAt('include'),
                message: `include is a list of file paths, not ${JSON.stringify(inc.value)}`,
                fix: 'write include = ["info.json"]',
              });
          }
          break;
        }
        default:
          out.problems.push({
            ...pAt(''),
            message: `kiln has no "${p.type}" post-processor`,
            fix: 'kiln maps checksum, compress, shell-local, manifest and vagrant; remove this one (kiln publish uploads artifacts)',
          });
      }
    }
  }
  build.outputs = outputs;
  if (checksums?.length) build.checksums = checksums;
  if (post.length) build.post_processors = post;
  return build;
}

/**
 * qemu_img_args: Packer's extra qemu-img arguments. Those of convert decide the artifact: kiln's convert
 * (qemu-img convert -O <format>, -o compat=1.1 for qcow2, -c with disk_compression) takes -c and
 * compat=1.1 and refuses the rest. create and resize shape the build disk only, which convert rewrites
 * (in Packer too, unless skip_compaction), so they are noted and left out.
 */
function mapQemuImgArgs(
  f: Field | undefined,
  format: string,
  disk: Record<string, unknown>,
  problem: (f: Field | undefined, field: string, message: string, fix?: string) => void,
  notes: string[],
): void {
  if (!f || isNoOpValue(f.value)) return;
  // HCL gives a nested block as a one-item list of maps; legacy JSON as the map.
  const block = Array.isArray(f.value) && f.value.length === 1 ? f.value[0]! : f.value;
  if (!isObject(block)) {
    problem(f, 'qemu_img_args', 'expected a block of argument lists', 'write qemu_img_args { convert = ["-c"] }');
    return;
  }
  for (const [k, v] of Object.entries(block)) {
    const args = Array.isArray(v) ? v.map(String) : v === null ? [] : [String(v)];
    if (!args.length) continue;
    if (k === 'create' || k === 'resize') {
      notes.push(
        `${f.at.file}:${f.at.line}: qemu_img_args.${k} (${args.join(' ')}): ignored: they shape the build disk only, and the artifact is written anew by qemu-img convert`,
      );
      continue;
    }
    if (k !== 'convert') {
      problem(f, `qemu_img_args.${k}`, "Packer's qemu_img_args has convert, create and resize only");
      continue;
    }
    const refused: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      if (a === '-c' && format === 'qcow2') disk.compress = true;
      else if (a === '-o' && i + 1 < args.length) {
        const opts = args[++i]!.split(',').filter((o) => !(format === 'qcow2' && o === 'compat=1.1'));
        if (opts.length) refused.push(`-o ${opts.join(',')}`);
      } else refused.push(a);
    }
    if (refused.length) {
      problem(
        f,
        'qemu_img_args.convert',
        `kiln writes the artifact with qemu-img convert -O ${format}${format === 'qcow2' ? ' -o compat=1.1' : ''} (-c with disk_compression); ${refused.join(' ')} would make another artifact, which kiln does not write`,
        'remove them; to convert the image again, run qemu-img in a shell-local post-processor',
      );
    }
  }
}

/** A Packer provisioner (or shell-local post-processor) as kiln steps, the first at `list`[`index`]: usually one, one per source for a file provisioner's `sources`. */
function mapStep(
  p: PackerStep,
  kind: 'provisioner' | 'post-processor',
  list: (string | number)[],
  index: number,
  runtime: (v: Value, f: Field | undefined, field: string, exec?: boolean) => Value,
  abs: (p: string) => string,
  out: Out,
): Record<string, unknown>[] {
  const at = [...list, index];
  const fields = new Map(p.fields);
  // A post-processor's name only labels it (for -only/-except and Packer's output): nothing to map.
  if (kind === 'post-processor') fields.delete('name');
  const used = new Set<string>();
  const take = (k: string) => {
    used.add(k);
    return fields.get(k);
  };
  const label = `${kind} "${p.type}"`;
  const problem = (k: string, message: string, fix?: string) =>
    out.problems.push({ at: fields.get(k)?.at ?? p.at, field: `${label}${k ? `.${k}` : ''}`, message, fix });
  const str = (k: string, exec = false) => {
    const f = take(k);
    return f && f.value !== null ? String(runtime(f.value, f, k, exec)) : undefined;
  };
  const strs = (k: string) => {
    const f = take(k);
    if (!f || f.value === null) return undefined;
    if (!Array.isArray(f.value)) {
      problem(k, 'expected a list');
      return undefined;
    }
    return f.value.map((x) => String(runtime(x, f, k)));
  };
  const env = () => {
    const e: Record<string, string> = {};
    for (const kv of strs('environment_vars') ?? []) {
      const eq = kv.indexOf('=');
      if (eq <= 0) problem('environment_vars', `"${kv}" is not NAME=value`);
      else e[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    const m = take('env');
    if (m && isObject(m.value)) for (const [k, v] of Object.entries(m.value)) e[k] = String(runtime(v, m, 'env'));
    return Object.keys(e).length ? e : undefined;
  };
  const r: Record<string, unknown> = { type: p.type };
  const more: Record<string, unknown>[] = [];
  // Packer writes inline commands into a script starting "#!<inline_shebang>" ("/bin/sh -e" by default).
  const shebang = () => {
    const v = str('inline_shebang');
    return v === undefined || v === '' || v === '/bin/sh -e' ? undefined : v;
  };
  const common = () => {
    r.pause_before = str('pause_before');
    r.timeout = str('timeout');
    const mr = take('max_retries');
    if (mr && mr.value !== null) r.max_retries = Number(mr.value);
  };
  const cosmeticStep: Record<string, string> = {
    skip_clean: 'kiln removes its uploaded script after running it',
    start_retry_timeout: 'kiln runs once the guest answers SSH',
    use_env_var_file: 'kiln passes variables on the command line',
    env_var_format: "kiln writes env as NAME='value'",
    generated: 'kiln copies the file when the provisioner runs',
    binary: 'kiln uploads scripts as they are',
    use_linux_pathing: 'kiln runs on Linux',
    keep_input_artifact: 'kiln keeps the artifacts it wrote',
    only_on: 'kiln runs on Linux',
  };
  // Packer's provisioner types are kiln's kind names: each kind maps its own fields (provisioner-kinds/).
  if (!isProvisionerType(p.type)) {
    if (windowsProvisioners.has(p.type)) out.windows.push({ at: p.at, what: p.type });
    else
      out.problems.push({
        at: p.at,
        field: label,
        message: `kiln has no "${p.type}" provisioner`,
        fix: `kiln runs ${listed(provisionerTypes)} provisioners`,
      });
    return [];
  }
  provisionerKinds[p.type].fromPacker({
    kind,
    r,
    more,
    fields,
    take,
    str,
    strs,
    env,
    shebang,
    common,
    problem,
    abs,
    runtime,
  });
  for (const [k, f] of fields) {
    if (used.has(k)) continue;
    if (Object.hasOwn(cosmeticStep, k))
      out.notes.push(`${f.at.file}:${f.at.line}: ${label}.${k}: ignored: ${cosmeticStep[k]}`);
    else if (isNoOpValue(f.value)) out.notes.push(noOpNote(f, `${label}.${k}`));
    else problem(k, `kiln does not know the ${p.type} ${kind} field "${k}"`, "remove it, or see kiln's docs/packer.md");
  }
  // A script that is /dev/null (packer-maas's default "no customisation") is an empty script: Packer
  // uploads and runs it, which does nothing. kiln leaves it out, and the step when nothing else is left.
  const empty = (x: unknown) => x === '/dev/null';
  const emptied: string[] = [];
  if (empty(r.script)) {
    emptied.push('script');
    delete r.script;
  }
  if (Array.isArray(r.scripts) && r.scripts.some(empty)) {
    emptied.push('scripts');
    r.scripts = r.scripts.filter((x) => !empty(x));
    if (!(r.scripts as unknown[]).length) delete r.scripts;
  }
  if (emptied.length) {
    const f = fields.get(emptied[0]!)!;
    const gone = r.script === undefined && r.scripts === undefined && r.inline === undefined && r.command === undefined;
    out.notes.push(
      `${f.at.file}:${f.at.line}: ${label}.${emptied[0]}: /dev/null is an empty script (running it does nothing, in Packer too): ${gone ? `this ${kind} is left out` : 'left out'}`,
    );
    if (gone && !more.length) return [];
  }
  const steps = [r, ...more];
  steps.forEach((s, i) => {
    for (const k of Object.keys(s)) if (s[k] === undefined) delete s[k];
    out.origins.set(JSON.stringify([...list, index + i]), { ...p.at, field: label });
  });
  return steps;
}
