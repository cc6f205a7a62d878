// The remote layer cache's protocol (src/cache/remote/protocol.ts) against an in-memory object store
// that misbehaves the ways real ones do: it ignores "create only if absent" (s3rver), refuses it with
// 501 (Swift's s3api) or honours it with 412 (AWS, MinIO), lists new objects late, and loses or
// truncates blobs. Whatever it does, a reader never uses a blob whose digest is not its record's, a
// record is written only after its blob was read back intact, and every reader picks the same candidate.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteCache, type RemoteRecord } from '../../../../src/cache/remote/protocol.js';
import { FakeStore } from '../../../helpers/fake-object-store.js';
import { parseRemoteUrl } from '../../../../src/cache/remote/s3.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-remote-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function layerFile(content: string): string {
  const f = path.join(dir, `layer-${n++}`);
  writeFileSync(f, content);
  return f;
}
const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const base = 'b'.repeat(64);
const meta = (parent: string | null = null) => ({ parent, base, baseFormat: 'qcow2' });
const key1 = '1'.repeat(64);
const key2 = '2'.repeat(64);
const key3 = '3'.repeat(64);

function cache(store: FakeStore, o: Partial<ConstructorParameters<typeof RemoteCache>[1]> = {}) {
  const logs: string[] = [];
  const c = new RemoteCache(store, { kilnVersion: '0.0.0-test', builder: 'unit', ...o }, (m, level) =>
    logs.push(`${level ?? 'info'}: ${m}`),
  );
  return { c, logs };
}
const fileFor = (tag: string) => (i: number) => path.join(dir, `pulled-${tag}-${i}-${n++}`);

