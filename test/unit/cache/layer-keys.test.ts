// Layer keys: what invalidates a cached provisioner layer, and what must not.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { findExecutable } from '../../../src/qemu/process.js';
import { artifactKey, canonicalJson, planLayers, resumePoint, sourceKey } from '../../../src/cache/layer-keys.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'not really an image; keys only need the path to exist');
writeFileSync(path.join(dir, 'setup.sh'), 'echo setup\n');

interface Variant {
  source?: string;
  provisioners?: string;
  outputs?: string;
}
let n = 0;
async function keysOf(v: Variant = {}, baseSha = 'a'.repeat(64)) {
  const file = path.join(dir, `t${n++}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: k
    source:
      base_image: base.qcow2
      checksum: none
      disk_size: 2G
${v.source ?? ''}
    provisioners:
${
  v.provisioners ??
  `      - { type: shell, inline: [echo one] }
      - { type: shell, script: setup.sh }
      - { type: file, content: hello, destination: /tmp/hello }`
}
    outputs:
${v.outputs ?? '      - format: qcow2'}
`,
  );
  const build = loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
  const root = await sourceKey(build, baseSha);
  const plan = await planLayers(build, root);
  return { root, plan, keys: plan.map((l) => l.key), artifact: await artifactKey(build, root, plan) };
}

