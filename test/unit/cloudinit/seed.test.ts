import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import {
  laterStageWork,
  mergeCloudConfig,
  renderSeed,
  userDataConfiguresGrowpart,
  type SeedInput,
} from '../../../src/cloudinit/seed.js';
import { generateKeyPair, fingerprintOf, publicKeyOf } from '../../../src/communicator/keys.js';

describe('cloud-init seed', () => {
  const build = generateKeyPair('build');
  const host = generateKeyPair('host');
  const seed = renderSeed({
    hostname: 'web',
    username: 'kiln',
    authorizedKey: build.publicKey,
    hostKey: host,
    userData: { packages: ['curl'], users: [{ name: 'alice' }], ssh_pwauth: true },
    metaData: { 'availability-zone': 'lab' },
  });
  const ud = YAML.parse(seed.userData, { version: '1.1' }) as Record<string, unknown>;
  /** A seed with nothing but kiln's own settings and `extra`. */
  const seedOf = (extra: Partial<SeedInput> = {}) =>
    renderSeed({
      hostname: 'h',
      username: 'u',
      authorizedKey: build.publicKey,
      hostKey: host,
      metaData: {},
      userData: {},
      ...extra,
    });
  /** The user-data of seedOf(extra), parsed. */
  const userDataOf = (extra: Partial<SeedInput> = {}) =>
    YAML.parse(seedOf(extra).userData, { version: '1.1' }) as Record<string, unknown>;

  it('starts with #cloud-config and authorizes the build key for the build user', () => {
    expect(seed.userData.startsWith('#cloud-config\n')).toBe(true);
    const users = ud.users as unknown[];
    expect(users[0]).toBe('default');
    expect(users[1]).toMatchObject({
      name: 'kiln',
      sudo: 'ALL=(ALL) NOPASSWD:ALL',
      lock_passwd: true,
      ssh_authorized_keys: [build.publicKey],
    });
    expect(users[2]).toEqual({ name: 'alice' });
  });
  it('injects the host key kiln will verify, and generates no others', () => {
    expect(ud.ssh_keys).toEqual({ ed25519_private: host.privateKey, ed25519_public: host.publicKey });
    expect(ud.ssh_genkeytypes).toEqual([]);
  });
  it("lets the template's scalars win and keeps its lists", () => {
    expect(ud.ssh_pwauth).toBe(true);
    expect(ud.packages).toEqual(['curl']);
  });
  it('gives each seed a fresh instance-id', () => {
    const meta = YAML.parse(seed.metaData) as Record<string, string>;
    expect(meta['instance-id']).toBe(seed.instanceId);
    expect(meta['local-hostname']).toBe('web');
    expect(meta['availability-zone']).toBe('lab');
    const again = renderSeed({
      hostname: 'web',
      username: 'kiln',
      authorizedKey: build.publicKey,
      hostKey: host,
      userData: {},
      metaData: {},
    });
    expect(again.instanceId).not.toBe(seed.instanceId);
  });
  it('accepts a #cloud-config string and rejects scripts', () => {
    const s = renderSeed({
      hostname: 'h',
      username: 'u',
      authorizedKey: build.publicKey,
      hostKey: host,
      userData: '#cloud-config\nruncmd: [[touch, /x]]\n',
      metaData: {},
    });
    expect(YAML.parse(s.userData).runcmd).toEqual([['touch', '/x']]);
    expect(() =>
      renderSeed({
        hostname: 'h',
        username: 'u',
        authorizedKey: build.publicKey,
        hostKey: host,
        userData: '#!/bin/sh\necho',
        metaData: {},
      }),
    ).toThrow(/#cloud-config/);
  });
  it('asks cloud-init for nothing kiln does not need on a fresh base: no bootcmd, no key printing, no sshd restart', () => {
    expect(ud.bootcmd).toBeUndefined();
    expect(userDataOf({ laterStages: 'always' }).bootcmd).toBeUndefined();
    expect(ud.ssh).toEqual({ emit_keys_to_console: false });
    expect(ud.no_ssh_fingerprints).toBe(true);
    const keyOnly = userDataOf();
    // ssh_pwauth makes set-passwords rewrite sshd's config and restart it after SSH is up
    expect(keyOnly).not.toHaveProperty('ssh_pwauth');
    expect(keyOnly).not.toHaveProperty('cloud_init_modules');
    expect(keyOnly).not.toHaveProperty('cloud_config_modules');
    expect(keyOnly).not.toHaveProperty('cloud_final_modules');
    const withPassword = userDataOf({ password: 'pw' });
    expect(withPassword.ssh_pwauth).toBe(true);
    expect((withPassword.users as unknown[])[1]).toMatchObject({ lock_passwd: false, plain_text_passwd: 'pw' });
  });
  it("a cached layer's disk gets the bootcmd that overwrites an earlier build's host keys; the template's own bootcmd and settings stay", () => {
    const layer = userDataOf({
      wipeOldHostKeys: true,
      laterStages: 'always',
      userData: { bootcmd: ['echo mine'], ssh: { emit_keys_to_console: true } },
    });
    const bootcmd = layer.bootcmd as string[];
    expect(bootcmd).toHaveLength(2);
    expect(bootcmd[0]).toMatch(/^cloud-init-per instance kiln-wipe-host-keys sh -c .*shred -n1 -z "\$f"/);
    expect(bootcmd[1]).toBe('echo mine');
    expect(layer.ssh).toEqual({ emit_keys_to_console: true });
  });
  it("--record/--offline: the guest proxy script runs as a bootcmd (before cloud-init's packages:), first, as one sh -c argument, whatever it quotes", () => {
    const script = "set -u\nprintf '%s\\n' 'http_proxy=http://10.0.2.100:3128' >> \"$R/etc/environment\"\n";
    const text = renderSeed({
      hostname: 'h',
      username: 'u',
      authorizedKey: build.publicKey,
      hostKey: host,
      metaData: {},
      guestProxyScript: script,
      userData: { bootcmd: ['echo mine'], packages: ['tree'], package_update: true },
    }).userData;
    const ud2 = YAML.parse(text, { version: '1.1' });
    expect(ud2.bootcmd).toEqual([['sh', '-c', script], 'echo mine']);
    expect(ud2.packages).toEqual(['tree']);
    // and none without it
    expect(userDataOf({ laterStages: 'always' }).bootcmd).toBeUndefined();
  });
  it("an SSH build starts its user's systemd manager from a bootcmd, after kiln's others and before the template's", () => {
    const bootcmd = userDataOf({
      username: 'builder',
      wipeOldHostKeys: true,
      startUserManager: true,
      laterStages: 'always',
      userData: { bootcmd: ['echo mine'] },
    }).bootcmd as unknown[];
    expect(bootcmd).toHaveLength(3);
    expect(bootcmd[0]).toMatch(/^cloud-init-per instance kiln-wipe-host-keys /);
    expect(bootcmd[1]).toEqual(['sh', '-c', expect.stringMatching(/^R=''\nU='builder'\n[^]*--unit=kiln-user-manager/)]);
    expect(bootcmd[2]).toBe('echo mine');
    // Its own bootcmd does not make the later stages run.
    expect(seedOf({ startUserManager: true, rootPartitionGrown: true }).laterStages).toEqual({ skipped: true });
  });
  it("skips cloud-init's config and final stages (a last bootcmd) when kiln's seed and the template's user_data are init-stage work only", () => {
    const skip = [
      'sh',
      '-c',
      expect.stringContaining('systemctl stop --no-block cloud-config.service cloud-final.service'),
    ];
    const alone = seedOf({
      rootPartitionGrown: true,
      userData: '#cloud-config\nhostname: web\nwrite_files: [{path: /etc/x, content: x}]\nbootcmd: [echo mine]\n',
    });
    expect(alone.laterStages).toEqual({ skipped: true });
    const parsed = YAML.parse(alone.userData, { version: '1.1' }) as Record<string, unknown>;
    expect(parsed.bootcmd).toEqual(['echo mine', skip]);
    // The script sets its root and is one sh -c argument: cloud-init quotes each item of a list.
    expect(((parsed.bootcmd as unknown[])[1] as string[])[2]).toMatch(/^R=''\n/);
    expect(userDataOf({ wipeOldHostKeys: true }).bootcmd).toEqual([expect.stringMatching(/^cloud-init-per /), skip]);
    // The template's work for the later stages, a password (set-passwords) or `always` keep them.
    for (const [userData, because] of [
      [{ runcmd: ['touch /x'] }, 'runcmd'],
      [{ packages: ['curl'] }, 'packages'],
      [{ apt: { proxy: 'http://p:3128' } }, 'apt'],
      [{ write_files: [{ path: '/x', content: 'x', defer: true }] }, 'write_files with defer: true'],
    ] as const) {
      const seed = seedOf({ userData });
      expect(seed.laterStages).toEqual({ skipped: false, because });
      expect(seed.userData).not.toContain('cloud-final.service');
    }
    expect(seedOf({ password: 'pw' }).laterStages).toEqual({ skipped: false, because: 'ssh_pwauth' });
    expect(seedOf({ laterStages: 'always' }).laterStages).toEqual({
      skipped: false,
      because: 'cloud_init.later_stages: always',
    });
    expect(
      laterStageWork({ users: ['default'], ssh_keys: {}, growpart: { mode: 'off' }, merge_how: 'x' }),
    ).toBeUndefined();
    expect(laterStageWork({ timezone: 'UTC' })).toBe('timezone');
  });
  it('merges nested maps', () => {
    expect(mergeCloudConfig({ a: { b: 1, c: [1] } }, { a: { c: [2], d: 3 } })).toEqual({
      a: { b: 1, c: [1, 2], d: 3 },
    });
  });
  it("turns cloud-init's growpart off only when kiln grew the root partition, and says when the template configures growpart itself", () => {
    expect(userDataOf({ rootPartitionGrown: true }).growpart).toEqual({ mode: 'off' });
    expect(userDataOf().growpart).toBeUndefined();
    expect(userDataConfiguresGrowpart({ growpart: { devices: ['/', '/var'] } })).toBe(true);
    expect(userDataConfiguresGrowpart('#cloud-config\ngrowpart:\n  mode: growpart\n')).toBe(true);
    expect(userDataConfiguresGrowpart({ packages: ['curl'], resize_rootfs: true })).toBe(false);
    expect(userDataConfiguresGrowpart('')).toBe(false);
  });
  it('derives public keys and fingerprints like ssh-keygen', () => {
    expect(publicKeyOf(build.privateKey)).toBe(build.publicKey.split(' ').slice(0, 2).join(' '));
    expect(fingerprintOf(build.publicKey)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });
});
