// The layer-cache step with a remote cache (an in-memory store, a fake driver, a real local store):
// a final disk only the remote holds is pulled, published on the base and converted from (no guest
// step); a chain of shared layers is pulled whole and resumed on; a damaged final blob falls back to
// the shared layers; a template with sensitive values and no shared secret leaves the remote alone;
// intermediate layers are not pulled unless asked; the build's own final disk is shared after it is saved.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layerCacheStep } from '../../../../src/build/steps/layer-cache.js';
import { convertsFromCache } from '../../../../src/build/state.js';
import { RemoteCache } from '../../../../src/cache/remote/protocol.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeStore } from '../../../helpers/fake-object-store.js';

afterAll(removeStepDirs);

const provisioners = [
  { type: 'shell', inline: ['echo one'] },
  { type: 'shell', inline: ['echo two'] },
];
const sha = 'b'.repeat(64);

function harness(remote: RemoteCache, o: { source?: Record<string, unknown>; build?: Record<string, unknown> } = {}) {
  const h = stepContext({
    options: { noCache: false, remoteCache: remote },
    build: { provisioners, ...o.build },
    source: { communicator: { username: 'root', private_key_file: __filename }, ...o.source },
  });
  h.ctx.state.base = {
    path: h.ctx.build.source.base_image!,
    format: 'qcow2',
    sha256: sha,
    source: 'base',
    kind: 'disk',
  };
  return h;
}

/** The keys this build would use (a plan against an empty cache, no remote). */
async function keysOf(): Promise<{ layers: string[]; finalKey: string }> {
  const h = harness(new RemoteCache(new FakeStore(), { kilnVersion: 't' }));
  h.ctx.options.remoteCache = undefined;
  const { cleanup } = await runStep(layerCacheStep, h.ctx);
  await cleanup?.();
  return { layers: h.ctx.state.plan!.layers.map((l) => l.key!), finalKey: h.ctx.state.plan!.final!.key };
}

function blob(h: ReturnType<typeof harness>, name: string, content: string): string {
  const f = path.join(h.dir, name);
  writeFileSync(f, content);
  return f;
}

describe('check layer cache with a remote cache', () => {
  it('a final disk only the remote holds: pulled (digest-checked), published on the base, converted from; no guest step', async () => {
    const store = new FakeStore();
    const { finalKey } = await keysOf();
    const remote = new RemoteCache(store, { kilnVersion: 't', builder: 'other' });
    const h = harness(remote);
    await remote.push(finalKey, 'final', blob(h, 'final', 'a final disk'), {
      parent: null,
      base: sha,
      baseFormat: 'qcow2',
      final: { accelerator: 'kvm' },
    });
    const { error, cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.ctx.state.plan!.resume).toMatchObject({ kind: 'fromFinalLayer', source: 'remote' });
    expect(convertsFromCache(h.ctx)).toBe(true);
    const local = h.ctx.state.layers!.store.meta(finalKey)!;
    expect(local).toMatchObject({ parent: null, backing: `base-${sha}.qcow2`, final: { accelerator: 'kvm' } });
    expect(h.driver.callsTo('rebaseUnsafe')[0]![1]).toEqual({ name: `base-${sha}.qcow2`, format: 'qcow2' });
    expect(h.said().some((m) => m.startsWith(`remote cache: pulled the final disk ${finalKey.slice(0, 12)}`))).toBe(
      true,
    );
    await cleanup!();
  });

  it('shared layers, asked for: the chain pulled whole and resumed on; not asked: fresh', async () => {
    const store = new FakeStore();
    const { layers } = await keysOf();
    const writer = new RemoteCache(store, { kilnVersion: 't', builder: 'other', intermediate: true });
    const h0 = harness(writer);
    const r1 = await writer.push(layers[0]!, 'layer', blob(h0, 'l1', 'layer one'), {
      parent: null,
      base: sha,
      baseFormat: 'qcow2',
    });
    await writer.push(layers[1]!, 'layer', blob(h0, 'l2', 'layer two'), {
      parent: r1.digest,
      base: sha,
      baseFormat: 'qcow2',
    });

    const plain = harness(new RemoteCache(store, { kilnVersion: 't' }));
    await (
      await runStep(layerCacheStep, plain.ctx)
    ).cleanup!();
    expect(plain.ctx.state.plan!.resume).toEqual({ kind: 'fresh' });

    const h = harness(new RemoteCache(store, { kilnVersion: 't', intermediate: true }));
    const { error, cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.ctx.state.plan!.resume).toMatchObject({ kind: 'resume', at: 2, source: 'remote' });
    expect(h.ctx.state.layers!.cachedCount).toBe(2);
    const s = h.ctx.state.layers!.store;
    expect(s.meta(layers[0]!)).toMatchObject({ parent: null, backing: `base-${sha}.qcow2` });
    expect(s.meta(layers[1]!)).toMatchObject({ parent: layers[0], backing: `${layers[0]}.qcow2` });
    expect(convertsFromCache(h.ctx)).toBe(false);
    await cleanup!();

    // A guest that only a key kiln generated logs into: its layers are neither pulled nor shared.
    const generated = harness(new RemoteCache(store, { kilnVersion: 't', intermediate: true }), {
      source: { communicator: { username: 'root', password: 'x' } },
    });
    await (
      await runStep(layerCacheStep, generated.ctx)
    ).cleanup!();
    expect(generated.ctx.state.plan!.resume).toEqual({ kind: 'fresh' });
  });

  it('a damaged final blob: a miss with a warning, then the shared layers serve', async () => {
    const store = new FakeStore();
    const { layers, finalKey } = await keysOf();
    const writer = new RemoteCache(store, { kilnVersion: 't', builder: 'other' });
    const h0 = harness(writer);
    const f = await writer.push(finalKey, 'final', blob(h0, 'f', 'final'), {
      parent: null,
      base: sha,
      baseFormat: 'qcow2',
    });
    const r1 = await writer.push(layers[0]!, 'layer', blob(h0, 'l1', 'layer one'), {
      parent: null,
      base: sha,
      baseFormat: 'qcow2',
    });
    store.objects.get(`blobs/sha256/${f.digest}`)!.body = Buffer.from('fin4l');
    void r1;
    const h = harness(new RemoteCache(store, { kilnVersion: 't', intermediate: true }));
    const { cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(h.said('warn').join('\n')).toMatch(/blob [0-9a-f]{12} in s3:\/\/fake\/cache is damaged/);
    expect(h.ctx.state.plan!.resume).toMatchObject({ kind: 'resume', at: 1, source: 'remote' });
    await cleanup!();
  });

  it('sensitive values without a shared secret: the remote cache is not used, and the build says why', async () => {
    const store = new FakeStore();
    const h = harness(new RemoteCache(store, { kilnVersion: 't' }));
    h.ctx.template.variables.sensitive.add('password');
    await (
      await runStep(layerCacheStep, h.ctx)
    ).cleanup!();
    expect(h.said('warn').join('\n')).toMatch(
      /remote cache: not used for this build: its template has sensitive values.*\n {2}fix: .*--cache-remote-secret-file/s,
    );
    expect(store.puts).toEqual([]);
  });
});
