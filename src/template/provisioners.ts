/** Pure facts about a template's provisioners: how one is described, and which builds it applies to. */
import type { Provisioner } from './schema.js';

export function describeProvisioner(p: Provisioner): string {
  switch (p.type) {
    case 'shell': return p.inline ? `shell (${p.inline.length} inline line${p.inline.length === 1 ? '' : 's'})` : `shell (${(p.script ? [p.script] : p.scripts ?? []).map((s) => s.split('/').pop()).join(', ')})`;
    case 'file': return p.direction === 'download' ? `file (download ${p.source})` : `file (${p.content !== undefined ? 'content' : p.source?.split('/').pop()} -> ${p.destination})`;
    case 'shell-local': return p.inline ? 'shell-local (inline)' : `shell-local (${p.script?.split('/').pop()})`;
    case 'breakpoint': return `breakpoint (${p.note})`;
    case 'ansible': case 'ansible-local': return `${p.type} (${p.playbook_file.split('/').pop()})`;
    case 'puppet-masterless': return `puppet-masterless (${p.manifest_file.split('/').pop()})`;
  }
}

export function appliesTo(p: Provisioner, buildName: string): boolean {
  if (p.only && !p.only.includes(buildName)) return false;
  if (p.except?.includes(buildName)) return false;
  return true;
}
