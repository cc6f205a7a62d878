/**
 * The ansible-local provisioner: the playbook's directory (roles, group_vars, templates) is uploaded
 * into a staging directory in the guest, and ansible-playbook runs there with the local connection.
 * The guest must have Ansible (an earlier shell provisioner can install Debian's ansible-core).
 */
import path from 'node:path';
import type { ProvisionerContext } from './context.js';
import { interpolateTree } from '../template/interpolate.js';
import type { AnsibleLocalProvisioner } from '../template/provisioner-kinds/ansible-local.js';
import { collectionsSearchPath, localInventoryYaml, rolesSearchPath } from './ansible-inventory.js';
import { AnsibleOutput, ansibleExitMeaning } from './ansible-output.js';
import { galaxySections, sibling } from './ansible.js';
import { shellEnv } from './context.js';
import { withGuestStaging } from './guest-staging.js';
import { shellQuote as quote } from '../communicator/remote-command.js';
import { ProvisionerError } from './shell.js';
import { lastOutput, streamedOutput } from './streamed-output.js';
import type { SshSession } from '../communicator/ssh.js';
import { guestProxyEnv, guestProxyFor } from './guest-proxy.js';
import { ProxyBypassWatch } from './proxy-bypass.js';

/** The path of `file` in the guest: inside the uploaded directory, or uploaded beside it. */
async function placeInStaging(
  ssh: SshSession,
  file: string,
  uploadedDir: string,
  staging: string,
  signal: AbortSignal,
): Promise<string> {
  const inside = path.relative(uploadedDir, file);
  if (!inside.startsWith('..') && !path.isAbsolute(inside)) return path.posix.join(staging, ...inside.split(path.sep));
  const remote = path.posix.join(staging, path.basename(file));
  await ssh.uploadFile(file, remote, undefined, signal);
  return remote;
}

function notInstalled(command: string, label: string): ProvisionerError {
  return new ProvisionerError(`${label}: ${command} is not installed in the guest`, {
    fix: `install it first, e.g. a shell provisioner running "sudo apt-get install -y ansible-core" (after apt-get update)`,
  });
}

/** Runs the playbook in the guest; `signal` (the build's interrupt or the provisioner's timeout) kills it there. */
export async function runAnsibleLocal(
  ctx: ProvisionerContext,
  p: AnsibleLocalProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  await withGuestStaging(
    ctx,
    'kiln-ansible-local',
    { directory: p.staging_directory, clean: p.clean_staging_directory },
    signal,
    async (ssh, staging) => {
      const playbookDir = p.playbook_dir ?? path.dirname(p.playbook_file);
      const uploaded = await ssh.upload(`${playbookDir}/`, staging, signal);
      ctx.log(`${label}: uploaded ${playbookDir} -> ${staging} (${uploaded} files)`, 'debug');
      const playbook = await placeInStaging(ssh, p.playbook_file, playbookDir, staging, signal);
      const roles = path.posix.join(staging, 'roles');
      const collections = path.posix.join(staging, 'collections');
      await ssh.run(`mkdir -p ${quote(roles)}`, signal);
      for (const role of p.role_paths) await ssh.upload(role, roles, signal);

      const proxy = guestProxyFor(ctx.options.airgap, String(ctx.buildValues().http_ip ?? ''));
      const bypass = new ProxyBypassWatch(proxy?.url);
      const env = shellEnv({
        ANSIBLE_NOCOLOR: '1',
        ANSIBLE_FORCE_COLOR: '0',
        PYTHONUNBUFFERED: '1',
        ANSIBLE_RETRY_FILES_ENABLED: 'False',
        ANSIBLE_PYTHON_INTERPRETER: 'auto_silent',
        ANSIBLE_ROLES_PATH: rolesSearchPath(roles),
        ANSIBLE_COLLECTIONS_PATH: collectionsSearchPath(collections),
        // --record / --offline: modules that fetch (get_url, pip, apt) go through kiln's package proxy; become keeps it (sudoers env_keep).
        ...guestProxyEnv(proxy),
      });
      const run = async (command: string, observe?: (line: string) => void) => {
        const output = streamedOutput(ctx, label, (line) => {
          bypass.observe(line);
          observe?.(line);
        });
        const r = await ssh
          .exec(`cd ${quote(staging)} && env ${env} ${command}`, {
            stdout: output.stdout,
            stderr: output.stderr,
            signal,
          })
          .finally(output.flush);
        return { ...r, recent: output.recent() };
      };

      if (p.galaxy_file) {
        const requirements = await placeInStaging(ssh, p.galaxy_file, playbookDir, staging, signal);
        const galaxy = sibling(p.command, 'ansible-galaxy');
        for (const section of galaxySections(p.galaxy_file)) {
          const r = await run(
            `${quote(galaxy)} ${section} install -r ${quote(requirements)} -p ${quote(section === 'role' ? roles : collections)}`,
          );
          if (r.exitCode === 127) throw notInstalled(galaxy, label);
          if (r.exitCode !== 0)
            throw new ProvisionerError(
              `${label}: ansible-galaxy ${section} install exited with ${r.exitCode ?? r.signal}${lastOutput(r.recent)}${bypass.hint()}`,
            );
        }
      }

      const inventory = path.posix.join(staging, 'kiln-inventory.yml');
      await ssh.uploadContent(localInventoryYaml(p.inventory_groups), inventory, undefined, signal);
      // Private, and removed even when the staging directory is kept: sensitive values may be in it.
      const extraVars = path.posix.join(staging, 'kiln-extra-vars.json');
      const vars = { kiln_build_name: ctx.build.name, ...interpolateTree(p.extra_vars, { build: ctx.buildValues() }) };
      await ssh.uploadContent(JSON.stringify(vars), extraVars, 0o600, signal);
      try {
        const extra = interpolateTree(p.extra_arguments, { build: ctx.buildValues() }).map(String);
        const parsed = new AnsibleOutput();
        const argv = [
          '-c',
          'local',
          '-i',
          inventory,
          '-e',
          `@${extraVars}`,
          ...(p.become ? ['--become'] : []),
          ...extra,
          playbook,
        ];
        const r = await run(`${quote(p.command)} ${argv.map(quote).join(' ')}`, (line) => parsed.observe(line));
        if (r.exitCode === 127) throw notInstalled(p.command, label);
        if (r.exitCode !== 0) {
          const status =
            r.exitCode === null
              ? `was stopped (${r.disconnected ? 'the SSH connection was lost' : `signal ${r.signal}`})`
              : `exited with ${r.exitCode} (${ansibleExitMeaning(r.exitCode)})`;
          const why = parsed.explain();
          throw new ProvisionerError(
            `${label}: ansible-playbook ${status}${why ? `:\n${why}` : lastOutput(r.recent)}${bypass.hint()}`,
          );
        }
        const around = bypass.failure();
        if (around) throw new ProvisionerError(`${label}: ansible-playbook succeeded, but ${around}`);
      } finally {
        if (!ctx.signal.aborted && ssh.connected)
          await ssh.exec(`rm -f ${quote(extraVars)}`, { timeoutMs: 10_000 }).catch(() => undefined);
      }
    },
  );
}
