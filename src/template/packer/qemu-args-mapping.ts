/**
 * Packer's cpu_model and qemuargs mapped onto kiln's qemu_args. Kept apart from the builder's other
 * fields (mapping.ts): Packer's rules for its own QEMU command line are a subject of their own.
 */
import type { Value } from './eval.js';
import type { Field } from './model.js';

export interface QemuArgsMappingContext {
  /** The builder field of that name, marked as handled. */
  take: (k: string) => Field | undefined;
  /** take() as a rendered string; undefined when unset or null. */
  str: (k: string) => string | undefined;
  /** Renders Packer's run-time Go templates ({{ .HTTPIP }}) in a value. */
  runtime: (v: Value, f: Field | undefined, field: string) => Value;
  problem: (f: Field | undefined, field: string, message: string, fix?: string) => void;
  notes: string[];
}

export interface MappedQemuArgs {
  args: string[][];
  from: Field | undefined;
  /** kiln source fields the arguments decide (set over what the builder's own fields said). */
  sourceFields: Record<string, unknown>;
}

export function mapQemuArgs({ take, str, runtime, problem, notes }: QemuArgsMappingContext): MappedQemuArgs {
  const cpuModel = str('cpu_model');
  const qemuArgs: string[][] = [];
  if (cpuModel) qemuArgs.push(['-cpu', cpuModel]);
  const qa = take('qemuargs');
  if (qa && Array.isArray(qa.value)) {
    const argv = qa.value.map((x) => (Array.isArray(x) ? x.map((y) => String(runtime(y, qa, 'qemuargs'))) : [String(runtime(x, qa, 'qemuargs'))]));
    // Packer users bring their own user network with the SSH forward: kiln makes that network itself.
    const netIds = new Set<string>();
    for (const a of argv) if (a[0] === '-netdev' && /^user,/.test(a[1] ?? '') && /hostfwd=.*:22\b|\$\{build\.ssh_port\}/.test(a[1] ?? '')) netIds.add(/id=([^,]+)/.exec(a[1]!)?.[1] ?? '');
    for (const a of argv) {
      if (a[0] === '-netdev' && netIds.has(/id=([^,]+)/.exec(a[1] ?? '')?.[1] ?? '\0')) { notes.push(`${qa.at.file}:${qa.at.line}: qemuargs: ${a.join(' ')}: ignored: kiln makes the guest's user network and its SSH forward itself`); continue; }
      if (a[0] === '-device' && [...netIds].some((id) => (a[1] ?? '').includes(`netdev=${id}`))) { notes.push(`${qa.at.file}:${qa.at.line}: qemuargs: ${a.join(' ')}: ignored: kiln plugs in the network card itself (net_device)`); continue; }
      qemuArgs.push(a);
    }
  } else if (qa) problem(qa, 'qemuargs', 'expected a list of lists of strings', 'write qemuargs = [["-cpu", "max"]]');
  return { args: qemuArgs, sourceFields: {}, from: qa ?? (cpuModel !== undefined ? take('cpu_model') : undefined) };
}