describe('layer keys', () => {
  it('are stable for the same inputs, and every layer has one', async () => {
    const a = await keysOf();
    const b = await keysOf();
    expect(a.keys).toEqual(b.keys);
    expect(a.keys.every((k) => /^[0-9a-f]{64}$/.test(k ?? ''))).toBe(true);
    expect(new Set(a.keys).size).toBe(3);
    expect(a.artifact).toBe(b.artifact);
  });

  it('ignore settings that only change how the VM runs', async () => {
    const a = await keysOf();
    const b = await keysOf({
      source:
        '      cpus: 4\n      memory: 2048\n      cpu_model: max\n      shutdown_timeout: 9m\n      communicator: { timeout: 30m }',
    });
    expect(b.keys).toEqual(a.keys);
    const c = await keysOf({
      provisioners: `      - { type: shell, inline: [echo one], timeout: 5m, max_retries: 2 }
      - { type: shell, script: setup.sh, pause_before: 1s }
      - { type: file, content: hello, destination: /tmp/hello }`,
    });
    expect(c.keys).toEqual(a.keys);
  });

  it('change entirely with the base image or a disk-shaping source setting', async () => {
    const a = await keysOf();
    const other = await keysOf({}, 'b'.repeat(64));
    const bigger = await keysOf({ source: '      firmware: uefi' });
    for (const k of [...other.keys, ...bigger.keys]) expect(a.keys).not.toContain(k);
  });

  it("follow the seed's way in as kiln resolves it: a CD asked for and a CD chosen are one key, HTTP another", async () => {
    const unset = await keysOf();
    const cdrom = await keysOf({ source: '      cloud_init: { delivery: cdrom }' });
    const http = await keysOf({ source: '      cloud_init: { delivery: http }' });
    // make setup installs xorriso, so kiln's choice here is the CD; without it, HTTP.
    expect(unset.root).toBe(findExecutable('xorriso') ? cdrom.root : http.root);
    expect(http.root).not.toBe(cdrom.root);
  });

  it('keep earlier layers when only a later provisioner changes', async () => {
    const a = await keysOf();
    const b = await keysOf({
      provisioners: `      - { type: shell, inline: [echo one] }
      - { type: shell, script: setup.sh }
      - { type: file, content: changed, destination: /tmp/hello }`,
    });
    expect(b.keys.slice(0, 2)).toEqual(a.keys.slice(0, 2));
    expect(b.keys[2]).not.toBe(a.keys[2]);
  });

  it('follow the content of a script file, from its provisioner onwards', async () => {
    const a = await keysOf();
    writeFileSync(path.join(dir, 'setup.sh'), 'echo setup changed\n');
    const b = await keysOf();
    writeFileSync(path.join(dir, 'setup.sh'), 'echo setup\n');
    expect(b.keys[0]).toBe(a.keys[0]);
    expect(b.keys[1]).not.toBe(a.keys[1]);
    expect(b.keys[2]).not.toBe(a.keys[2]);
  });

  it('end at cache: false and at shell-local, which acts on the host', async () => {
    const off = await keysOf({
      provisioners: `      - { type: shell, inline: [echo one] }
      - { type: shell, script: setup.sh, cache: false }
      - { type: file, content: hello, destination: /tmp/hello }`,
    });
    expect(off.keys[0]).toBeDefined();
    expect(off.keys.slice(1)).toEqual([undefined, undefined]);
    expect(off.plan[1]!.uncacheable).toBe('cache: false');
    expect(off.artifact).toBeUndefined();

    const local = await keysOf({
      provisioners: `      - { type: shell-local, inline: [date] }
      - { type: shell, inline: [echo one] }`,
    });
    expect(local.keys).toEqual([undefined, undefined]);
    expect(local.plan[0]!.uncacheable).toMatch(/shell-local runs on the host/);
    const allowed = await keysOf({ provisioners: '      - { type: shell-local, inline: [date], cache: true }' });
    expect(allowed.keys[0]).toBeDefined();
  });

  it('differ between builds of another name (cloud-init hostname, \${build.name})', async () => {
    const a = await keysOf();
    const file = path.join(dir, 'renamed.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: other
    source: { base_image: base.qcow2, checksum: none, disk_size: 2G }
    provisioners:
      - { type: shell, inline: [echo one] }
`,
    );
    const build = loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
    const plan = await planLayers(build, await sourceKey(build, 'a'.repeat(64)));
    expect(plan[0]!.key).not.toBe(a.keys[0]);
  });

  it('leave out provisioners that do not apply to the build', async () => {
    const a = await keysOf({
      provisioners: `      - { type: shell, inline: [echo one] }
      - { type: shell, inline: [echo other], only: [someone-else] }`,
    });
    expect(a.plan.map((l) => l.index)).toEqual([0]);
  });

  it('artifact key follows the outputs; layer keys do not', async () => {
    const a = await keysOf();
    const b = await keysOf({ outputs: '      - format: vmdk' });
    expect(b.keys).toEqual(a.keys);
    expect(b.artifact).not.toBe(a.artifact);
  });

  it("artifact key follows the content of a box's include files; layer keys do not", async () => {
    const info = path.join(dir, 'info.json');
    const box = { outputs: '      - { format: vagrant, include: [info.json] }' };
    writeFileSync(info, '{"v":1}\n');
    const a = await keysOf(box);
    expect((await keysOf(box)).artifact).toBe(a.artifact);
    writeFileSync(info, '{"v":2}\n');
    const b = await keysOf(box);
    expect(b.keys).toEqual(a.keys);
    expect(b.artifact).not.toBe(a.artifact);
  });

  it('resume before an upload into /tmp, which the resumed guest has lost at boot', async () => {
    const { plan } = await keysOf({
      provisioners: `      - { type: shell, inline: [apt-get install -y jq] }
      - { type: file, content: x, destination: /tmp/app.conf }
      - { type: file, content: y, destination: /run/../tmp/other }
      - { type: shell, inline: [install /tmp/app.conf /etc/app.conf] }`,
    });
    expect(plan.map((l) => Boolean(l.bootVolatile))).toEqual([false, true, true, false]);
    expect(resumePoint(plan, 3)).toBe(1); // both uploads run again, then the install
    expect(resumePoint(plan, 4)).toBe(4); // nothing left to run: the final layer has the installed file
    expect(resumePoint(plan, 1)).toBe(1);
    const kept = await keysOf({
      provisioners: `      - { type: file, content: x, destination: /etc/app.conf }
      - { type: shell, inline: [cat /etc/app.conf] }`,
    });
    expect(resumePoint(kept.plan, 1)).toBe(1);
  });

  it('canonical JSON does not depend on key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe(
      canonicalJson({ a: { c: null, d: [1, { x: 1, y: 2 }] }, b: 1 }),
    );
  });
});
