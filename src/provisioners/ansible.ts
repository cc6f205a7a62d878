/**
 * The ansible provisioner: ansible-playbook runs on the host against the build VM, over its own SSH
 * connection (OpenSSH, through the forwarded port) with the build's key, and checks the guest's host
 * key against the one kiln verified, written into a private known_hosts file. Host key checking is
 * never turned off.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import ssh2 from 'ssh2';
import { parse as parseYaml } from 'yaml';
import type { ProvisionerContext } from './context.js';
import { need } from '../util/need.js';
import { fingerprintOf } from '../communicator/keys.js';
import { interpolateTree } from '../template/interpolate.js';
import type { AnsibleProvisioner } from '../template/provisioner-kinds/ansible.js';
import {
  ansibleArgv,
  ansibleEnv,
  inventoryYaml,
  knownHostsLine,
  publicKeyFromBlob,
  type AnsibleRunPaths,
} from './ansible-inventory.js';
import { AnsibleOutput, ansibleExitMeaning } from './ansible-output.js';
import { lastOutput, streamedOutput } from './streamed-output.js';
import { ProvisionerError } from './shell.js';
import { runInOwnProcessGroup } from './host-process.js';
import { ProxyBypassWatch } from './proxy-bypass.js';
import { guestProxyFor } from './guest-proxy.js';

/**
 * The guest's host key as an OpenSSH public key line. kiln gave a cloud-init guest its host key; for
 * other guests, the key whose fingerprint kiln's own connection verified (host_key_fingerprint, or the
 * first one seen with trust_on_first_use) is read from a fresh handshake that never logs in.
 */
export async function verifiedHostPublicKey(ctx: ProvisionerContext): Promise<string> {
  if (ctx.state.hostKey) return ctx.state.hostKey.publicKey;
  const target = need(ctx.state, 'sshTarget');
  const verified = ctx.state.ssh?.hostKey || target.hostKeyFingerprint;
  if (!verified)
    throw new ProvisionerError("kiln has not verified the guest's SSH host key, so Ansible could not check it");
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let found: string | undefined;
    const done = () => {
      clearTimeout(timer);
      client.end();
      if (found) resolve(found);
      else
        reject(
          new ProvisionerError(
            `the guest no longer shows the host key kiln verified (${verified}); Ansible would not connect`,
          ),
        );
    };
    const timer = setTimeout(done, 30_000);
    client.on('error', done);
    client.on('ready', done);
    client.connect({
      host: target.host,
      port: target.port,
      username: target.username,
      readyTimeout: 30_000,
      hostVerifier: (key: Buffer) => {
        if (fingerprintOf(key) === verified) found = publicKeyFromBlob(key);
        return false; // the key is all kiln wanted: end the handshake here
      },
    });
  });
}

interface RunFiles {
  work: string;
  inventory: string;
  extraVars: string;
  paths: AnsibleRunPaths;
}

/** Writes the key, known_hosts, inventory and extra vars ansible-playbook reads; all private (0600, in the 0700 work dir). */
async function writeRunFiles(ctx: ProvisionerContext, p: AnsibleProvisioner): Promise<RunFiles> {
  const target = need(ctx.state, 'sshTarget');
  const work = mkdtempSync(path.join(ctx.state.workDir, 'ansible-'));
  const privateKeyFile = path.join(work, 'id_build');
  writeFileSync(privateKeyFile, need(ctx.state, 'buildKey').privateKey, { mode: 0o600 });
  const knownHostsFile = path.join(work, 'known_hosts');
  writeFileSync(knownHostsFile, knownHostsLine(target.host, target.port, await verifiedHostPublicKey(ctx)), {
    mode: 0o600,
  });
  // In inventory_directory, beside the user's group_vars/ and host_vars/; a unique name, since
  // parallel builds may share that directory.
  const inventory = p.inventory_directory
    ? path.join(p.inventory_directory, `kiln-inventory-${ctx.build.name}-${randomBytes(4).toString('hex')}.yml`)
    : path.join(work, 'inventory.yml');
  writeFileSync(
    inventory,
    inventoryYaml({
      hostAlias: p.host_alias,
      host: target.host,
      port: target.port,
      user: p.user ?? target.username,
      groups: p.groups,
      privateKeyFile,
      knownHostsFile,
    }),
    { mode: 0o600 },
  );
  const extraVars = path.join(work, 'extra-vars.json');
  const vars = { kiln_build_name: ctx.build.name, ...interpolateTree(p.extra_vars, { build: ctx.buildValues() }) };
  writeFileSync(extraVars, JSON.stringify(vars), { mode: 0o600 });
  const paths: AnsibleRunPaths = {
    knownHostsFile,
    controlPath: path.join(work, 'cp'),
    localTemp: path.join(work, 'tmp'),
  };
  mkdirSync(paths.controlPath, { mode: 0o700 });
  mkdirSync(paths.localTemp, { mode: 0o700 });
  return { work, inventory, extraVars, paths };
}

/**
 * What an ansible-galaxy requirements file asks for: the old format is a list of roles, the new one a
 * map with "roles" and/or "collections" (each installed by its own ansible-galaxy command).
 */
export function galaxySections(file: string): ('role' | 'collection')[] {
  const requirements = parseYaml(readFileSync(file, 'utf8')) as unknown;
  if (Array.isArray(requirements)) return ['role'];
  if (!requirements || typeof requirements !== 'object') return [];
  return [
    ...('roles' in requirements ? ['role' as const] : []),
    ...('collections' in requirements ? ['collection' as const] : []),
  ];
}

