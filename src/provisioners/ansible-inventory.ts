/**
 * What the ansible provisioner hands ansible-playbook: an inventory naming the build VM, a known_hosts
 * file holding the host key kiln verified, the command line and the environment. Pure functions, so
 * the security-relevant parts (host key checking stays on, secrets stay out of argv) are unit-tested.
 */
import { stringify } from 'yaml';
import type { AnsibleProvisioner } from '../template/provisioner-kinds/ansible.js';

export interface AnsibleTarget {
  /** The VM's name in the inventory. */
  hostAlias: string;
  host: string;
  port: number;
  user: string;
  groups: string[];
  privateKeyFile: string;
  knownHostsFile: string;
}

/** A POSIX-shell word: OpenSSH options in ansible_ssh_common_args are split with shlex by Ansible. */
const shellWord = (s: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);

/** One known_hosts line in OpenSSH's format: a non-standard port is written `[host]:port`. */
export function knownHostsLine(host: string, port: number, publicKey: string): string {
  const [type, blob] = publicKey.trim().split(/\s+/);
  if (!type || !blob) throw new Error(`not an OpenSSH public key: ${publicKey.slice(0, 40)}`);
  return `${port === 22 ? host : `[${host}]:${port}`} ${type} ${blob}\n`;
}

/** The OpenSSH public key line (`<type> <base64>`) of a host key blob as the SSH handshake carries it. */
export function publicKeyFromBlob(blob: Buffer): string {
  const length = blob.readUInt32BE(0);
  return `${blob.subarray(4, 4 + length).toString('latin1')} ${blob.toString('base64')}`;
}

/**
 * Options for every ssh Ansible runs: only kiln's known_hosts counts (not ~/.ssh/known_hosts nor the
 * system's), an unknown or changed key is refused rather than prompted for or added, and only the
 * build's key is offered (not whatever an ssh-agent holds).
 */
export function sshCommonArgs(knownHostsFile: string): string {
  return [
    `-o UserKnownHostsFile=${shellWord(knownHostsFile)}`,
    '-o GlobalKnownHostsFile=/dev/null',
    '-o StrictHostKeyChecking=yes',
    '-o UpdateHostKeys=no',
    '-o IdentitiesOnly=yes',
    '-o IdentityAgent=none',
  ].join(' ');
}

/** A YAML inventory: the VM under its alias with its connection settings, and in each of `groups`. */
export function inventoryYaml(t: AnsibleTarget): string {
  const host = {
    ansible_host: t.host,
    ansible_port: t.port,
    ansible_user: t.user,
    ansible_ssh_private_key_file: t.privateKeyFile,
    ansible_ssh_common_args: sshCommonArgs(t.knownHostsFile),
  };
  const children = Object.fromEntries(t.groups.map((g) => [g, { hosts: { [t.hostAlias]: null } }]));
  return stringify({ all: { hosts: { [t.hostAlias]: host }, ...(t.groups.length ? { children } : {}) } });
}

/** The inventory of ansible-local: the guest itself, as 127.0.0.1 over the local connection, in each of `groups`. */
export function localInventoryYaml(groups: string[]): string {
  const host = '127.0.0.1';
  const children = Object.fromEntries(groups.map((g) => [g, { hosts: { [host]: null } }]));
  return stringify({
    all: { hosts: { [host]: { ansible_connection: 'local' } }, ...(groups.length ? { children } : {}) },
  });
}

/**
 * Search paths with Ansible's own defaults after them: setting ANSIBLE_ROLES_PATH or
 * ANSIBLE_COLLECTIONS_PATH replaces the defaults, and roles or collections installed there must still be found.
 */
export function rolesSearchPath(...dirs: (string | undefined)[]): string {
  return [
    ...dirs.filter((d): d is string => Boolean(d)),
    '~/.ansible/roles',
    '/usr/share/ansible/roles',
    '/etc/ansible/roles',
  ].join(':');
}
export function collectionsSearchPath(...dirs: (string | undefined)[]): string {
  return [
    ...dirs.filter((d): d is string => Boolean(d)),
    '~/.ansible/collections',
    '/usr/share/ansible/collections',
  ].join(':');
}

/**
 * ansible-playbook's arguments. Extra vars go through a file (`-e @file`), so sensitive values never
 * appear in a process listing; the user's extra_arguments come last but one, as with Packer.
 */
export function ansibleArgv(p: AnsibleProvisioner, files: { inventory: string; extraVars: string }): string[] {
  return [
    '-i',
    files.inventory,
    '-e',
    `@${files.extraVars}`,
    ...(p.become ? ['--become'] : []),
    ...p.extra_arguments,
    p.playbook_file,
  ];
}

export interface AnsibleRunPaths {
  knownHostsFile: string;
  /** Private directory for ssh's ControlMaster sockets (stopped by kiln after the run). */
  controlPath: string;
  /** Ansible's local temporary files, instead of ~/.ansible/tmp. */
  localTemp: string;
  /** Where galaxy_file's roles and collections were installed, searched before roles_path / collections_path. */
  galaxyRoles?: string;
  galaxyCollections?: string;
}

/** OpenSSH options Ansible uses by default (ControlPersist keeps one connection for all tasks). */
const defaultSshArgs = '-C -o ControlMaster=auto -o ControlPersist=60s';

/**
 * ansible-playbook's environment: kiln's defaults (plain output, unbuffered so lines stream as they
 * happen, pipelining for fewer SSH round trips), then the user's ansible_env_vars, then host key
 * checking, which nothing may turn off: ANSIBLE_HOST_KEY_CHECKING, and kiln's known_hosts options
 * first in ANSIBLE_SSH_ARGS, the start of every ssh command line Ansible runs (OpenSSH keeps the first
 * value it reads for an option, so a later -o StrictHostKeyChecking=no has no effect).
 */
export function ansibleEnv(
  p: AnsibleProvisioner,
  paths: AnsibleRunPaths,
  inherited: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  const env: Record<string, string> = {
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_FORCE_COLOR: '0',
    PYTHONUNBUFFERED: '1',
    ANSIBLE_PIPELINING: 'True',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    ANSIBLE_PYTHON_INTERPRETER: 'auto_silent',
    ANSIBLE_SSH_CONTROL_PATH_DIR: paths.controlPath,
    ANSIBLE_LOCAL_TEMP: paths.localTemp,
  };
  if (paths.galaxyRoles || p.roles_path) env.ANSIBLE_ROLES_PATH = rolesSearchPath(paths.galaxyRoles, p.roles_path);
  if (paths.galaxyCollections || p.collections_path)
    env.ANSIBLE_COLLECTIONS_PATH = collectionsSearchPath(paths.galaxyCollections, p.collections_path);
  for (const [k, v] of Object.entries(p.ansible_env_vars)) env[k] = String(v);
  env.ANSIBLE_HOST_KEY_CHECKING = 'True';
  env.ANSIBLE_SSH_ARGS = `${sshCommonArgs(paths.knownHostsFile)} ${env.ANSIBLE_SSH_ARGS ?? inherited.ANSIBLE_SSH_ARGS ?? defaultSshArgs}`;
  return env;
}
