/**
 * Issue 26 on the tiny guest: while recording, kiln's proxy is the guest's system proxy and the guest's
 * network is the offline one.
 *   1. A fetch run through an environment reset as sudo does it (env -i, then what pam_env reads:
 *      /etc/environment; the provisioner's own http_proxy is gone) is recorded through kiln's proxy,
 *      bundled, and replayed offline from the bundle with the "internet" server stopped. Neither
 *      artifact holds a byte of kiln's proxy settings (read from the disk offline, deleted blocks
 *      included), while the file the provisioner wrote is found there (the search's positive control).
 *   2. A fetch that goes around the proxy (a direct connection to the host's address) fails the
 *      recording build at once, named, with the fix, and the host service sees nothing; the same
 *      build's proxied fetch just before it worked (the positive control).
 * On main before this change both fetches went straight out while recording (no restrict=on), so the
 * recording missed the first and the second succeeded.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, outputLines } from '../helpers/kiln.js';
import { searchDisk } from '../helpers/disk-search.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-sysproxy-'));
const cache = path.join(dir, 'cache');
mkdirSync(cache);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const payload = randomBytes(100_000);
const payloadSha = createHash('sha256').update(payload).digest('hex');
const marker = `kiln-e2e-written-${randomBytes(6).toString('hex')}`;

function serve(
  handler: http.RequestListener,
): Promise<{ port: number; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    handler(req, res);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        requests,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      }),
    ),
  );
}

/** What the artifact must not hold: kiln's proxy address, its /etc/environment block, its apt and sudo lines. */
const proxyTraces = {
  proxyAddress: /10\.0\.2\.100:3128/,
  environmentBlock: /kiln build proxy/,
  sudoKeep: /env_keep \+= "http_proxy https_proxy no_proxy HTTP_PROXY/, // kiln's line, not Debian's commented example
};

describe('the guest system proxy while recording (tiny guest)', () => {
  it('a fetch through a sudo-like environment reset is recorded, bundled and replayed; a direct one fails the recording, named', async () => {
    const internet = await serve((req, res) => {
      if (req.url === '/pkg.bin') res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(payload);
      else res.writeHead(404).end();
    });
    const lan = await serve((_req, res) => res.end('reached'));
    const template = path.join(dir, 'site', 'sysproxy.yaml');
    mkdirSync(path.dirname(template));
    // Single-quoted YAML: '' is one quote.
    writeFileSync(
      template,
      `
variables:
  url: { default: "http://127.0.0.1:${internet.port}/pkg.bin" }
  out: { default: "${path.join(dir, 'out-recorded')}" }
  direct: { default: "" }
builds:
  - name: sysproxy
    output_directory: \${var.out}
${tinySourceYaml('    ')}
    provisioners:
      - type: shell
        inline:
          - 'echo "${marker}" > /root/written-by-provisioner'
          - 'env -i /bin/sh -c ''echo "after the reset: [$http_proxy]"'''
          - 'env -i /bin/sh -c ''set -a; . /etc/environment; set +a; echo "from /etc/environment: $http_proxy no_proxy=$no_proxy"; exec wget -q -O /root/pkg.bin "$1"'' sh "\${var.url}"'
          - 'echo "pkg sha256 $(sha256sum /root/pkg.bin | cut -d" " -f1)"'
          - 'if [ -n "\${var.direct}" ]; then wget -Y off -q -O /dev/null "\${var.direct}"; echo "direct fetch worked"; fi'
    outputs:
      - format: qcow2
`,
    );
    const env = { KILN_CACHE_DIR: cache };

    // 1. Record: the reset environment fetches through kiln's proxy (the "internet" sees kiln's request).
    const recorded = await kiln(['build', template, '--record', '--events=json'], env);
    expect(recorded.exitCode, recorded.stderr).toBe(0);
    const lines = outputLines(recorded.events, 'provisioner 1');
    expect(lines).toContain('after the reset: []');
    expect(lines).toContain(`from /etc/environment: http://10.0.2.100:3128 no_proxy=localhost,127.0.0.1,10.0.2.101`);
    expect(lines).toContain(`pkg sha256 ${payloadSha}`);
    expect(internet.requests).toEqual(['/pkg.bin']);

    // Nothing of the proxy settings is left on the artifact's disk; what the provisioner wrote is.
    const recordedDisk = path.join(dir, 'out-recorded', 'sysproxy.qcow2');
    const found = await searchDisk(recordedDisk, { ...proxyTraces, written: new RegExp(marker) }, dir);
    expect(found.written!.length).toBeGreaterThan(0);
    expect({
      proxyAddress: found.proxyAddress,
      environmentBlock: found.environmentBlock,
      sudoKeep: found.sudoKeep,
    }).toEqual({ proxyAddress: [], environmentBlock: [], sudoKeep: [] });

    // 2. Bundle, stop the "internet", build offline from the bundle: the same reset fetch is replayed.
    const bundle = path.join(dir, 'site.kiln.tar');
    const b = await kiln(['bundle', template, '-o', bundle], env);
    expect(b.exitCode, b.stderr).toBe(0);
    await internet.close();
    const outOffline = path.join(dir, 'out-offline');
    // A cache of its own, as at the site: the recording machine's layers would make the build from the bundle boot nothing.
    const siteCache = path.join(dir, 'site-cache');
    mkdirSync(siteCache);
    const offline = await kiln(
      ['build', '--bundle', bundle, '--offline', '--events=json', '--var', `out=${outOffline}`],
      { KILN_CACHE_DIR: siteCache },
    );
    expect(offline.exitCode, offline.stderr).toBe(0);
    expect(outputLines(offline.events, 'provisioner 1')).toContain(`pkg sha256 ${payloadSha}`);
    const offlineFound = await searchDisk(path.join(outOffline, 'sysproxy.qcow2'), proxyTraces, dir);
    expect(offlineFound).toEqual({ proxyAddress: [], environmentBlock: [], sudoKeep: [] });

    // 3. Record again with a fetch around the proxy, to the host's own address: the guest cannot reach
    //    it (restrict=on), the build fails naming the guest's words for it and the fix, and no output is made.
    const internet2 = await serve((req, res) => res.writeHead(req.url === '/pkg.bin' ? 200 : 404).end(payload));
    const direct = `http://10.0.2.2:${lan.port}/`;
    const outBypass = path.join(dir, 'out-bypass');
    const bypass = await kiln(
      [
        'build',
        template,
        '--record',
        '--recording',
        path.join(dir, 'recording-bypass'),
        '--events=json',
        '--var',
        `out=${outBypass}`,
        '--var',
        `url=http://127.0.0.1:${internet2.port}/pkg.bin`,
        '--var',
        `direct=${direct}`,
      ],
      env,
    );
    await internet2.close();
    await lan.close();
    expect(bypass.exitCode).toBe(1);
    const bypassLines = outputLines(bypass.events, 'provisioner 1');
    expect(bypassLines).toContain(`pkg sha256 ${payloadSha}`);
    expect(bypassLines).not.toContain('direct fetch worked');
    expect(lan.requests).toEqual([]);
    const end = bypass.events.find((e) => e.type === 'build-end')!;
    const error = String(end.error);
    expect(error).toContain("can't connect to remote host (10.0.2.2)");
    expect(error).toContain("the guest tried to reach the network around kiln's package proxy");
    expect(error).toContain('fix: fetch over http:// through the proxy');
    expect(existsSync(outBypass)).toBe(false);
    // Three builds (record, offline replay, the bypass): ~100 s quiet, well past vitest's 120 s default on a busy host.
  }, 900_000);
});
