/**
 * UEFI firmware chosen through QEMU's firmware descriptors (docs/interop/firmware.json in QEMU), the way
 * libvirt and mkosi choose it: the JSON files in /usr/share/qemu/firmware, /etc/qemu/firmware and
 * ~/.config/qemu/firmware, a later directory's file replacing an earlier one of the same name (an empty
 * file hides it), all taken in file-name order (the number in front is the priority). The first whose
 * interface, target (architecture + machine glob) and features fit wins. Distributions keep their OVMF
 * paths and variants there, so kiln hard-codes none.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { archProfiles, type GuestArch } from './arch.js';
import { KilnError } from '../util/errors.js';

/** What a template asks for: plain UEFI, UEFI with Secure Boot on and the usual keys enrolled, or one descriptor file. */
export type FirmwareRequest = { kind: 'uefi' } | { kind: 'uefi-secure' } | { kind: 'descriptor'; file: string };

export interface FirmwareDescriptor {
  file: string;
  description: string;
  interfaceTypes: string[];
  device: string;
  code: string;
  /** The variable store template, copied per build; absent for a firmware with its variables built in. */
  varsTemplate?: string;
  targets: { architecture: string; machines: string[] }[];
  features: string[];
}

export interface ResolvedFirmware {
  descriptor: string;
  description: string;
  code: string;
  varsTemplate: string;
  /** The machine QEMU runs: the template's, or q35 when the firmware needs SMM and the template kept the default pc. */
  machine: string;
  /** -machine ...,smm=on and a secure pflash: the firmware protects its variables in SMM (Secure Boot builds). */
  smm: boolean;
  secureBoot: boolean;
  enrolledKeys: boolean;
}

/** Where QEMU's descriptors live, lowest precedence first (QEMU's firmware.json "search paths"). */
export function defaultDescriptorDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const config = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  return ['/usr/share/qemu/firmware', '/etc/qemu/firmware', path.join(config, 'qemu/firmware')];
}

/** The descriptor files in effect, in priority order: by file name, a later directory's file replacing an earlier one's. */
export function listDescriptors(dirs: readonly string[]): string[] {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => n.endsWith('.json'))) byName.set(name, path.join(dir, name));
  }
  return (
    [...byName.keys()]
      .sort()
      .map((n) => byName.get(n)!)
      // An empty file masks the same name from a lower directory (how an admin turns one off).
      .filter((f) => {
        try {
          return statSync(f).size > 0;
        } catch {
          return false;
        }
      })
  );
}

function fail(file: string, field: string, why: string): never {
  throw new KilnError(`${file}: ${field}: ${why}`, {
    fix: `this is not a QEMU firmware descriptor kiln can use; point firmware: at a descriptor with interface-types, mapping.executable.filename and targets (see /usr/share/qemu/firmware/*.json)`,
  });
}

export function parseDescriptor(file: string, text: string): FirmwareDescriptor {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    return fail(file, 'JSON', (e as Error).message);
  }
  const strings = (v: unknown, field: string): string[] => {
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) fail(file, field, 'expected a list of strings');
    return v as string[];
  };
  const mapping = (j.mapping ?? {}) as Record<string, unknown>;
  const filename = (m: unknown): string | undefined => {
    const f = (m as { filename?: unknown } | undefined)?.filename;
    return typeof f === 'string' ? f : undefined;
  };
  const code = filename(mapping.executable);
  const device = typeof mapping.device === 'string' ? mapping.device : fail(file, 'mapping.device', 'missing');
  if (device === 'flash' && !code) fail(file, 'mapping.executable.filename', 'missing');
  if (!Array.isArray(j.targets)) fail(file, 'targets', 'expected a list');
  const targets = (j.targets as Record<string, unknown>[]).map((t, i) => ({
    architecture:
      typeof t.architecture === 'string' ? t.architecture : fail(file, `targets[${i}].architecture`, 'missing'),
    machines: strings(t.machines, `targets[${i}].machines`),
  }));
  return {
    file,
    description: typeof j.description === 'string' ? j.description : '',
    interfaceTypes: strings(j['interface-types'], 'interface-types'),
    device,
    code: code ?? '',
    varsTemplate: filename(mapping['nvram-template']),
    targets,
    features: j.features === undefined ? [] : strings(j.features, 'features'),
  };
}

/**
 * QEMU's machine aliases name versioned types (pc = pc-i440fx-7.2, q35 = pc-q35-7.2) and descriptors
 * list the versioned globs ("pc-q35-*"): compare the family, as libvirt does after asking QEMU.
 */
function canonicalMachine(machine: string): string {
  const type = machine.split(',')[0]!;
  if (type === 'pc') return 'pc-i440fx-latest';
  if (type === 'q35') return 'pc-q35-latest';
  if (type === 'virt') return 'virt-latest'; // arm's virt is virt-7.2; AAVMF's descriptors list virt-*
  return type;
}

