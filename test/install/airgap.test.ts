/**
 * Air-gapped builds, the full scenario (issue 17): record the Debian example (apt-get update
 * + install jq from the mirror through kiln's proxy), bundle it with kiln itself, then in a network
 * namespace with no route out (made here with unshare --net; only loopback is up) install kiln from
 * the bundle's kiln.tgz into a fresh prefix and build the example offline from the bundle. The offline
 * build's guest runs `jq --version`, and its package list (read in the guest) holds jq.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/guest.js';
import { kiln, outputLines } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-airgap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('air-gapped build of the Debian example', () => {
  it('record -> bundle --with-kiln -> install kiln and build offline in a netns with no route out', async () => {
    const cache = path.join(dir, 'cache');
    const env = { KILN_CACHE_DIR: cache };
    const example = path.join(repoRoot, 'examples/debian-12-cloud.yaml');
    const t0 = performance.now();
    const recorded = await kiln(['build', example, '--record', '--force', '--events=json'], env, 3_600_000);
    expect(recorded.exitCode, recorded.stderr.slice(-4000)).toBe(0);
    const tRecord = performance.now() - t0;

    const bundle = path.join(dir, 'site.kiln.tar');
    const b = await kiln(['bundle', example, '-o', bundle, '--with-kiln'], env, 3_600_000);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/[1-9]\d* recorded responses/);

    // The air-gapped side: only what the bundle holds. kiln.tgz comes out of the bundle itself.
    const site = path.join(dir, 'site');
    mkdirSync(site);
    await execa('tar', ['-xf', bundle, '-C', site, 'kiln.tgz']);
    const prefix = path.join(dir, 'prefix');
    const script = [
      'set -e',
      'ip link set lo up',
      // No route out: anything but loopback fails at once.
      '! ip route get 1.1.1.1 >/dev/null 2>&1',
      `npm install -g --prefix ${prefix} --cache ${path.join(dir, 'npm-cache')} --no-audit --no-fund ${path.join(site, 'kiln.tgz')}`,
      `cd ${site}`,
      `KILN_CACHE_DIR=${path.join(dir, 'site-cache')} ${prefix}/bin/kiln build --bundle ${bundle} --offline --events=json`,
    ].join('\n');
    const t1 = performance.now();
    const offline = await execa('unshare', ['--net', 'bash', '-c', script], { reject: false, timeout: 3_600_000 });
    const tOffline = performance.now() - t1;
    expect(offline.exitCode, String(offline.stderr).slice(-4000)).toBe(0);
    const events = String(offline.stdout)
      .split('\n')
      .filter((l) => l.startsWith('{"type"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(outputLines(events, 'provisioner 3').some((l) => /^jq-1\./.test(l))).toBe(true);
    const manifest = JSON.parse(readFileSync(path.join(site, 'output/debian-12-cloud/manifest.json'), 'utf8'));
    expect(manifest.sbom.packages.map((p: { name: string }) => p.name)).toContain('jq');
    process.stderr.write(
      `airgap figures: record build ${(tRecord / 1000).toFixed(0)} s, bundle ${(statSync(bundle).size / 2 ** 20).toFixed(0)} MiB, offline install + build ${(tOffline / 1000).toFixed(0)} s\n`,
    );
  });
});