/** A program of Ansible's beside `command` (a virtualenv's ansible-galaxy next to its ansible-playbook). */
export function sibling(command: string, name: string): string {
  return command.includes('/') ? path.join(path.dirname(command), name) : name;
}

function notInstalled(label: string, command: string): ProvisionerError {
  return new ProvisionerError(`${label}: ${command} is not installed on this machine`, {
    fix: `install Debian's ansible-core package (apt-get install ansible-core), or set "command" to the path of ansible-playbook`,
  });
}

/**
 * Runs one of Ansible's programs with its output streamed; resolves with its exit code. Its workers and
 * ssh clients go with it when it is stopped (host-process.ts).
 */
async function runStreamed(
  ctx: ProvisionerContext,
  label: string,
  signal: AbortSignal,
  file: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
  observe?: (line: string) => void,
) {
  const output = streamedOutput(ctx, label, observe);
  const r = await runInOwnProcessGroup(file, args, { env, cwd, signal, stdout: output.stdout, stderr: output.stderr });
  output.flush();
  signal.throwIfAborted();
  if (r.code === 'ENOENT') throw notInstalled(label, file);
  return { exitCode: r.exitCode, signal: r.signal, recent: output.recent() };
}

/**
 * Installs galaxy_file's roles and collections into the run's private directory (nothing lands in
 * ~/.ansible). Relative paths in the file are relative to the file, as for ansible-galaxy run beside it.
 */
async function installGalaxyRequirements(
  ctx: ProvisionerContext,
  p: AnsibleProvisioner,
  label: string,
  signal: AbortSignal,
  files: RunFiles,
  env: Record<string, string>,
): Promise<void> {
  const file = p.galaxy_file!;
  const galaxy = sibling(p.command, 'ansible-galaxy');
  for (const section of galaxySections(file)) {
    const into = path.join(files.work, section === 'role' ? 'roles' : 'collections');
    const r = await runStreamed(
      ctx,
      label,
      signal,
      galaxy,
      [section, 'install', '-r', file, '-p', into],
      env,
      path.dirname(file),
    );
    if (r.exitCode !== 0)
      throw new ProvisionerError(
        `${label}: ansible-galaxy ${section} install -r ${file} exited with ${r.exitCode ?? r.signal}${lastOutput(r.recent)}`,
      );
    if (section === 'role') files.paths.galaxyRoles = into;
    else files.paths.galaxyCollections = into;
  }
}

/** Ends the ssh master connections Ansible left (ControlPersist), so no ssh process outlives the provisioner. */
export async function stopControlMasters(controlPath: string): Promise<void> {
  if (!existsSync(controlPath)) return;
  await Promise.all(
    readdirSync(controlPath).map((socket) =>
      execa('ssh', ['-o', `ControlPath=${path.join(controlPath, socket)}`, '-O', 'exit', 'kiln-ansible'], {
        reject: false,
        stdin: 'ignore',
        timeout: 10_000,
      }),
    ),
  );
}

/** Runs the playbook; `signal` (the build's interrupt or the provisioner's timeout) stops Ansible and its ssh clients. */
export async function runAnsible(
  ctx: ProvisionerContext,
  p: AnsibleProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  const files = await writeRunFiles(ctx, p);
  try {
    if (p.galaxy_file) await installGalaxyRequirements(ctx, p, label, signal, files, ansibleEnv(p, files.paths));
    const env = ansibleEnv(p, files.paths);
    const argv = ansibleArgv(
      { ...p, extra_arguments: interpolateTree(p.extra_arguments, { build: ctx.buildValues() }).map(String) },
      files,
    );
    ctx.log(`${label}: ${p.command} ${argv.join(' ')}`, 'debug');
    const parsed = new AnsibleOutput();
    // --record / --offline: the modules run in the guest, whose SSH login and become (sudo) get the
    // build proxy from the guest's system settings (guest-proxy.ts); a fetch around it is named here.
    const bypass = new ProxyBypassWatch(guestProxyFor(ctx.options.airgap, undefined)?.url);
    const r = await runStreamed(ctx, label, signal, p.command, argv, env, ctx.template.dir, (line) => {
      bypass.observe(line);
      parsed.observe(line);
    });
    if (r.exitCode !== 0) {
      const status =
        r.exitCode === undefined
          ? `was stopped by ${r.signal}`
          : `exited with ${r.exitCode} (${ansibleExitMeaning(r.exitCode)})`;
      const why = parsed.explain();
      throw new ProvisionerError(
        `${label}: ansible-playbook ${status}${why ? `:\n${why}` : lastOutput(r.recent)}${bypass.hint()}`,
      );
    }
    const around = bypass.failure();
    if (around) throw new ProvisionerError(`${label}: ansible-playbook succeeded, but ${around}`);
  } finally {
    await stopControlMasters(files.paths.controlPath);
    rmSync(files.extraVars, { force: true });
    if (p.keep_inventory_file) {
      ctx.log(
        `${label}: inventory kept: ${files.inventory} (the key and known_hosts it names stay in ${files.work} until the build ends)`,
      );
    } else {
      rmSync(files.work, { recursive: true, force: true });
      rmSync(files.inventory, { force: true });
    }
  }
}
