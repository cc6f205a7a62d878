/**
 * Step: read the guest's installed packages (dpkg or rpm), the licences they state and the OS they
 * belong to, for the manifest and the SBOM files (SPDX, CycloneDX) written beside the artifacts.
 */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';
import type { GuestPackages } from '../../artifacts/guest-packages.js';
import { kilnVersion } from '../../version.js';

/**
 * One shell command, sections marked by "#" lines. dpkg: each package's state too (removed packages
 * whose configuration is left are not installed); licences from the machine-readable copyright files
 * (a first line "Format: ..."; one awk over all of them). rpm: the LICENSE tag.
 */
const listPackages = [
  'echo "#os"; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null;',
  String.raw`if command -v dpkg-query >/dev/null 2>&1; then echo "#dpkg"; dpkg-query -W -f='${'$'}{Package}\t${'$'}{Version}\t${'$'}{Architecture}\t${'$'}{db:Status-Status}\n';`,
  String.raw`echo "#licenses"; awk 'FNR==1{n=FILENAME; sub("^/usr/share/doc/","",n); sub("/copyright$","",n); m=($0 ~ /^Format:/)} m && /^License:/{sub(/^License:[ \t]*/,""); sub(/[ \t\r]+$/,""); if($0!="") print n "\t" $0}' /usr/share/doc/*/copyright 2>/dev/null;`,
  // busybox ships an "rpm" applet without --qf: only a working rpm counts.
  String.raw`elif command -v rpm >/dev/null 2>&1 && out=$(rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n' 2>/dev/null); then echo "#rpm"; printf "%s\n" "$out";`,
  String.raw`echo "#licenses"; rpm -qa --qf '%{NAME}\t%{LICENSE}\n' 2>/dev/null;`,
  'else echo "#none"; fi',
].join(' ');

export { listPackages as listPackagesCommand };

/** /etc/os-release's value of `key`, unquoted. */
function osValue(lines: string[], key: string): string | undefined {
  const line = lines.find((l) => l.startsWith(`${key}=`));
  return line?.slice(key.length + 1).trim().replace(/^(["'])(.*)\1$/, '$2') || undefined;
}

export function parsePackageList(out: string): GuestPackages {
  const sections = new Map<string, string[]>();
  let current = '';
  let manager: GuestPackages['manager'] = 'none';
  for (const line of out.split('\n')) {
    if (/^#(os|dpkg|rpm|none|licenses)$/.test(line)) {
      current = line.slice(1);
      if (current === 'dpkg' || current === 'rpm') manager = current;
      sections.set(current, []);
    } else if (line && current) sections.get(current)!.push(line);
  }
  const licences = new Map<string, string[]>();
  for (const l of sections.get('licenses') ?? []) {
    const [name = '', licence = ''] = l.split('\t');
    if (!name || !licence || licence === '(none)') continue;
    const list = licences.get(name) ?? [];
    if (!list.includes(licence)) list.push(licence);
    licences.set(name, list);
  }
  const packages = (sections.get(manager) ?? []).map((l) => l.split('\t'))
    // dpkg's fourth field is the package's state: only installed ones are in the image.
    .filter(([name, , , status]) => name && (status === undefined || status === 'installed'))
    .map(([name = '', version = '', arch = '']) => ({ name, version, arch, ...(licences.has(name) ? { licenses: licences.get(name)! } : {}) }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const os = sections.get('os') ?? [];
  const id = osValue(os, 'ID');
  return { manager, packages, ...(id ? { os: { id, ...(osValue(os, 'VERSION_ID') ? { versionId: osValue(os, 'VERSION_ID') } : {}) } } : {}) };
}

export const sbomStep: Step = {
  name: 'list guest packages',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const ssh = await sshSession(ctx);
    try {
      // When and by which kiln: a later build converted from this disk in the layer cache says so.
      ctx.state.sbom = { ...parsePackageList(await ssh.run(listPackages, ctx.signal)), recordedAt: new Date().toISOString(), kilnVersion };
    } catch (e) {
      ctx.signal.throwIfAborted();
      // The package list is a record, not a requirement: a guest that cannot produce it still builds.
      ctx.log(`could not list the guest's packages: ${(e as Error).message}`, 'warn');
      return;
    }
    const withLicence = ctx.state.sbom.packages.filter((p) => p.licenses).length;
    ctx.log(`${ctx.state.sbom.packages.length} packages (${ctx.state.sbom.manager}; ${withLicence} stating their licence) recorded for the manifest and SBOM`, 'debug');
  },
};
