import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { mergeCloudConfig, renderSeed } from '../../src/cloudinit/seed.js';
import { generateKeyPair, fingerprintOf, publicKeyOf } from '../../src/communicator/keys.js';

describe('cloud-init seed', () => {
  const build = generateKeyPair('build');
  const host = generateKeyPair('host');
  const seed = renderSeed({
    hostname: 'web', username: 'kiln', authorizedKey: build.publicKey, hostKey: host,
    userData: { packages: ['curl'], users: [{ name: 'alice' }], ssh_pwauth: true },
    metaData: { 'availability-zone': 'lab' },
  });
  const ud = YAML.parse(seed.userData, { version: '1.1' }) as Record<string, unknown>;

  it('starts with #cloud-config and authorizes the build key for the build user', () => {
    expect(seed.userData.startsWith('#cloud-config\n')).toBe(true);
    const users = ud.users as unknown[];
    expect(users[0]).toBe('default');
    expect(users[1]).toMatchObject({ name: 'kiln', sudo: 'ALL=(ALL) NOPASSWD:ALL', lock_passwd: true, ssh_authorized_keys: [build.publicKey] });
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
    const again = renderSeed({ hostname: 'web', username: 'kiln', authorizedKey: build.publicKey, hostKey: host, userData: {}, metaData: {} });
    expect(again.instanceId).not.toBe(seed.instanceId);
  });
  it('accepts a #cloud-config string and rejects scripts', () => {
    const s = renderSeed({ hostname: 'h', username: 'u', authorizedKey: build.publicKey, hostKey: host, userData: '#cloud-config\nruncmd: [[touch, /x]]\n', metaData: {} });
    expect(YAML.parse(s.userData).runcmd).toEqual([['touch', '/x']]);
    expect(() => renderSeed({ hostname: 'h', username: 'u', authorizedKey: build.publicKey, hostKey: host, userData: '#!/bin/sh\necho', metaData: {} })).toThrow(/#cloud-config/);
  });
  it('merges nested maps', () => {
    expect(mergeCloudConfig({ a: { b: 1, c: [1] } }, { a: { c: [2], d: 3 } })).toEqual({ a: { b: 1, c: [1, 2], d: 3 } });
  });
  it('derives public keys and fingerprints like ssh-keygen', () => {
    expect(publicKeyOf(build.privateKey)).toBe(build.publicKey.split(' ').slice(0, 2).join(' '));
    expect(fingerprintOf(build.publicKey)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });
});
