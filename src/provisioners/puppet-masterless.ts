/**
 * The puppet-masterless provisioner: the manifest (a file or a directory), module paths and hiera
 * configuration are uploaded into a staging directory in the guest and applied with `puppet apply
 * --detailed-exitcodes`, as root unless prevent_sudo. Facts come from `facter` as FACTER_* variables.
 * The guest must have Puppet (Debian's puppet package).
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import type { ProvisionerContext } from './context.js';
import { interpolateTree } from '../template/interpolate.js';
import type { PuppetMasterlessProvisioner } from '../template/provisioner-kinds/puppet-masterless.js';
import { shellEnv } from './context.js';
import { withGuestStaging } from './guest-staging.js';
import { shellQuote as quote } from '../communicator/remote-command.js';
import { ProvisionerError } from './shell.js';
import { lastOutput, streamedOutput } from './streamed-output.js';
import { guestProxyEnv, guestProxyFor } from './guest-proxy.js';
import { ProxyBypassWatch } from './proxy-bypass.js';

/**
 * What `puppet apply --detailed-exitcodes` says with its exit code: 0 nothing to change, 2 changes
 * applied (both success), 4 failures, 6 changes and failures, 1 the catalog could not be applied at all.
 */
export function puppetExit(code: number | null): { ok: boolean; meaning: string } {
  switch (code) {
    case 0:
      return { ok: true, meaning: 'no changes were needed' };
    case 2:
      return { ok: true, meaning: 'changes were applied' };
    case 4:
      return { ok: false, meaning: 'some resources failed' };
    case 6:
      return { ok: false, meaning: 'changes were applied and some resources failed' };
    case 1:
      return { ok: false, meaning: 'puppet could not apply the catalog' };
    case 127:
      return { ok: false, meaning: "puppet is not installed in the guest (install Debian's puppet package first)" };
    default:
      return { ok: false, meaning: code === null ? 'puppet was stopped' : 'unexpected exit code' };
  }
}

/** puppet apply's command line, run in the staging directory; `env` (the build proxy's variables) is set after sudo, as the facts are. */
export function puppetCommand(
  p: PuppetMasterlessProvisioner,
  files: { manifest: string; modulePaths: string[]; hieraConfig?: string },
  facts: Record<string, string | number | boolean>,
  extraArguments: string[],
  env0: Record<string, string> = {},
): string {
  const env = shellEnv({ ...env0, ...Object.fromEntries(Object.entries(facts).map(([k, v]) => [`FACTER_${k}`, v])) });
  const puppet = p.puppet_bin_dir ? path.posix.join(p.puppet_bin_dir, 'puppet') : 'puppet';
  const argv = [
    'apply',
    '--detailed-exitcodes',
    '--color=false',
    ...(files.modulePaths.length ? [`--modulepath=${files.modulePaths.join(':')}`] : []),
    ...(files.hieraConfig ? [`--hiera_config=${files.hieraConfig}`] : []),
    ...extraArguments,
    files.manifest,
  ];
  return `${p.prevent_sudo ? '' : 'sudo -n '}env ${env} ${quote(puppet)} ${argv.map(quote).join(' ')}`;
}

/** Applies the manifest in the guest; `signal` (the build's interrupt or the provisioner's timeout) kills puppet there. */
export async function runPuppetMasterless(
  ctx: ProvisionerContext,
  p: PuppetMasterlessProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  await withGuestStaging(
    ctx,
    'kiln-puppet-masterless',
    { directory: p.staging_directory, clean: p.clean_staging_directory },
    signal,
    async (ssh, staging) => {
      const manifests = path.posix.join(staging, 'manifests');
      await ssh.run(`mkdir -p ${quote(manifests)}`, signal);
      let manifest = manifests;
      if (statSync(p.manifest_file).isDirectory()) await ssh.upload(`${p.manifest_file}/`, manifests, signal);
      else
        await ssh.uploadFile(
          p.manifest_file,
          (manifest = path.posix.join(manifests, path.basename(p.manifest_file))),
          undefined,
          signal,
        );
      const modulePaths: string[] = [];
      for (const [i, local] of p.module_paths.entries()) {
        const remote = path.posix.join(staging, `modules-${i}`);
        await ssh.upload(`${local}/`, remote, signal);
        modulePaths.push(remote);
      }
      let hieraConfig: string | undefined;
      if (p.hiera_config_path) {
        // The whole directory, so a hiera.yaml's relative datadir is there too.
        const remote = path.posix.join(staging, 'hiera');
        await ssh.upload(`${path.dirname(p.hiera_config_path)}/`, remote, signal);
        hieraConfig = path.posix.join(remote, path.basename(p.hiera_config_path));
      }

      const values = { build: ctx.buildValues() };
      const facts = { kiln_build_name: ctx.build.name, ...interpolateTree(p.facter, values) };
      // --record / --offline: package and file resources that fetch go through kiln's package proxy.
      const proxy = guestProxyFor(ctx.options.airgap, String(values.build.http_ip ?? ''));
      const bypass = new ProxyBypassWatch(proxy?.url);
      const command = puppetCommand(
        p,
        { manifest, modulePaths, hieraConfig },
        facts,
        interpolateTree(p.extra_arguments, values).map(String),
        guestProxyEnv(proxy),
      );
      ctx.log(`${label}: ${command}`, 'debug');
      const errors: string[] = [];
      // Puppet often prints an error twice (as it happens, and in its summary): keep each once.
      const output = streamedOutput(ctx, label, (line) => {
        bypass.observe(line);
        if (line.startsWith('Error: ') && !errors.includes(line)) errors.push(line);
      });
      const r = await ssh
        .exec(`cd ${quote(staging)} && ${command}`, { stdout: output.stdout, stderr: output.stderr, signal })
        .finally(output.flush);
      const exit = puppetExit(r.exitCode);
      if (r.disconnected) throw new ProvisionerError(`${label}: the SSH connection was lost while puppet apply ran`);
      if (!exit.ok) {
        const why = errors.length
          ? `:\n${errors
              .slice(-10)
              .map((l) => `  ${l}`)
              .join('\n')}`
          : lastOutput(output.recent());
        throw new ProvisionerError(
          `${label}: puppet apply exited with ${r.exitCode ?? `signal ${r.signal}`} (${exit.meaning})${why}${bypass.hint()}`,
        );
      }
      const around = bypass.failure();
      if (around) throw new ProvisionerError(`${label}: puppet apply succeeded, but ${around}`);
      ctx.log(`${label}: puppet apply exited with ${r.exitCode}: ${exit.meaning}`);
    },
  );
}