describe('remote cache protocol', () => {
  for (const conditions of ['ignore', '412', '501'] as const) {
    it(`a store that ${conditions === 'ignore' ? 'ignores conditions' : `answers ${conditions}`}: the blob, read back, then the record; a reader gets the same bytes`, async () => {
      const store = new FakeStore(conditions);
      const { c } = cache(store);
      expect(await c.probeConditionalCreate()).toBe(
        conditions === 'ignore' ? 'ignored' : conditions === '412' ? 'supported' : 'refused',
      );
      expect(store.keys('probe/')).toEqual([]);
      const file = layerFile('final disk A');
      const record = await c.push(key1, 'final', file, meta());
      expect(record).toMatchObject({
        digest: sha('final disk A'),
        size: 12,
        parent: null,
        base,
        kind: 'final',
        builder: 'unit',
        epoch: 0,
      });
      const name = await c.nameOf(key1, 'final');
      // The record is the last thing written, after the blob.
      expect(store.puts.filter((k) => !k.startsWith('probe/'))).toEqual([
        `blobs/sha256/${record.digest}`,
        `layers/${name}/${record.digest}.json`,
      ]);
      // Pushing the same layer again (a retried task): one record still, whatever the store does with the condition.
      await c.push(key1, 'final', file, meta());
      expect(store.keys('layers/')).toEqual([`layers/${name}/${record.digest}.json`]);

      const reader = cache(store).c;
      expect(await reader.has(key1, 'final')).toBe(true);
      const pulled = await reader.pullChain([{ key: key1, kind: 'final' }], base, fileFor('same'));
      expect(pulled).toHaveLength(1);
      expect(readFileSync(pulled![0]!.file, 'utf8')).toBe('final disk A');
    });
  }

  it('names are keyed hashes: not the local key, different with another secret or epoch, and a flush hides what was shared', async () => {
    const store = new FakeStore();
    const plain = cache(store).c;
    const keyed = cache(store, { secret: 'shared secret' }).c;
    const name = await plain.nameOf(key1, 'final');
    expect(name).toMatch(/^[0-9a-f]{64}$/);
    expect(name).not.toBe(key1);
    expect(await keyed.nameOf(key1, 'final')).not.toBe(name);
    expect(await plain.nameOf(key1, 'layer')).not.toBe(name);
    expect(keyed.keyed).toBe(true);
    expect(plain.keyed).toBe(false);
    await keyed.push(key1, 'final', layerFile('poisoned'), meta());
    expect(await keyed.has(key1, 'final')).toBe(true);
    expect(await plain.has(key1, 'final')).toBe(false);
    expect(await keyed.flush()).toBe(1);
    expect(JSON.parse(store.objects.get('epoch.json')!.body.toString())).toEqual({ epoch: 1 });
    expect(await keyed.has(key1, 'final')).toBe(false);
    const fresh = cache(store, { secret: 'shared secret' }).c;
    expect(await fresh.epoch()).toBe(1);
    expect(await fresh.has(key1, 'final')).toBe(false);
  });

  it('two builders, different bytes for one key: two records, and every reader takes the same one', async () => {
    const store = new FakeStore();
    const a = cache(store, { builder: 'a' }).c;
    const b = cache(store, { builder: 'b' }).c;
    const ra = await a.push(key1, 'final', layerFile('built on host a'), meta());
    const rb = await b.push(key1, 'final', layerFile('built on host b'), meta());
    expect(store.keys('layers/')).toHaveLength(2);
    const first = [ra, rb].sort((x, y) => x.digest.localeCompare(y.digest))[0]!;
    for (const reader of [cache(store).c, cache(store).c, a, b]) {
      const pulled = await reader.pullChain([{ key: key1, kind: 'final' }], base, fileFor('pick'));
      expect(pulled![0]!.record.digest).toBe(first.digest);
    }
  });

  it('a listing that lags: a miss (no error) until the record shows, then a hit', async () => {
    const store = new FakeStore();
    const { c } = cache(store);
    await c.push(key1, 'final', layerFile('late'), meta());
    store.listLag = 1;
    const reader = cache(store).c;
    expect(await reader.has(key1, 'final')).toBe(false);
    const later = cache(store).c;
    expect(await later.has(key1, 'final')).toBe(true);
  });

  it('a lost blob: its record is there, the pull is a miss with a warning, nothing is left on disk', async () => {
    const store = new FakeStore();
    const r = await cache(store).c.push(key1, 'final', layerFile('lost'), meta());
    store.objects.delete(`blobs/sha256/${r.digest}`);
    const { c, logs } = cache(store);
    const files: string[] = [];
    expect(
      await c.pullChain([{ key: key1, kind: 'final' }], base, (i) => {
        const f = fileFor('lost')(i);
        files.push(f);
        return f;
      }),
    ).toBeUndefined();
    expect(logs.join('\n')).toMatch(/warn: remote cache: blob [0-9a-f]{12} is missing .*a miss/);
    expect(files.filter((f) => existsSync(f))).toEqual([]);
  });

  it("a truncated or altered blob is never used: a miss with a warning, or the next candidate when another builder's is whole", async () => {
    const store = new FakeStore();
    const r1 = await cache(store, { builder: 'a' }).c.push(key1, 'final', layerFile('builder a bytes'), meta());
    const r2 = await cache(store, { builder: 'b' }).c.push(key1, 'final', layerFile('builder b bytes'), meta());
    const [first, second] = [r1, r2].sort((x, y) => x.digest.localeCompare(y.digest));
    const blob = store.objects.get(`blobs/sha256/${first!.digest}`)!;
    blob.body = blob.body.subarray(0, 5);
    const { c, logs } = cache(store);
    const pulled = await c.pullChain([{ key: key1, kind: 'final' }], base, fileFor('trunc'));
    expect(pulled![0]!.record.digest).toBe(second!.digest);
    expect(logs.join('\n')).toContain(`blob ${first!.digest.slice(0, 12)} in s3://fake/cache is damaged (got 5 bytes`);
    // Same size, other bytes (overwritten in the bucket): caught by the digest.
    store.objects.get(`blobs/sha256/${second!.digest}`)!.body = Buffer.from('builder X bytes');
    const again = cache(store);
    expect(await again.c.pullChain([{ key: key1, kind: 'final' }], base, fileFor('trunc2'))).toBeUndefined();
    expect(again.logs.filter((l) => l.startsWith('warn:') && l.includes('is damaged'))).toHaveLength(2);
    // Records exist, but none this builder could use: it shares its own beside them.
    expect(await again.c.has(key1, 'final')).toBe(true);
    expect(await again.c.lacks(key1, 'final')).toBe(true);
    expect(await cache(store).c.lacks(key1, 'final')).toBe(false);
  });

  it('a blob the store damages on write: read back, found wrong, no record written', async () => {
    const store = new FakeStore();
    store.corruptOnWrite = /^blobs\//;
    const { c } = cache(store);
    await expect(c.push(key1, 'final', layerFile('will be damaged'), meta())).rejects.toThrow(
      /read back .* not what was sent; no record written/,
    );
    expect(store.keys('layers/')).toEqual([]);
  });

  it('a chain is pulled whole and consistent by digest: each record below is the one its child names', async () => {
    const store = new FakeStore();
    const a = cache(store, { builder: 'a' }).c;
    const b = cache(store, { builder: 'b' }).c;
    // Each builder's chain: its layer 2 names its own layer 1 by digest.
    const a1 = await a.push(key1, 'layer', layerFile('a1'), meta());
    const a2 = await a.push(key2, 'layer', layerFile('a2'), meta(a1.digest));
    const b1 = await b.push(key1, 'layer', layerFile('b1'), meta());
    const b2 = await b.push(key2, 'layer', layerFile('b2'), meta(b1.digest));
    const keys = [
      { key: key1, kind: 'layer' as const },
      { key: key2, kind: 'layer' as const },
    ];
    const pulled = await cache(store).c.pullChain(keys, base, fileFor('chain'));
    expect(pulled).toHaveLength(2);
    const top = pulled![1]!.record;
    expect(pulled![0]!.record.digest).toBe(top.parent);
    expect([a2.digest, b2.digest]).toContain(top.digest);
    expect(readFileSync(pulled![0]!.file, 'utf8')).toBe(top.digest === a2.digest ? 'a1' : 'b1');
    // The parent's record gone: that chain is not used, the other builder's is.
    const loser = top.digest === a2.digest ? a1 : b1;
    const winnerName = await a.nameOf(key1, 'layer');
    store.objects.delete(`layers/${winnerName}/${loser.digest}.json`);
    const { c, logs } = cache(store);
    const other = await c.pullChain(keys, base, fileFor('chain2'));
    expect(other![0]!.record.digest).not.toBe(loser.digest);
    expect(other![1]!.record.parent).toBe(other![0]!.record.digest);
    expect(logs.join('\n')).toMatch(/has no record; that chain is not used/);
    // A layer on another base is not a candidate.
    expect(await cache(store).c.pullChain(keys, 'c'.repeat(64), fileFor('otherbase'))).toBeUndefined();
    void key3;
  });

  it('read-only: push refuses and nothing reaches the store', async () => {
    const store = new FakeStore();
    const { c } = cache(store, { readonly: true });
    await expect(c.push(key1, 'final', layerFile('x'), meta())).rejects.toThrow(/read-only/);
    expect(store.puts).toEqual([]);
  });

  it('a record that does not name its own blob, or is not JSON, is ignored with a warning', async () => {
    const store = new FakeStore();
    const r = await cache(store).c.push(key1, 'final', layerFile('real'), meta());
    const name = await cache(store).c.nameOf(key1, 'final');
    const liar: RemoteRecord = { ...r, digest: 'f'.repeat(64) };
    await store.put(`layers/${name}/${'e'.repeat(64)}.json`, Buffer.from(JSON.stringify(liar)));
    await store.put(`layers/${name}/${'d'.repeat(64)}.json`, Buffer.from('{not json'));
    const { c, logs } = cache(store);
    expect((await c.candidates(key1, 'final', base)).map((x) => x.digest)).toEqual([r.digest]);
    expect(logs.filter((l) => l.includes('ignoring record'))).toHaveLength(2);
  });

  it("prune: records first (another epoch's, too old, blob gone), then blobs nothing names, young ones kept", async () => {
    const store = new FakeStore();
    const { c } = cache(store);
    const old = await c.push(key1, 'final', layerFile('old epoch'), meta());
    await c.flush();
    const kept = await c.push(key2, 'final', layerFile('current'), meta());
    const gone = await c.push(key3, 'final', layerFile('blob lost'), meta());
    store.objects.delete(`blobs/sha256/${gone.digest}`);
    store.age(2 * 3600_000);
    // A blob uploaded just now whose record is not written yet (a builder between the two).
    await store.put(`blobs/sha256/${'a'.repeat(64)}`, Buffer.from('in flight'));
    const result = await c.prune({ graceMs: 3600_000 });
    expect(result).toMatchObject({ records: 2, blobs: 1 });
    expect(store.keys('blobs/').sort()).toEqual(
      [`blobs/sha256/${'a'.repeat(64)}`, `blobs/sha256/${kept.digest}`].sort(),
    );
    expect(store.keys('layers/')).toEqual([`layers/${await c.nameOf(key2, 'final')}/${kept.digest}.json`]);
    void old;
    // --older-than: the remaining record goes too, then its blob.
    const all = await c.prune({ graceMs: 0, olderThanMs: 60_000 });
    expect(all.records).toBe(1);
    expect(store.keys('layers/')).toEqual([]);
    expect(store.keys('blobs/')).toEqual([]);
  });

  it('s3:// URLs: bucket and prefix, and a bad one names the flag and the form', () => {
    expect(parseRemoteUrl('s3://builds/kiln/cache/')).toEqual({ bucket: 'builds', prefix: 'kiln/cache/' });
    expect(parseRemoteUrl('s3://builds')).toEqual({ bucket: 'builds', prefix: '' });
    expect(() => parseRemoteUrl('https://builds/x')).toThrow(
      /--cache-remote: "https:\/\/builds\/x" is not s3:\/\/BUCKET\[\/PREFIX\]\n {2}fix: /,
    );
  });
});
