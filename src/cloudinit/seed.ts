/**
 * Renders the NoCloud seed: kiln's own #cloud-config (the build user with the build's key, the host key
 * kiln will verify) merged with the template's user_data, and meta-data with a fresh instance-id so
 * cloud-init treats every build (and every boot of a cached layer) as a new instance.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import YAML from 'yaml';
import { guestScript, guestScriptVars } from '../util/guest-scripts.js';

export interface SeedInput {
  hostname: string;
  username: string;
  authorizedKey: string;
  password?: string;
  hostKey: { privateKey: string; publicKey: string };
  userData: Record<string, unknown> | string;
  metaData: Record<string, unknown>;
  /**
   * The disk already ran cloud-init with a host key kiln injected (it boots a cached layer of an
   * earlier build): overwrite those keys at first boot, before cloud-init deletes them.
   */
  wipeOldHostKeys?: boolean;
  /**
   * --record / --offline: the script that makes kiln's package proxy the guest's system proxy. It runs
   * as a bootcmd (the init stage, on every boot: it is idempotent), so cloud-init's own `packages:` and
   * `package_update` in the final stage, and the template's bootcmd after it, fetch through the proxy.
   */
  guestProxyScript?: string;
  /**
   * kiln grew the root partition to the disk's size on the host (src/qemu/gpt.ts): cloud-init's
   * growpart has nothing to do, and its check alone costs seconds of the boot under TCG.
   */
  rootPartitionGrown?: boolean;
  /**
   * cloud_init.later_stages: 'auto' skips cloud-init's config and final stages when the seed gives them
   * nothing to do; 'always' leaves them to run.
   */
  laterStages?: 'auto' | 'always';
  /**
   * kiln logs in as `username` over SSH: its systemd user manager is started as the init stage ends
   * (src/guest-scripts/start-user-manager.sh) rather than inside the first login.
   */
  startUserManager?: boolean;
}

export interface Seed {
  userData: string;
  metaData: string;
  instanceId: string;
  /** Whether the seed skips cloud-init's config and final stages, and if not, why they run. */
  laterStages: { skipped: true } | { skipped: false; because: string };
}

export class SeedError extends Error {}

function parseUserData(userData: Record<string, unknown> | string): Record<string, unknown> {
  if (typeof userData !== 'string') return userData;
  if (!userData.trim()) return {};
  if (!userData.trimStart().startsWith('#cloud-config')) {
    throw new SeedError(
      'cloud_init.user_data must be a #cloud-config document (a map, or a string starting with "#cloud-config")',
    );
  }
  const parsed = YAML.parse(userData, { version: '1.1' }) as unknown;
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    throw new SeedError('cloud_init.user_data must be a map of cloud-config keys');
  return parsed as Record<string, unknown>;
}

/** Whether the template's user-data configures cloud-init's growpart itself (kiln then leaves the partitions to it). */
export function userDataConfiguresGrowpart(userData: Record<string, unknown> | string): boolean {
  try {
    return 'growpart' in parseUserData(userData);
  } catch {
    // Not kiln's to judge here: rendering the seed reports it.
    return true;
  }
}

/**
 * Top-level cloud-config keys whose modules run in cloud-init's init stage (cloud_init_modules in every
 * upstream cloud.cfg: bootcmd, write-files, growpart, resizefs, disk_setup, mounts, set_hostname,
 * update_hostname, update_etc_hosts, users-groups, ssh, seed_random), plus keys that only quieten the
 * final stage's console output and merge directives. Any other key may be work for the config or final
 * stage (runcmd, packages, apt, ntp, timezone, chpasswd, ssh_pwauth...): those stages then run.
 */
const INIT_STAGE_KEYS = new Set([
  'bootcmd',
  'write_files',
  'growpart',
  'resize_rootfs',
  'disk_setup',
  'fs_setup',
  'device_aliases',
  'mounts',
  'mount_default_fields',
  'swap',
  'hostname',
  'fqdn',
  'prefer_fqdn_over_hostname',
  'preserve_hostname',
  'create_hostname_file',
  'manage_etc_hosts',
  'users',
  'groups',
  'user',
  'disable_root',
  'disable_root_opts',
  'ssh_authorized_keys',
  'ssh_keys',
  'ssh_deletekeys',
  'ssh_genkeytypes',
  'ssh_quiet_keygen',
  'ssh_publish_hostkeys',
  'allow_public_ssh_keys',
  'random_seed',
  // Read by the final stage's keys-to-console and ssh-authkey-fingerprints, which only print.
  'ssh',
  'no_ssh_fingerprints',
  'ssh_fp_console_blacklist',
  'ssh_key_console_blacklist',
  'merge_how',
  'merge_type',
]);

/**
 * The first key of a #cloud-config that gives cloud-init's config or final stage work (described for a
 * log line), or undefined when the init stage does all it asks.
 */
export function laterStageWork(config: Record<string, unknown>): string | undefined {
  for (const [k, v] of Object.entries(config)) {
    if (!INIT_STAGE_KEYS.has(k)) return k;
    // write-files-deferred writes these in the final stage.
    if (k === 'write_files' && Array.isArray(v) && v.some((f) => (f as { defer?: unknown } | null)?.defer === true))
      return 'write_files with defer: true';
  }
  return undefined;
}

/**
 * The bootcmd that skips the config and final stages (src/guest-scripts/cloud-init-skip-later-stages.sh).
 * `root` prefixes every guest path (tests run it on a tree of their own); the guest's is ''.
 */
