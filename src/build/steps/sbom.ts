/** Step: read the guest's installed packages (dpkg or rpm) for the manifest's software bill of materials. */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';

const listPackages = [
  'if command -v dpkg-query >/dev/null 2>&1; then echo "#dpkg"; dpkg-query -W -f=\'${Package}\\t${Version}\\t${Architecture}\\n\';',
  // busybox ships an "rpm" applet without --qf: only a working rpm counts.
  'elif command -v rpm >/dev/null 2>&1 && out=$(rpm -qa --qf \'%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n\' 2>/dev/null); then echo "#rpm"; printf "%s\\n" "$out";',
  'else echo "#none"; fi',
].join(' ');

export function parsePackageList(out: string): NonNullable<import('../state.js').BuildState['sbom']> {
  const lines = out.split('\n').filter(Boolean);
  const manager = (lines.shift()?.slice(1) ?? 'none') as 'dpkg' | 'rpm' | 'none';
  const packages = lines.map((l) => { const [name = '', version = '', arch = ''] = l.split('\t'); return { name, version, arch }; })
    .filter((p) => p.name).sort((a, b) => a.name.localeCompare(b.name));
  return { manager: ['dpkg', 'rpm'].includes(manager) ? manager : 'none', packages };
}

export const sbomStep: Step = {
  name: 'list guest packages',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const ssh = await sshSession(ctx);
    try {
      ctx.state.sbom = parsePackageList(await ssh.run(listPackages, ctx.signal));
    } catch (e) {
      ctx.signal.throwIfAborted();
      // The package list is a record, not a requirement: a guest that cannot produce it still builds.
      ctx.log(`could not list the guest's packages: ${(e as Error).message}`, 'warn');
      return;
    }
    ctx.log(`${ctx.state.sbom.packages.length} packages (${ctx.state.sbom.manager}) recorded for the manifest`, 'debug');
  },
};
