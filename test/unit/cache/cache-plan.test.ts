// planBuild (src/cache/plan.ts): what a build would do with what the caches hold, without booting:
// fresh, resume(at) on the deepest intact layer, fromFinalLayer (local, or remote when only the remote
// has it), upToDate; damaged layers reported (the store untouched); an unknown base explained. And the
// network file system check a shared KILN_CACHE_DIR gets.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { planBuild, type RemoteLookup } from '../../../src/cache/plan.js';
import { LayerStore } from '../../../src/cache/layers.js';
import { networkFileSystem } from '../../../src/cache/network-fs.js';
import { publishVmState, vmStateTemp } from '../../../src/cache/vm-states.js';
import { toBuildPlan } from '../../../src/scale/plan.js';
import { FakeDriver } from '../../helpers/fake-driver.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = path.join(dir, 'base.qcow2');
writeFileSync(base, 'a base image');

let n = 0;
function buildOf(
  provisioners = "[{ type: shell, inline: ['echo one'] }, { type: shell, inline: ['echo two'] }]",
  source = `base_image: ${base}`,
) {
  const file = path.join(dir, `t${n++}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: p
    output_directory: ${path.join(dir, 'out', String(n))}
    source:
      ${source}
      checksum: none
      communicator: { username: root, password: x }
    provisioners: ${provisioners}
`,
  );
  return loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
}

async function storeWith(keys: (string | undefined)[], finalKey?: string) {
  const cacheDir = mkdtempSync(path.join(dir, 'cache-'));
  const store = new LayerStore(cacheDir, new FakeDriver());
  const frozen = path.join(cacheDir, 'frozen');
  writeFileSync(frozen, 'a layer');
  const rootName = await store.ensureBase(base, 'b'.repeat(64), 'qcow2');
  let parent: string | null = null;
  const meta = { build: 'p', template: 't', description: 'shell' };
  for (const [i, k] of keys.entries()) {
    if (!k) continue;
    await store.publish(
      k,
      frozen,
      parent ? { name: `${parent}.qcow2`, format: 'qcow2' } : { name: rootName, format: 'qcow2' },
      { ...meta, parent, provisioner: i + 1 },
    );
    parent = k;
  }
  if (finalKey)
    await store.publish(
      finalKey,
      frozen,
      { name: `${parent}.qcow2`, format: 'qcow2' },
      { ...meta, parent, provisioner: 0, final: {} },
    );
  return { cacheDir, store };
}

const remoteHolding = (keys: string[]): RemoteLookup & { asked: string[] } => {
  const asked: string[] = [];
  return {
    asked,
    has: async (k) => {
      asked.push(k);
      return keys.includes(k);
    },
  };
};

