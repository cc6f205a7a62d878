/** `kiln inspect`: what a template will do, with variables resolved and sensitive values masked. */
import type { LoadedTemplate } from '../template/load.js';
import { describeProvisioner } from '../template/provisioner-kinds/index.js';
import { artifactName } from '../template/output-formats.js';
import { maskSecrets } from '../ui/events.js';
import { resolveSeedDelivery } from '../cloudinit/delivery.js';
import { durationSetting, formatBytes } from '../util/units.js';

export function inspectTemplate(t: LoadedTemplate, json: boolean): string {
  const vars = Object.fromEntries(
    Object.entries(t.variables.values).map(([k, v]) => [k, t.variables.sensitive.has(k) ? '<sensitive>' : v]),
  );
  if (json) {
    return (
      maskSecrets(
        JSON.stringify({ file: t.file, variables: vars, builds: t.template.builds }, null, 2),
        t.variables.secrets,
      ) + '\n'
    );
  }
  const lines: string[] = [`template: ${t.file}`, 'variables:'];
  for (const [k, v] of Object.entries(vars)) lines.push(`  ${k} = ${JSON.stringify(v)}  (${t.variables.origin[k]})`);
  if (!Object.keys(vars).length) lines.push('  (none)');
  for (const b of t.template.builds) {
    const s = b.source;
    lines.push(
      '',
      `build "${b.name}":`,
      `  ${s.media.kind === 'iso' ? 'installer ISO' : 'base image'}: ${s.media.location} (checksum ${s.checksum === 'none' ? 'not verified' : s.checksum.slice(0, 20) + '...'})`,
      `  machine: ${s.machine}${s.arch ? ` (${s.arch})` : ''}, ${s.cpus} vCPU, ${s.memory} MiB, firmware ${s.firmware}, accelerator ${s.accelerator}${s.disk_size !== undefined ? `, disk ${formatBytes(s.disk_size)}` : ''}`,
      `  cloud-init: ${s.cloud_init === false ? 'off' : `on (${s.cloud_init.delivery ?? resolveSeedDelivery(undefined, s.qemu_args).delivery + ", kiln's choice"})`}`,
      `  communicator: ${s.communicator.type === 'ssh' ? `ssh as ${s.communicator.username}, timeout ${durationSetting(s.communicator.timeout)}` : 'none'}`,
      '  provisioners:',
    );
    b.provisioners.forEach((p, i) => lines.push(`    ${i + 1}. ${describeProvisioner(p)}`));
    if (!b.provisioners.length) lines.push('    (none)');
    lines.push(`  outputs (into ${b.output_directory}):`);
    for (const o of b.outputs)
      lines.push(
        `    - ${artifactName(b.name, o)} (${o.format}${o.compress ? ', compressed' : ''})${o.directory ? ` in ${o.directory}` : ''}`,
      );
  }
  return maskSecrets(lines.join('\n'), t.variables.secrets) + '\n';
}
