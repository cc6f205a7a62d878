/**
 * Packer's cpu_model, qemuargs and iso_target_path mapped onto kiln's source. Kept apart from the
 * builder's other fields (mapping.ts): Packer's rules for its own QEMU command line are a subject of
 * their own. packer-plugin-qemu (builder/qemu/step_run.go) adds each of its default switches only when
 * qemuargs does not give that switch; kiln does the same (source.qemu_args_replace, src/qemu/argv.ts)
 * except for its controls (QMP, serial console, the user network with the SSH forward), and takes
 * -m, -smp and -cpu as the memory, cpus and cpu_model they are, so `kiln inspect` shows them and
 * cpu_model stays out of the layer key.
 */
import path from 'node:path';
import type { Value } from './eval.js';
import type { Field } from './model.js';
import { buildDiskDevice } from '../../qemu/live-snapshot.js';

export interface QemuArgsMappingContext {
  /** The builder field of that name, marked as handled. */
  take: (k: string) => Field | undefined;
  /** take() as a rendered string; undefined when unset or null. */
  str: (k: string) => string | undefined;
  /** Renders Packer's run-time Go templates ({{ .HTTPIP }}) in a value. */
  runtime: (v: Value, f: Field | undefined, field: string) => Value;
  problem: (f: Field | undefined, field: string, message: string, fix?: string) => void;
  notes: string[];
  /** The template's communicator (ssh when unset). */
  communicator?: string;
}

export interface MappedQemuArgs {
  args: string[][];
  from: Field | undefined;
  /** kiln source fields the arguments decide (set over what the builder's own fields said). */
  sourceFields: Record<string, unknown>;
}

/** kiln's default switches that a template's own switch of that name replaces (outside kiln's controls). */
const kilnDefaults: Record<string, string> = {
  '-drive': 'its drives (disk, UEFI firmware, install ISO, cd_files)',
  '-device': 'its devices (disk controller, virtio-rng)',
  '-machine': 'its -machine',
  '-accel': 'its -accel',
  '-boot': 'its -boot order',
  '-name': 'its -name',
  '-display': 'its -display',
};

/** Packer's net_device names for the card kiln plugs into its own network. */
const netDevices: Record<string, string> = {
  'virtio-net': 'virtio-net-pci',
  'virtio-net-pci': 'virtio-net-pci',
  e1000: 'e1000',
  rtl8139: 'rtl8139',
  vmxnet3: 'vmxnet3',
};

/** An option's value in a QEMU option string (`a=b,c=d`; ",," is a literal comma). */
function option(value: string, key: string): string | undefined {
  for (const item of value.split(/(?<!,),(?!,)/))
    if (item.startsWith(`${key}=`)) return item.slice(key.length + 1).replaceAll(',,', ',');
  return undefined;
}

function withOption(value: string, key: string, to: string): string {
  return value
    .split(/(?<!,),(?!,)/)
    .map((item) => (item.startsWith(`${key}=`) ? `${key}=${to}` : item))
    .join(',');
}

/** `-m 2048`, `-m 2G`, `-m size=2048M` as kiln's memory in MiB (QEMU's unit when none is given). */
function memoryOf(v: string): number | undefined {
  const m = /^(?:size=)?(\d+)([MG])?(?:i?B)?$/i.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * (m[2]?.toUpperCase() === 'G' ? 1024 : 1);
}

/** The vCPU count of an -smp value, and whether kiln's cpus says all of it (no topology). */
function smpOf(v: string): { cpus: number; plain: boolean } | undefined {
  if (/^\d+$/.test(v.trim())) return { cpus: Number(v), plain: true };
  const items = v.split(',');
  const first = /^\d+$/.test(items[0] ?? '') ? Number(items[0]) : undefined;
  const opt = (k: string) => {
    const o = option(v, k);
    return o === undefined ? undefined : Number(o);
  };
  const cpus =
    first ?? opt('cpus') ?? (opt('sockets') ?? 1) * (opt('dies') ?? 1) * (opt('cores') ?? 1) * (opt('threads') ?? 1);
  if (!Number.isInteger(cpus) || cpus < 1) return undefined;
  return { cpus, plain: items.length === 1 && (first !== undefined || opt('cpus') !== undefined) };
}