describe('planBuild', () => {
  it('an empty cache: fresh, every layer keyed, nothing local; the final key known', async () => {
    const b = buildOf();
    const { cacheDir } = await storeWith([]);
    const plan = await planBuild(b, { cacheDir, finishingScripts: ['clean'] });
    expect(plan.resume).toEqual({ kind: 'fresh' });
    expect(plan.upToDate).toBe(false);
    expect(plan.layers.map((l) => [l.index, Boolean(l.key), l.local])).toEqual([
      [0, true, false],
      [1, true, false],
    ]);
    expect(plan.final).toEqual({ key: expect.stringMatching(/^[0-9a-f]{64}$/), local: false });
    // The base's digest comes from the file itself (no fetch step ran).
    expect(plan.base!.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('layer 1 cached: resume at 1; both: resume at 2 (the guest boots for the finishing steps); the final disk: fromFinalLayer', async () => {
    const b = buildOf();
    const keys = (await planBuild(b, { cacheDir: dir, finishingScripts: ['clean'] })).layers.map((l) => l.key!);
    const finalKey = (await planBuild(b, { cacheDir: dir, finishingScripts: ['clean'] })).final!.key;
    const one = await storeWith([keys[0]]);
    expect(
      (await planBuild(b, { cacheDir: one.cacheDir, store: one.store, finishingScripts: ['clean'], verify: true }))
        .resume,
    ).toEqual({ kind: 'resume', at: 1, key: keys[0], source: 'local' });
    const both = await storeWith(keys);
    expect(
      (await planBuild(b, { cacheDir: both.cacheDir, store: both.store, finishingScripts: ['clean'] })).resume,
    ).toMatchObject({ kind: 'resume', at: 2 });
    const all = await storeWith(keys, finalKey);
    const plan = await planBuild(b, {
      cacheDir: all.cacheDir,
      store: all.store,
      finishingScripts: ['clean'],
      verify: true,
    });
    expect(plan.resume).toEqual({ kind: 'fromFinalLayer', finalKey, source: 'local' });
    expect(plan.final).toEqual({ key: finalKey, local: true });
    // Other finishing scripts: another final key, so the last layer boots.
    expect(
      (await planBuild(b, { cacheDir: all.cacheDir, store: all.store, finishingScripts: ['other'] })).resume.kind,
    ).toBe('resume');
  });

  it('a damaged layer: reported, the plan resumes below it, the store untouched (the build removes it)', async () => {
    const b = buildOf();
    const keys = (await planBuild(b, { cacheDir: dir })).layers.map((l) => l.key!);
    const s = await storeWith(keys);
    writeFileSync(s.store.layerFile(keys[1]!), 'damaged');
    const plan = await planBuild(b, { cacheDir: s.cacheDir, store: s.store, verify: true });
    expect(plan.resume).toMatchObject({ kind: 'resume', at: 1 });
    expect(plan.damaged).toEqual([{ key: keys[1], problem: expect.stringMatching(/^digest mismatch/) }]);
    expect(s.store.meta(keys[1]!)).toBeDefined();
    // Without verify (kiln plan, quick): the layer counts as cached.
    expect((await planBuild(b, { cacheDir: s.cacheDir, store: s.store })).resume).toMatchObject({
      kind: 'resume',
      at: 2,
    });
  });

  it('only the remote cache holds the final disk: fromFinalLayer from the remote; asked only when the local store lacks it', async () => {
    const b = buildOf();
    const probe = await planBuild(b, { cacheDir: dir, finishingScripts: ['clean'] });
    const remote = remoteHolding([probe.final!.key]);
    const empty = await storeWith([]);
    const plan = await planBuild(b, {
      cacheDir: empty.cacheDir,
      store: empty.store,
      finishingScripts: ['clean'],
      remote,
    });
    expect(plan.resume).toEqual({ kind: 'fromFinalLayer', finalKey: probe.final!.key, source: 'remote' });
    expect(plan.final).toEqual({ key: probe.final!.key, local: false, remote: true });
    const local = await storeWith(
      probe.layers.map((l) => l.key!),
      probe.final!.key,
    );
    const asked = remoteHolding([]);
    expect(
      (await planBuild(b, { cacheDir: local.cacheDir, store: local.store, finishingScripts: ['clean'], remote: asked }))
        .resume,
    ).toMatchObject({ source: 'local' });
    expect(asked.asked).toEqual([]);
    // A remote without it: fresh, and the plan says the remote was asked.
    const none = await planBuild(b, {
      cacheDir: empty.cacheDir,
      store: empty.store,
      finishingScripts: ['clean'],
      remote: remoteHolding([]),
    });
    expect(none.resume).toEqual({ kind: 'fresh' });
    expect(none.final!.remote).toBe(false);
  });

  it('remote intermediate layers, when asked for: a resume from the remote only over an unbroken run', async () => {
    const b = buildOf();
    const keys = (await planBuild(b, { cacheDir: dir })).layers.map((l) => l.key!);
    const empty = await storeWith([]);
    const both = await planBuild(b, {
      cacheDir: empty.cacheDir,
      store: empty.store,
      remote: remoteHolding(keys),
      remoteIntermediate: true,
    });
    expect(both.resume).toMatchObject({ kind: 'resume', at: 2, source: 'remote' });
    const gap = await planBuild(b, {
      cacheDir: empty.cacheDir,
      store: empty.store,
      remote: remoteHolding([keys[1]!]),
      remoteIntermediate: true,
    });
    expect(gap.resume).toEqual({ kind: 'fresh' });
  });

  it('a URL base not downloaded and no sha256 checksum: no keys, and why', async () => {
    const b = buildOf(undefined, 'base_image: https://example.invalid/disk.qcow2');
    const plan = await planBuild(b, { cacheDir: mkdtempSync(path.join(dir, 'c-')) });
    expect(plan.resume).toEqual({ kind: 'fresh' });
    expect(plan.layers).toEqual([]);
    expect(plan.unknown).toMatch(/is not downloaded yet/);
  });

  it('a warm base for this root key, with its VM: named for a fresh start when asked (kiln plan); none yet: null; another root key is not it', async () => {
    const b = buildOf();
    const { cacheDir, store } = await storeWith([]);
    const fresh = await planBuild(b, { cacheDir, store, warmBase: true });
    expect(fresh.warmBase).toBeNull();
    expect(toBuildPlan(b, fresh, false).notes).toEqual([
      expect.stringMatching(/^no warm base for this base image .* yet/),
    ]);
    // Not asked for (the build finds its own by the exact key): no field at all.
    expect((await planBuild(b, { cacheDir, store })).warmBase).toBeUndefined();

    const frozen = path.join(cacheDir, 'frozen');
    const rootName = await store.ensureBase(base, 'b'.repeat(64), 'qcow2');
    const saveWarm = async (key: string, rootKey: string, withVm: boolean) => {
      const meta = {
        build: 'p',
        template: 't',
        description: 'warm base',
        parent: null,
        provisioner: 0,
        warmBase: true,
      };
      writeFileSync(frozen, 'a booted disk');
      const layer = await store.publish(key, frozen, { name: rootName, format: 'qcow2' }, { ...meta, rootKey });
      if (!withVm) return;
      const tmp = vmStateTemp(store.dir, key);
      writeFileSync(tmp, Buffer.alloc(3 * 2 ** 20));
      await publishVmState(store.dir, tmp, {
        key,
        qemuVersion: '7.2.0',
        shape: [],
        saveMs: 1,
        layerSha256: layer.sha256,
      });
    };
    await saveWarm('1'.repeat(64), 'f'.repeat(64), true); // another base or settings
    await saveWarm('2'.repeat(64), fresh.rootKey!, false); // its VM state is gone
    expect((await planBuild(b, { cacheDir, store, warmBase: true })).warmBase).toBeNull();
    await saveWarm('3'.repeat(64), fresh.rootKey!, true);
    const warm = await planBuild(b, { cacheDir, store, warmBase: true });
    expect(warm.resume).toEqual({ kind: 'fresh' });
    expect(warm.warmBase).toMatchObject({ key: '3'.repeat(64), vmBytes: 3 * 2 ** 20 });
    expect(toBuildPlan(b, warm, false).notes).toEqual([
      expect.stringMatching(/^the warm base saved .* \(layer 333333333333, VM 3 MiB\) is restored instead of booting/),
    ]);
  });

  it('a layer saved with its VM: the resume restores it (cache.vm_state), and the plan says so', async () => {
    const b = buildOf();
    const keys = (await planBuild(b, { cacheDir: dir })).layers.map((l) => l.key!);
    const { cacheDir, store } = await storeWith([keys[0]]);
    const tmp = vmStateTemp(store.dir, keys[0]!);
    writeFileSync(tmp, 'a saved VM');
    await publishVmState(store.dir, tmp, {
      key: keys[0]!,
      qemuVersion: '7.2.0',
      shape: [],
      saveMs: 1,
      layerSha256: store.meta(keys[0]!)!.sha256,
    });
    const booted = await planBuild(b, { cacheDir, store });
    expect(booted.resume).toEqual({ kind: 'resume', at: 1, key: keys[0], source: 'local' });
    expect(toBuildPlan(b, booted, false).notes).toEqual([]);
    const restored = await planBuild(b, { cacheDir, store, vmState: true });
    expect(restored.resume).toEqual({ kind: 'resume', at: 1, key: keys[0], source: 'local', restoreVm: true });
    expect(toBuildPlan(b, restored, false).notes).toEqual([
      expect.stringMatching(/^the VM saved with cached layer 1 is restored instead of booting it \(cache.vm_state\)/),
    ]);
  });

  it('an uncached provisioner: no final disk, the chain stops there', async () => {
    const b = buildOf("[{ type: shell, inline: ['echo one'] }, { type: shell, inline: [date], cache: false }]");
    const plan = await planBuild(b, { cacheDir: dir });
    expect(plan.final).toBeUndefined();
    expect(plan.layers[1]).toMatchObject({ uncacheable: 'cache: false', local: false });
  });
});

describe('networkFileSystem', () => {
  it('names NFS and CIFS/SMB by statfs magic; a local file system or an error is undefined', () => {
    expect(networkFileSystem('/x', () => ({ type: 0x6969 }))).toBe('NFS');
    expect(networkFileSystem('/x', () => ({ type: 0xff534d42 }))).toBe('CIFS');
    expect(networkFileSystem('/x', () => ({ type: 0xfe534d42 }))).toBe('SMB2');
    expect(networkFileSystem('/x', () => ({ type: 0xef53 }))).toBeUndefined();
    expect(
      networkFileSystem('/x', () => {
        throw new Error('ENOENT');
      }),
    ).toBeUndefined();
    expect(networkFileSystem(dir)).toBeUndefined();
  });
});
