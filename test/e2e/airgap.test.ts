/**
 * Air-gapped builds on the tiny guest (issue 17): record a build whose provisioner downloads a file
 * over HTTP from a loopback server standing in for the internet, bundle it, stop that server, and
 * build again from the bundle offline (QEMU restrict=on): the file arrives from the recording, the
 * guest cannot reach the host otherwise; a tampered bundle member is refused naming it; a URL the
 * bundle does not hold fails the build at once naming it.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, outputLines } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-airgap-'));
const cache = path.join(dir, 'cache');
mkdirSync(cache);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const payload = randomBytes(200_000);
const payloadSha = createHash('sha256').update(payload).digest('hex');

function serve(handler: http.RequestListener): Promise<{ port: number; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => { requests.push(req.url ?? ''); handler(req, res); });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: (server.address() as net.AddressInfo).port, requests,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  })));
}

describe('air-gapped builds (tiny guest)', () => {
  it('record -> bundle -> offline build from the bundle; tampering and a missing URL are named', async () => {
    const internet = await serve((req, res) => {
      if (req.url === '/payload.bin') res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(payload);
      else res.writeHead(404).end();
    });
    const url = `http://127.0.0.1:${internet.port}/payload.bin`;
    const template = path.join(dir, 'site', 'airgap.yaml');
    mkdirSync(path.dirname(template));
    writeFileSync(template, `
variables:
  url: { default: "${url}" }
  out: { default: "${path.join(dir, 'out-recorded')}" }
  probe: { default: "" }
builds:
  - name: airgap
    output_directory: \${var.out}
${tinySourceYaml('    ')}
    provisioners:
      - type: shell
        inline:
          - 'echo "proxy: $http_proxy"'
          - 'wget -q -O /root/payload.bin "\${var.url}"'
          - 'echo "payload sha256 $(sha256sum /root/payload.bin | cut -d" " -f1)"'
          - 'if [ -n "\${var.probe}" ]; then if wget -Y off -q -T 3 -O /dev/null "\${var.probe}"; then echo "host reached"; else echo "host unreachable"; fi; fi'
    outputs:
      - format: qcow2
`);
    const env = { KILN_CACHE_DIR: cache };

    // 1. Record, with the "internet" up.
    const recorded = await kiln(['build', template, '--record', '--events=json'], env);
    expect(recorded.exitCode, recorded.stderr).toBe(0);
    expect(outputLines(recorded.events, 'provisioner 1')).toContain(`payload sha256 ${payloadSha}`);
    expect(outputLines(recorded.events, 'provisioner 1')).toContain('proxy: http://10.0.2.100:3128');
    expect(internet.requests).toEqual(['/payload.bin']);

    // 2. Bundle: twice, the same bytes.
    const bundle = path.join(dir, 'site.kiln.tar');
    const b1 = await kiln(['bundle', template, '-o', bundle], env);
    expect(b1.exitCode, b1.stderr).toBe(0);
    expect(b1.stdout).toContain('1 recorded responses');
    const sha1 = /sha256 ([0-9a-f]{64})/.exec(b1.stdout)![1];
    const b2 = await kiln(['bundle', template, '-o', bundle, '--force'], env);
    expect(/sha256 ([0-9a-f]{64})/.exec(b2.stdout)![1]).toBe(sha1);
    expect(createHash('sha256').update(readFileSync(bundle)).digest('hex')).toBe(sha1);

    // 3. The internet goes away; build offline from the bundle. A host service the guest could reach
    //    without restrict=on (10.0.2.2 is the host's loopback) sees nothing.
    await internet.close();
    const lan = await serve((_req, res) => res.end('reached'));
    const outOffline = path.join(dir, 'out-offline');
    const offline = await kiln(['build', '--bundle', bundle, '--offline', '--events=json', '--var', `out=${outOffline}`, '--var', `probe=http://10.0.2.2:${lan.port}/`], env);
    await lan.close();
    expect(offline.exitCode, offline.stderr).toBe(0);
    const lines = outputLines(offline.events, 'provisioner 1');
    expect(lines).toContain(`payload sha256 ${payloadSha}`);
    expect(lines).toContain('host unreachable');
    expect(lan.requests).toEqual([]);
    expect(existsSync(path.join(outOffline, 'manifest.json'))).toBe(true);

    // 4. A tampered member is refused before anything starts, named.
    const bytes = readFileSync(bundle);
    const at = bytes.indexOf(payload.subarray(0, 64));
    expect(at).toBeGreaterThan(0);
    bytes[at + 100] = bytes[at + 100]! ^ 0xff;
    const tampered = path.join(dir, 'tampered.kiln.tar');
    writeFileSync(tampered, bytes);
    const refused = await kiln(['build', '--bundle', tampered, '--offline', '--var', `out=${path.join(dir, 'out-tampered')}`], env);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`member "blobs/${payloadSha}" is tampered`);
    expect(existsSync(path.join(dir, 'out-tampered'))).toBe(false);

    // 5. A URL the bundle does not hold fails the build at once, naming it.
    const missing = `http://127.0.0.1:${internet.port}/not-recorded.bin`;
    const miss = await kiln(['build', '--bundle', bundle, '--offline', '--events=json', '--var', `out=${path.join(dir, 'out-miss')}`, '--var', `url=${missing}`], env);
    expect(miss.exitCode).toBe(1);
    const end = miss.events.find((e) => e.type === 'build-end')!;
    expect(String(end.error)).toContain(`the guest fetched ${missing}, which the bundle's recorded package set does not hold`);
    expect(String(end.error)).toContain('kiln build --record');
    expect(existsSync(path.join(dir, 'out-miss'))).toBe(false);
  });
});
