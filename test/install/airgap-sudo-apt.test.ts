/**
 * Issue 26 on Debian, written the way users write it: cloud-init's own `packages:`, a plain
 * `sudo apt-get update && sudo apt-get install -y jq` (no `sudo -E`, no `env {{vars}}`: sudo's
 * env_reset drops the provisioner's http_proxy) and an Ansible `apt:` task with `become: true`. Each
 * fetches through kiln's package proxy only because the proxy is the guest's system proxy (apt.conf.d,
 * /etc/environment, sudo's env_keep). Record, bundle, then build offline in a network namespace with no
 * route out (unshare --net): every package is in the offline artifact, and no byte of kiln's proxy
 * settings is left on either disk (deleted blocks included).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { searchDisk } from '../helpers/disk-search.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-sudo-apt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const proxyTraces = {
  proxyAddress: /10\.0\.2\.100:3128/,
  environmentBlock: /kiln build proxy/,
  sudoKeep: /env_keep \+= "http_proxy https_proxy no_proxy HTTP_PROXY/,
};

const packagesOf = (manifestFile: string): string[] =>
  (JSON.parse(readFileSync(manifestFile, 'utf8')) as { sbom: { packages: { name: string }[] } }).sbom.packages.map(
    (p) => p.name,
  );

describe('air-gapped Debian build with plain sudo apt-get, cloud-init packages and Ansible become', () => {
  it('records every fetch, bundles, and builds offline in a netns with no route out', async () => {
    const site = path.join(dir, 'template');
    mkdirSync(site);
    writeFileSync(
      path.join(site, 'bc.yml'),
      `- hosts: all
  tasks:
    - name: bc from the Debian mirror
      apt: { name: bc, state: present, update_cache: true }
`,
    );
    const template = path.join(site, 'sudo-apt.yaml');
    writeFileSync(
      template,
      `
variables:
  out: { default: "${path.join(dir, 'out-recorded')}" }
builds:
  - name: sudo-apt
    output_directory: \${var.out}
    source:
      base_image: ${path.join(repoRoot, 'fixtures/images/debian-12-cloud.qcow2')}
      checksum: none
      disk_size: 4G
      cpus: 2
      memory: 1024
      cloud_init:
        user_data:
          packages: [tree]
      communicator:
        username: kiln
        timeout: 15m
      shutdown_timeout: 3m
    provisioners:
      - type: shell
        inline:
          - sudo apt-get update
          - sudo apt-get install -y jq
      - type: ansible
        playbook_file: bc.yml
        become: true
    outputs:
      - format: qcow2
`,
    );
    const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };

    const t0 = performance.now();
    const recorded = await kiln(['build', template, '--record', '--events=json'], env, 3_600_000);
    const tRecord = performance.now() - t0;
    expect(recorded.exitCode, recorded.stderr.slice(-4000)).toBe(0);
    const recordedManifest = path.join(dir, 'out-recorded', 'manifest.json');
    expect(packagesOf(recordedManifest)).toEqual(expect.arrayContaining(['tree', 'jq', 'bc']));
    expect(await searchDisk(path.join(dir, 'out-recorded', 'sudo-apt.qcow2'), proxyTraces, dir)).toEqual({
      proxyAddress: [],
      environmentBlock: [],
      sudoKeep: [],
    });

    const bundle = path.join(dir, 'site.kiln.tar');
    const t1 = performance.now();
    const b = await kiln(['bundle', template, '-o', bundle], env, 3_600_000);
    const tBundle = performance.now() - t1;
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/[1-9]\d* recorded responses/);

    // The site: no route out, a cache of its own, only the bundle.
    const out = path.join(dir, 'out-offline');
    const script = [
      'set -e',
      'ip link set lo up',
      '! ip route get 1.1.1.1 >/dev/null 2>&1',
      `KILN_CACHE_DIR=${path.join(dir, 'site-cache')} node ${path.join(repoRoot, 'bin/kiln.js')} build --bundle ${bundle} --offline --var out=${out}`,
    ].join('\n');
    const t2 = performance.now();
    const offline = await execa('unshare', ['--net', 'bash', '-c', script], {
      reject: false,
      timeout: 3_600_000,
      cwd: dir,
    });
    const tOffline = performance.now() - t2;
    expect(offline.exitCode, String(offline.stderr).slice(-4000)).toBe(0);
    expect(packagesOf(path.join(out, 'manifest.json'))).toEqual(expect.arrayContaining(['tree', 'jq', 'bc']));
    expect(await searchDisk(path.join(out, 'sudo-apt.qcow2'), proxyTraces, dir)).toEqual({
      proxyAddress: [],
      environmentBlock: [],
      sudoKeep: [],
    });
    process.stderr.write(
      `sudo-apt airgap figures: record build ${(tRecord / 1000).toFixed(0)} s, bundle ${(statSync(bundle).size / 2 ** 20).toFixed(0)} MiB in ${(tBundle / 1000).toFixed(1)} s, offline build ${(tOffline / 1000).toFixed(0)} s\n`,
    );
  });
});