export function mapQemuArgs({
  take,
  str,
  runtime,
  problem,
  notes,
  communicator,
}: QemuArgsMappingContext): MappedQemuArgs {
  const sourceFields: Record<string, unknown> = {};
  const cpuModel = str('cpu_model');
  if (cpuModel) sourceFields.cpu_model = cpuModel;
  const isoTargetField = take('iso_target_path');
  const isoTarget = str('iso_target_path');
  const diskImage = take('disk_image')?.value;
  const vmName = str('vm_name');
  const outputDir = str('output_directory');
  const qa = take('qemuargs');
  const from = qa ?? (cpuModel !== undefined ? take('cpu_model') : undefined);
  // qemuargs = null or [] is no-op in Packer too.
  if (qa && qa.value !== null && !Array.isArray(qa.value))
    problem(qa, 'qemuargs', 'expected a list of lists of strings', 'write qemuargs = [["-cpu", "max"]]');
  const given = qa && Array.isArray(qa.value) ? qa.value : [];
  const at = qa ? `${qa.at.file}:${qa.at.line}: qemuargs` : 'qemuargs';
  // Packer joins a switch's other items into its value (["-drive", "file=x", ",if=virtio"]).
  const argv = given.map((x) => {
    const words = (Array.isArray(x) ? x : [x]).map((y) => String(runtime(y, qa, 'qemuargs')));
    const value = words.slice(1).join('');
    // Packer renders {{ .Name }} in qemuargs as vm_name (not the build's name).
    return value ? [words[0]!, vmName === undefined ? value : value.replaceAll('${build.name}', vmName)] : [words[0]!];
  });

  // The disk Packer builds is {{ .OutputDir }}/{{ .Name }}: a template's -drive naming it gets kiln's build disk.
  const isBuildDisk = (file: string): boolean => {
    const dir = path.dirname(file);
    const base = path.basename(file);
    const dirOk =
      dir === '${build.output_dir}' ||
      (outputDir !== undefined ? path.resolve(dir) === path.resolve(outputDir) : /^output-/.test(path.basename(dir)));
    const nameOk = base === '${build.name}' || (vmName !== undefined ? base === vmName : /^packer-/.test(base));
    return dirOk && nameOk;
  };
  const isoPaths = isoTarget === undefined ? [] : [isoTarget, path.resolve(isoTarget)];

  // Packer users bring their own user network with the SSH forward: kiln makes that network itself.
  const netIds = new Set<string>();
  for (const a of argv)
    if (a[0] === '-netdev' && /^user,/.test(a[1] ?? '') && /hostfwd=.*:22\b|\$\{build\.ssh_port\}/.test(a[1] ?? ''))
      netIds.add(/id=([^,]+)/.exec(a[1]!)?.[1] ?? '');
  // A template's own -netdev makes Packer add none (step_run.go), so a plain user network without a
  // forward is the guest's only network: with communicator none, kiln's user network is that network
  // (its unused SSH forward aside); with SSH, Packer itself could not reach the guest. Only when it is the
  // template's one network and none forwards SSH: a second network passes through as before.
  const comm = communicator ?? 'ssh';
  const netdevs = argv.filter((a) => a[0] === '-netdev');
  for (const a of netdevs.length === 1 && netIds.size === 0 ? netdevs : []) {
    if (!/^user,id=[^,]+$/.test(a[1] ?? '')) continue;
    const id = a[1]!.slice('user,id='.length);
    if (comm === 'none') netIds.add(id);
    else if (comm === 'ssh')
      problem(
        qa,
        'qemuargs',
        `${a.join(' ')}: Packer adds no network of its own when qemuargs give a -netdev, and this one forwards no port to the guest's SSH: Packer could not connect either`,
        `add the forward Packer documents: ["-netdev", "user,id=${id},hostfwd=tcp::{{ .SSHHostPort }}-:22"] (kiln then makes that network itself), or set communicator = "none"`,
      );
  }
  // Without a -netdev of its own, a card on user.0 is on Packer's default network: kiln's, in kiln.
  const ids = (flag: string) => new Set(argv.filter((a) => a[0] === flag).map((a) => option(a[1] ?? '', 'id')));
  if (!ids('-netdev').has('user.0')) netIds.add('user.0');
  // Likewise drive0 is Packer's id for the disk it builds (virtio-scsi), unless a -drive of the template takes it.
  const packerDiskId = ids('-drive').has('drive0') ? undefined : 'drive0';
  const args: string[][] = [];
  let diskNamed = false;
  let isoAttached = false;
  for (const a of argv) {
    const [flag, value = ''] = a as [string, string?];
    if (flag === '-netdev' && netIds.has(/id=([^,]+)/.exec(value)?.[1] ?? '\0')) {
      notes.push(`${at}: ${a.join(' ')}: ignored: kiln makes the guest's user network and its SSH forward itself`);
      continue;
    }
    if (flag === '-device' && [...netIds].some((id) => value.includes(`netdev=${id}`))) {
      const driver = value.split(',')[0]!;
      if (netDevices[driver]) sourceFields.net_device = netDevices[driver];
      notes.push(
        `${at}: ${a.join(' ')}: ignored: kiln plugs ${netDevices[driver] ? `this card (net_device ${netDevices[driver]})` : 'its own card (net_device)'} into its own network`,
      );
      continue;
    }
    if (flag === '-serial' && /^(mon:)?stdio$/.test(value)) {
      notes.push(
        `${at}: ${a.join(' ')}: ignored: kiln logs the serial console itself (the build's serial log, kiln console)`,
      );
      continue;
    }
    if (flag === '-cpu' && value) {
      sourceFields.cpu_model = value;
      continue;
    }
    if (flag === '-m' && memoryOf(value) !== undefined) {
      sourceFields.memory = memoryOf(value);
      continue;
    }
    if (flag === '-smp' && smpOf(value)) {
      const smp = smpOf(value)!;
      sourceFields.cpus = smp.cpus;
      if (smp.plain) continue;
      // A topology (sockets, cores, threads) stays as written; cpus says the count.
    }
    let out = value;
    if (flag === '-device' && packerDiskId && option(value, 'drive') === packerDiskId)
      out = withOption(value, 'drive', buildDiskDevice);
    // A -bios of OVMF: the image is a UEFI one.
    if (flag === '-bios' && /ovmf|efi/i.test(value)) sourceFields.firmware = 'uefi';
    // The template's own OVMF: the image is a UEFI one (kiln's publish, vagrant and OVA outputs say so).
    if (flag === '-drive' && option(value, 'if') === 'pflash') sourceFields.firmware = 'uefi';
    if (flag === '-drive') {
      const file = option(value, 'file');
      if (file !== undefined && isBuildDisk(file)) {
        diskNamed = true;
        // kiln's build disk is a qcow2 overlay whatever the output format.
        out = withOption(withOption(out, 'file', '${build.disk}'), 'format', 'qcow2');
      }
    }
    for (const p of isoPaths) {
      if (!out.split(/(?<!,),(?!,)/).some((item) => item === `file=${p}`)) continue;
      isoAttached = true;
      if (diskImage === true || diskImage === 'true') {
        problem(
          isoTargetField,
          'iso_target_path',
          `qemuargs attach ${p}, the downloaded base image: in kiln that file is its cache, which the VM must not write`,
          'remove that -drive (kiln builds on a copy of the base image, attached as {{ .OutputDir }}/{{ .Name }})',
        );
      } else out = withOption(out, 'file', '${build.iso}');
      break;
    }
    args.push(out ? [flag, out] : [flag]);
  }

  if (args.length) {
    sourceFields.qemu_args_replace = true;
    // A -machine naming an accelerator takes kiln's -accel with it (QEMU refuses both; src/qemu/argv.ts).
    const flags = args.flatMap((a) =>
      a[0] === '-machine' && option(a[1] ?? '', 'accel') !== undefined ? ['-machine', '-accel'] : [a[0]!],
    );
    const displaced = [...new Set(flags.filter((f) => Object.hasOwn(kilnDefaults, f)))];
    if (displaced.length) {
      notes.push(
        `${at}: ${displaced.join(', ')} replace kiln's defaults (${displaced.map((f) => kilnDefaults[f]).join('; ')}) as they replace Packer's; kiln keeps its QMP socket, serial console, SSH network and card`,
      );
    }
    if (displaced.includes('-drive') && !diskNamed) {
      notes.push(
        `${at}: warning: no -drive names the disk being built (${outputDir ?? '{{ .OutputDir }}'}/${vmName ?? '{{ .Name }}'}): as in Packer, the VM boots without it; add ["-drive", "file={{ .OutputDir }}/{{ .Name }},if=virtio,format=qcow2"]`,
      );
    }
  }
  if (isoTarget !== undefined && !isoAttached) {
    notes.push(
      `${isoTargetField!.at.file}:${isoTargetField!.at.line}: iso_target_path: ignored: kiln keeps downloads in its own cache (qemuargs naming ${isoTarget} get kiln's copy)`,
    );
  }
  return { args, sourceFields, from };
}
