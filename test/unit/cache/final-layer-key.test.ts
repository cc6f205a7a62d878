// The final layer's key: what makes a build's cleaned, trimmed final disk reusable by a later build
// (which then converts without booting), and what must not stop it from being reused.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { finalLayerKey, planLayers, sourceKey } from '../../../src/cache/layer-keys.js';
import { cleanGuestScript } from '../../../src/build/steps/clean-guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-final-key-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'keys only need the path to exist');

interface Variant {
  source?: string;
  provisioners?: string;
  rest?: string;
  name?: string;
}
let n = 0;
async function finalKeyOf(v: Variant = {}, scripts = [cleanGuestScript(true)]) {
  const file = path.join(dir, `t${n++}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: ${v.name ?? 'k'}
    output_directory: ${path.join(dir, 'out', String(n))}
    source:
      base_image: base.qcow2
      checksum: none
      disk_size: 2G
${v.source ?? ''}
    provisioners:
${
  v.provisioners ??
  `      - { type: shell, inline: [echo one] }
      - { type: shell, inline: [echo two] }`
}
${
  v.rest ??
  `    outputs:
      - format: qcow2`
}
`,
  );
  const build = loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
  const root = await sourceKey(build, 'a'.repeat(64));
  return finalLayerKey(build, root, await planLayers(build, root), scripts);
}

describe('final layer key', () => {
  it('is a digest, stable for the same inputs', async () => {
    const a = await finalKeyOf();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await finalKeyOf()).toBe(a);
  });

  it('does not change with the outputs, post-processors, checksums, output directory or run-time settings', async () => {
    const a = await finalKeyOf();
    // Every template here gets its own output_directory already.
    expect(
      await finalKeyOf({
        rest: `    outputs:
      - { format: vmdk }
      - { format: raw }
    checksums: [sha256, sha512]
    post_processors:
      - { type: compress, algorithm: zstd }`,
      }),
    ).toBe(a);
    expect(await finalKeyOf({ source: '      cpus: 4\n      memory: 2048\n      shutdown_timeout: 9m' })).toBe(a);
    expect(
      await finalKeyOf({
        provisioners: `      - { type: shell, inline: [echo one], timeout: 5m }
      - { type: shell, inline: [echo two], max_retries: 3 }`,
      }),
    ).toBe(a);
  });

  it('changes with any provisioner, the base-shaping source, the communicator user, cloud-init, the shutdown command and the clean-up script', async () => {
    const a = await finalKeyOf();
    const others = [
      await finalKeyOf({
        provisioners: '      - { type: shell, inline: [echo one] }\n      - { type: shell, inline: [echo TWO] }',
      }),
      await finalKeyOf({ provisioners: '      - { type: shell, inline: [echo one] }' }),
      await finalKeyOf({ source: '      firmware: uefi' }),
      await finalKeyOf({ source: '      communicator: { username: debian }' }),
      await finalKeyOf({ source: '      shutdown_command: "sudo rm -f /etc/x; sudo poweroff"' }),
      await finalKeyOf({ name: 'other' }),
      await finalKeyOf({}, [cleanGuestScript(true) + '# changed\n']),
    ];
    for (const k of others) expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set([a, ...others]).size).toBe(others.length + 1);
    const withPassword = '      communicator: { username: root, password: pw }';
    expect(await finalKeyOf({ source: `${withPassword}\n      cloud_init: false` })).not.toBe(
      await finalKeyOf({ source: withPassword }),
    );
  });

  it('exists with no provisioners (on the root key), and not when a provisioner is uncached or there is no communicator', async () => {
    expect(await finalKeyOf({ provisioners: '      []' })).toMatch(/^[0-9a-f]{64}$/);
    expect(
      await finalKeyOf({ provisioners: '      - { type: shell, inline: [echo one], cache: false }' }),
    ).toBeUndefined();
    expect(await finalKeyOf({ provisioners: '      - { type: shell-local, inline: [echo host] }' })).toBeUndefined();
    expect(
      await finalKeyOf({ source: '      communicator: { type: none }', provisioners: '      []' }),
    ).toBeUndefined();
  });
});
