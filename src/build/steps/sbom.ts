/**
 * Step: read the guest's installed packages (dpkg or rpm), the licences they state and the OS they
 * belong to, for the manifest and the SBOM files (SPDX, CycloneDX) written beside the artifacts.
 */
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { sshSession } from '../../provisioners/context.js';
import type { GuestPackages } from '../../artifacts/guest-packages.js';
import { kilnVersion } from '../../version.js';
import { guestScript } from '../../util/guest-scripts.js';
import { cloudInitFinalWaitShell } from '../guest-finishing.js';

/**
 * What lists the packages: list-packages.sh, on a cloud-init guest after cloud-init's last stage
 * ended (it may install packages; the list runs beside the clean-up, which waits for it too).
 */
export function listPackagesScript(cloudInit: boolean): string {
  if (!cloudInit) return guestScript('list-packages');
  return cloudInitFinalWaitShell() + 'cloud_init_final_wait || true\n' + guestScript('list-packages');
}

/** The package list, read by src/guest-scripts/list-packages.sh (sections marked by "#" lines), given to sh on stdin. */
async function listPackages(
  ssh: Awaited<ReturnType<typeof sshSession>>,
  cloudInit: boolean,
  signal: AbortSignal,
): Promise<string> {
  let out = '';
  let err = '';
  const r = await ssh.exec('sh -s', {
    stdin: listPackagesScript(cloudInit),
    stdout: (s) => {
      out += s;
    },
    stderr: (s) => {
      err += s;
    },
    signal,
  });
  if (r.exitCode !== 0)
    throw new Error(
      `the package list (sh -s < list-packages.sh) exited with ${r.exitCode ?? 'no status'}${err.trim() ? `: ${err.trim().split('\n').slice(-3).join(' ')}` : ''}`,
    );
  return out;
}

/** /etc/os-release's value of `key`, unquoted. */
function osValue(lines: string[], key: string): string | undefined {
  const line = lines.find((l) => l.startsWith(`${key}=`));
  return (
    line
      ?.slice(key.length + 1)
      .trim()
      .replace(/^(["'])(.*)\1$/, '$2') || undefined
  );
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
  const packages = (sections.get(manager) ?? [])
    .map((l) => l.split('\t'))
    // dpkg's fourth field is the package's state: only installed ones are in the image.
    .filter(([name, , , status]) => name && (status === undefined || status === 'installed'))
    .map(([name = '', version = '', arch = '']) => ({
      name,
      version,
      arch,
      ...(licences.has(name) ? { licenses: licences.get(name)! } : {}),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const os = sections.get('os') ?? [];
  const id = osValue(os, 'ID');
  return {
    manager,
    packages,
    ...(id ? { os: { id, ...(osValue(os, 'VERSION_ID') ? { versionId: osValue(os, 'VERSION_ID') } : {}) } } : {}),
  };
}

/**
 * Reads the list, then records it: its failure is a warning (the package list is a record, not a
 * requirement, so a guest that cannot produce it still builds); an interrupt ends it quietly.
 */
async function recordPackages(ctx: BuildContext): Promise<void> {
  const started = performance.now();
  try {
    const ssh = await sshSession(ctx);
    // When and by which kiln: a later build converted from this disk in the layer cache says so.
    ctx.state.sbom = {
      ...parsePackageList(await listPackages(ssh, ctx.build.source.cloud_init !== false, ctx.signal)),
      recordedAt: new Date().toISOString(),
      kilnVersion,
    };
  } catch (e) {
    if (!ctx.signal.aborted) ctx.log(`could not list the guest's packages: ${(e as Error).message}`, 'warn');
    return;
  }
  ctx.state.timings['package list (beside the clean-up and trim)'] = performance.now() - started;
  const withLicence = ctx.state.sbom.packages.filter((p) => p.licenses).length;
  ctx.log(
    `${ctx.state.sbom.packages.length} packages (${ctx.state.sbom.manager}; ${withLicence} stating their licence) recorded for the manifest and SBOM`,
    'debug',
  );
}

export const sbomStep: Step = {
  name: 'list guest packages',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  run(ctx) {
    // Beside the clean-up and the trim (the script waits for cloud-init's last stage first, as the
    // clean-up does): under TCG the list takes about 1 s of the guest's CPU, the trim mostly the host's
    // I/O. The shut-down step waits for it; so does this step's clean-up, before the SSH session closes.
    const listing = recordPackages(ctx);
    (ctx.state.besideGuest ??= []).push(listing);
    return Promise.resolve(() => listing);
  },
};