/** fnmatch-style glob: * and ? only (all the descriptors use). */
function globMatch(glob: string, value: string): boolean {
  const re = new RegExp(
    `^${glob
      .split('')
      .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
      .join('')}$`,
  );
  return re.test(value);
}

export function targetsMachine(d: FirmwareDescriptor, arch: string, machine: string): boolean {
  const m = canonicalMachine(machine);
  return d.targets.some((t) => t.architecture === arch && t.machines.some((g) => globMatch(g, m)));
}

/** Why this descriptor does not fit the request, or undefined if it does. */
function mismatch(
  d: FirmwareDescriptor,
  want: 'uefi' | 'uefi-secure' | 'any',
  arch: string,
  machine: string,
): string | undefined {
  if (!d.interfaceTypes.includes('uefi')) return `interface ${d.interfaceTypes.join('/') || 'none'}, not uefi`;
  if (d.device !== 'flash' || !d.varsTemplate) return 'not a flash firmware with an nvram-template';
  if (!targetsMachine(d, arch, machine))
    return `targets ${d.targets.map((t) => `${t.architecture} ${t.machines.join('/')}`).join(', ')}, not ${arch} ${machine}`;
  const sb = d.features.includes('secure-boot');
  // Plain uefi: Secure Boot off, so unsigned bootloaders (every self-built image) boot.
  if (want === 'uefi' && sb) return 'has secure-boot';
  if (want === 'uefi-secure' && !(sb && d.features.includes('enrolled-keys')))
    return 'lacks secure-boot with enrolled-keys';
  return undefined;
}

export interface ResolveOptions {
  arch: string;
  machine: string;
  dirs?: readonly string[];
  /** Reads a descriptor (tests pass fixtures through dirs instead; kept for symmetry). */
  read?: (file: string) => string;
}

/**
 * The firmware for a request. A firmware that needs SMM (Secure Boot builds) only runs on q35: a
 * template on the default machine (pc) is moved to q35; one that names another machine gets the error.
 */
export function resolveFirmware(req: FirmwareRequest, o: ResolveOptions): ResolvedFirmware {
  const read = o.read ?? ((f: string) => readFileSync(f, 'utf8'));
  const dirs = o.dirs ?? defaultDescriptorDirs();
  const files = req.kind === 'descriptor' ? [req.file] : listDescriptors(dirs);
  const want = req.kind === 'descriptor' ? 'any' : req.kind;
  const machines = canonicalMachine(o.machine) === 'pc-i440fx-latest' ? [o.machine, 'q35'] : [o.machine];
  const why: string[] = [];
  for (const machine of machines) {
    for (const file of files) {
      let text: string;
      try {
        text = read(file);
      } catch (e) {
        if (req.kind === 'descriptor')
          throw new KilnError(
            `firmware: ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
            {
              fix: `give the path of a QEMU firmware descriptor (JSON), or firmware: uefi to let kiln pick one from ${dirs.join(', ')}`,
            },
          );
        continue;
      }
      const d = parseDescriptor(file, text);
      const no = mismatch(d, want, o.arch, machine);
      if (no) {
        if (machine === o.machine) why.push(`${path.basename(file)}: ${no}`);
        continue;
      }
      // SMM is q35's: a pc template reaches this with machine q35 only when no pc firmware fitted.
      const smm = d.features.includes('requires-smm');
      return {
        descriptor: file,
        description: d.description,
        code: d.code,
        varsTemplate: d.varsTemplate!,
        machine: machine === o.machine ? o.machine : 'q35',
        smm,
        secureBoot: d.features.includes('secure-boot'),
        enrolledKeys: d.features.includes('enrolled-keys'),
      };
    }
  }
  const asked =
    req.kind === 'descriptor'
      ? `descriptor ${req.file}`
      : req.kind === 'uefi'
        ? 'UEFI without Secure Boot'
        : 'UEFI with Secure Boot and enrolled keys';
  const where = req.kind === 'descriptor' ? '' : ` in ${dirs.join(', ')}`;
  throw new KilnError(
    `firmware: ${req.kind === 'descriptor' ? req.file : req.kind}: no QEMU firmware descriptor${where} offers ${asked} for ${o.arch} machine ${o.machine}${why.length ? `:\n    ${why.join('\n    ')}` : ' (none found)'}`,
    {
      fix: `apt-get install ${archProfiles[o.arch as GuestArch]?.firmwarePackage ?? 'ovmf'} (it ships the descriptors; make setup does it), set machine: q35 for a firmware that needs SMM, or point firmware: at a descriptor file`,
    },
  );
}