export function skipLaterStagesScript(root = ''): string {
  return guestScriptVars({ R: root }) + guestScript('cloud-init-skip-later-stages');
}

/**
 * The bootcmd that starts the build user's systemd user manager once the init stage has made the user.
 * `root` prefixes the guest path it checks (tests run it on a tree of their own); the guest's is ''.
 */
export function startUserManagerScript(username: string, root = ''): string {
  return guestScriptVars({ R: root, U: username }) + guestScript('start-user-manager');
}

/** Deep merge where lists concatenate (users, runcmd, packages...) and the template's scalars win. */
export function mergeCloudConfig(
  base: Record<string, unknown>,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const b = out[k];
    if (Array.isArray(b) && Array.isArray(v)) out[k] = [...b, ...v];
    else if (b && v && typeof b === 'object' && typeof v === 'object' && !Array.isArray(b) && !Array.isArray(v)) {
      out[k] = mergeCloudConfig(b as Record<string, unknown>, v as Record<string, unknown>);
    } else out[k] = v;
  }
  return out;
}

export function renderSeed(input: SeedInput): Seed {
  const user: Record<string, unknown> = {
    name: input.username,
    sudo: 'ALL=(ALL) NOPASSWD:ALL',
    shell: '/bin/bash',
    lock_passwd: input.password === undefined,
    ssh_authorized_keys: [input.authorizedKey],
  };
  if (input.password !== undefined) user.plain_text_passwd = input.password;
  const kilnConfig: Record<string, unknown> = {
    users: ['default', user],
    // The host key kiln verifies; generating others would only cost boot time (2-5 s under TCG).
    ssh_deletekeys: true,
    ssh_keys: { ed25519_private: input.hostKey.privateKey, ed25519_public: input.hostKey.publicKey },
    ssh_genkeytypes: [],
    // kiln knows the host key: cloud-init need not print the host keys and fingerprints on the console
    // (keys-to-console ran 2.8 s, ssh-authkey-fingerprints 0.2 s of the final stage under TCG).
    ssh: { emit_keys_to_console: false },
    no_ssh_fingerprints: true,
  };
  // The filesystem is still cloud-init's to grow (resizefs); only the partition table was written.
  if (input.rootPartitionGrown) kilnConfig.growpart = { mode: 'off' };
  // Password logins need sshd to allow them. Without a password kiln logs in with its key and leaves
  // sshd's setting as the image has it: `ssh_pwauth: false` made cloud-init's set-passwords module
  // restart sshd after SSH was up (2.5 s; a login attempt during the restart is refused).
  if (input.password !== undefined) kilnConfig.ssh_pwauth = true;
  // kiln's own bootcmds, in this order, before the template's. A list item runs as an argv, not
  // through a shell: each script is one argument of sh -c.
  const bootcmd: unknown[] = [];
  if (input.wipeOldHostKeys)
    // A disk that already ran cloud-init (a cached layer of an earlier build) holds that build's
    // injected host keys; cloud-init deletes them before writing this one, which leaves their bytes
    // on the disk. bootcmd runs before the ssh module: overwrite them once per instance first.
    // A fresh base holds no key of kiln's: no such bootcmd (a shell, cloud-init-per and shred: 1 s under TCG).
    bootcmd.push(
      `cloud-init-per instance kiln-wipe-host-keys sh -c 'for f in /etc/ssh/ssh_host_*; do [ -f "$f" ] && shred -n1 -z "$f"; done; true'`,
    );
  if (input.guestProxyScript) bootcmd.push(['sh', '-c', input.guestProxyScript]);
  if (input.startUserManager) bootcmd.push(['sh', '-c', startUserManagerScript(input.username)]);
  if (bootcmd.length) kilnConfig.bootcmd = bootcmd;
  let merged = mergeCloudConfig(kilnConfig, parseUserData(input.userData));
  const work = input.laterStages === 'always' ? 'cloud_init.later_stages: always' : laterStageWork(merged);
  if (work === undefined)
    merged = mergeCloudConfig(merged, {
      bootcmd: [['sh', '-c', skipLaterStagesScript()]],
    });
  const instanceId = `kiln-${randomBytes(8).toString('hex')}`;
  const meta = { 'instance-id': instanceId, 'local-hostname': input.hostname, ...input.metaData };
  return {
    userData: `#cloud-config\n${YAML.stringify(merged, { version: '1.1', lineWidth: 0 })}`,
    metaData: YAML.stringify(meta, { version: '1.1' }),
    instanceId,
    laterStages: work === undefined ? { skipped: true } : { skipped: false, because: work },
  };
}

/** Writes a NoCloud "cidata" ISO holding the seed. */
export async function writeSeedIso(seed: Seed, workDir: string, isoPath: string): Promise<void> {
  const dir = path.join(workDir, 'cidata');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(path.join(dir, 'user-data'), seed.userData, { mode: 0o600 });
  writeFileSync(path.join(dir, 'meta-data'), seed.metaData, { mode: 0o600 });
  const r = await execa(
    ...diesWithKiln('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-R', '-o', isoPath, dir]),
    {
      reject: false,
      all: true,
    },
  );
  if (r.failed)
    throw new SeedError(
      `making the cidata ISO failed: ${String(r.all ?? r.message).trim()} (is xorriso installed? run make setup)`,
    );
  // The ISO holds the host private key kiln injects (and any password): only kiln's user reads it.
  chmodSync(isoPath, 0o600);
}
