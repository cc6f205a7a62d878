/**
 * The shared layer cache's protocol over any object store, written so that it needs no conditional
 * write, no consistent listing and no trust in what another builder uploaded:
 *
 *   <prefix>/epoch.json                    {"epoch": N}: bumping it flushes the cache (every name changes)
 *   <prefix>/blobs/sha256/<d>              a layer's bytes, named by their sha256: immutable
 *   <prefix>/layers/<name>/<d>.json        one record per builder per layer: the blob's digest and size,
 *                                          its parent's DIGEST (null: it backs onto the base image), the
 *                                          base image's digest, kiln's version, who built it
 *
 * Two builders never make the same bytes for one key (qcow2 is not reproducible), so each writes its
 * own record beside the other's and nothing is overwritten. A record is written last, after its blob
 * was read back from the store and checked. Readers take the candidates in digest order (every reader
 * the same), verify each blob's digest as it streams down, and take a chain only when every record's
 * parent digest is the blob below it. A missing, truncated or altered blob is a miss with a warning.
 *
 * `<name>` is a keyed hash (HMAC-SHA256) of kiln's local key: a local key digests the provisioners'
 * resolved definitions, so one seen in a bucket listing could be used to test guesses at a sensitive
 * value; without the secret it cannot.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NotImplementedByStore, PreconditionFailed, type ObjectStore } from './object-store.js';
import type { FinalLayerRecord } from '../layers.js';
import { KilnError } from '../../util/errors.js';

export const REMOTE_SCHEMA = 1;

export type RemoteKind = 'layer' | 'final';

/** The `baseFormat` of a blob that backs onto nothing: an ISO build's final disk, flattened (`base` names the ISO). */
export const SELF_CONTAINED = 'none';

export interface RemoteRecord {
  schema: number;
  kind: RemoteKind;
  /** The blob: sha256 and size of its bytes. */
  digest: string;
  size: number;
  /** The digest of the blob this one backs onto; null when it backs onto the base image. */
  parent: string | null;
  /** The base image's sha256 (every layer of a chain names the same one). */
  base: string;
  /** The base's format, as the blob's backing file names it (base-<sha256>.<format>), or SELF_CONTAINED. */
  baseFormat: string;
  epoch: number;
  kiln: string;
  builder: string;
  created: string;
  /** A final disk: what the finishing steps recorded, so a build from it writes the same manifest. */
  final?: FinalLayerRecord;
  description?: string;
}

export interface RemoteLog {
  (message: string, level?: 'info' | 'warn' | 'debug'): void;
}

export interface RemoteCacheOptions {
  /** Nothing is uploaded (laptops, untrusted runners). */
  readonly?: boolean;
  /** Share intermediate layers too (whole disks before kiln's clean-up: what provisioners wrote is in them). */
  intermediate?: boolean;
  /** The secret names are keyed with (shared by every builder); without it names are a public function of the key. */
  secret?: string;
  kilnVersion: string;
  /** Who builds (records say so); default host name and pid. */
  builder?: string;
}

/** What a pulled chain's layers are: checked files, bottom first. */
export interface PulledLayer {
  record: RemoteRecord;
  file: string;
}

export type ConditionalCreate = 'supported' | 'ignored' | 'refused';

const hex64 = /^[0-9a-f]{64}$/;

/** Streams `src` to `file` (when given), hashing it; returns the digest and byte count. */
async function digestStream(
  src: Readable,
  file: string | undefined,
  signal?: AbortSignal,
): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  const sink = file
    ? createWriteStream(file, { mode: 0o600 })
    : new Writable({
        write(_c, _e, cb) {
          cb();
        },
      });
  await pipeline(src, tap, sink, { signal });
  return { digest: hash.digest('hex'), size };
}

async function readAll(src: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of src) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export class RemoteCache {
  readonly readonly: boolean;
  readonly sharesIntermediate: boolean;
  private epochValue?: number;
  private conditional?: ConditionalCreate;
  private readonly listed = new Map<string, Promise<RemoteRecord[]>>();
  /** Local keys whose every candidate failed its pull here: a builder then shares its own beside them. */
  private readonly unusable = new Set<string>();

  constructor(
    readonly store: ObjectStore,
    private readonly o: RemoteCacheOptions,
    private readonly log: RemoteLog = () => {},
  ) {
    this.readonly = o.readonly === true;
    this.sharesIntermediate = o.intermediate === true;
  }

  get location(): string {
    return this.store.location;
  }

  /** The same cache (store, epoch, listings) reporting through `log`: one per build, so warnings name their build. */
  withLog(log: RemoteLog): RemoteCache {
    return Object.assign(Object.create(this) as RemoteCache, { log });
  }

  /** Names are keyed with a secret the builders share (not a public function of the local key). */
  get keyed(): boolean {
    return Boolean(this.o.secret);
  }

  /** The cache epoch (epoch.json; 0 when there is none). */
  async epoch(signal?: AbortSignal): Promise<number> {
    if (this.epochValue !== undefined) return this.epochValue;
    const body = await this.store.get('epoch.json', signal);
    let epoch = 0;
    if (body) {
      const text = (await readAll(body)).toString('utf8');
      try {
        const n = (JSON.parse(text) as { epoch?: unknown }).epoch;
        if (typeof n === 'number' && Number.isInteger(n) && n >= 0) epoch = n;
        else throw new Error('no whole number "epoch"');
      } catch (e) {
        throw new KilnError(`${this.location}/epoch.json is not {"epoch": N}: ${(e as Error).message}`, {
          fix: `kiln cache flush --remote ${this.location} writes a new one`,
        });
      }
    }
    this.epochValue = epoch;
    return epoch;
  }

  /** Bumps the epoch: every builder stops seeing what was shared before (prune then removes it). */
  async flush(signal?: AbortSignal): Promise<number> {
    const next = (await this.epoch(signal)) + 1;
    await this.store.put('epoch.json', Buffer.from(JSON.stringify({ epoch: next }) + '\n'), { signal });
    this.epochValue = next;
    this.listed.clear();
    return next;
  }

  /** The store's name for a local key: keyed, so the listing reveals nothing about the inputs. */
  async nameOf(localKey: string, kind: RemoteKind, signal?: AbortSignal): Promise<string> {
    const epoch = await this.epoch(signal);
    return createHmac('sha256', `kiln-remote-cache:${this.o.secret ?? ''}`)
      .update(`${REMOTE_SCHEMA}:${epoch}:${kind}:${localKey}`)
      .digest('hex');
  }

  /** Usable records for a key, in the order every reader takes them (by blob digest). */
  async candidates(
    localKey: string,
    kind: RemoteKind,
    base: string | undefined,
    signal?: AbortSignal,
  ): Promise<RemoteRecord[]> {
    const name = await this.nameOf(localKey, kind, signal);
    let listing = this.listed.get(name);
    if (!listing) {
      listing = this.readRecords(name, signal);
      this.listed.set(name, listing);
      listing.catch(() => this.listed.delete(name));
    }
    const epoch = await this.epoch(signal);
    return (await listing).filter(
      (r) => r.kind === kind && r.epoch === epoch && (base === undefined || r.base === base),
    );
  }

  private async readRecords(name: string, signal?: AbortSignal): Promise<RemoteRecord[]> {
    const records: RemoteRecord[] = [];
    for (const obj of await this.store.list(`layers/${name}/`, signal)) {
      const m = /\/([0-9a-f]{64})\.json$/.exec(obj.key);
      if (!m) continue;
      const r = await this.readRecord(obj.key, m[1]!, signal);
      if (r) records.push(r);
    }
    return records.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  }

  private async readRecord(key: string, digest: string, signal?: AbortSignal): Promise<RemoteRecord | undefined> {
    const body = await this.store.get(key, signal);
    if (!body) return undefined;
    try {
      const r = JSON.parse((await readAll(body)).toString('utf8')) as RemoteRecord;
      // A record names its own blob: one that says otherwise is not used.
      if (
        r.schema !== REMOTE_SCHEMA ||
        r.digest !== digest ||
        !hex64.test(r.base) ||
        (r.parent !== null && !hex64.test(r.parent)) ||
        !(r.size >= 0)
      )
        throw new Error('fields do not match its name');
      return r;
    } catch (e) {
      this.log(`remote cache: ignoring record ${key}: ${(e as Error).message}`, 'warn');
      return undefined;
    }
  }

  /** Whether this builder should share its own copy: no record, or none whose blob it could pull intact. */
  async lacks(localKey: string, kind: RemoteKind, signal?: AbortSignal): Promise<boolean> {
    return this.unusable.has(localKey) || !(await this.has(localKey, kind, signal));
  }

  /** Whether a record for this key exists (the plan's question; the blob is checked only when pulled). */
  async has(localKey: string, kind: RemoteKind, signal?: AbortSignal): Promise<boolean> {
    try {
      return (await this.candidates(localKey, kind, undefined, signal)).length > 0;
    } catch (e) {
      signal?.throwIfAborted();
      this.log(`remote cache: cannot read ${this.location}: ${(e as Error).message}; building without it`, 'warn');
      return false;
    }
  }

  /**
   * Downloads a chain (bottom first: `keys[0]` backs onto the base) into files `fileFor(i)`, whole and
   * consistent: the top record is chosen in digest order, each record below must be the one its child
   * names by digest, and every blob's digest and size are checked as it streams. Returns undefined
   * (after a warning) on any miss; partial files are removed.
   */
  async pullChain(
    keys: { key: string; kind: RemoteKind }[],
    base: string,
    fileFor: (i: number) => string,
    signal?: AbortSignal,
  ): Promise<PulledLayer[] | undefined> {
    if (!keys.length) return [];
    const top = keys[keys.length - 1]!;
    let tops: RemoteRecord[];
    try {
      tops = await this.candidates(top.key, top.kind, base, signal);
    } catch (e) {
      signal?.throwIfAborted();
      this.log(`remote cache: cannot read ${this.location}: ${(e as Error).message}; building without it`, 'warn');
      return undefined;
    }
    for (const candidate of tops) {
      const chain = await this.chainBelow(keys, candidate, base, signal);
      if (!chain) continue;
      const pulled = await this.download(chain, fileFor, signal);
      if (pulled) return pulled;
    }
    if (!tops.length)
      this.log(`remote cache: no record for layer ${top.key.slice(0, 12)} in ${this.location}`, 'debug');
    else this.unusable.add(top.key);
    return undefined;
  }

  /** The records under `topRecord`, each the one its child names by digest; undefined when one is missing. */
  private async chainBelow(
    keys: { key: string; kind: RemoteKind }[],
    topRecord: RemoteRecord,
    base: string,
    signal?: AbortSignal,
  ): Promise<RemoteRecord[] | undefined> {
    const chain = [topRecord];
    for (let i = keys.length - 2; i >= 0; i--) {
      const want = chain[0]!.parent;
      if (!want) {
        this.log(
          `remote cache: record ${topRecord.digest.slice(0, 12)} backs onto the base, not a layer; not used`,
          'warn',
        );
        return undefined;
      }
      const name = await this.nameOf(keys[i]!.key, keys[i]!.kind, signal);
      const r = await this.readRecord(`layers/${name}/${want}.json`, want, signal);
      if (!r || r.base !== base) {
        this.log(
          `remote cache: layer ${want.slice(0, 12)}, which ${chain[0]!.digest.slice(0, 12)} was built on, has no record; that chain is not used`,
          'warn',
        );
        return undefined;
      }
      chain.unshift(r);
    }
    if (chain[0]!.parent !== null) {
      this.log(
        `remote cache: the chain's bottom ${chain[0]!.digest.slice(0, 12)} backs onto another layer; not used`,
        'warn',
      );
      return undefined;
    }
    return chain;
  }

  private async download(
    chain: RemoteRecord[],
    fileFor: (i: number) => string,
    signal?: AbortSignal,
  ): Promise<PulledLayer[] | undefined> {
    const files: string[] = [];
    try {
      for (const [i, r] of chain.entries()) {
        const file = fileFor(i);
        files.push(file);
        const body = await this.store.get(`blobs/sha256/${r.digest}`, signal);
        if (!body) {
          this.log(
            `remote cache: blob ${r.digest.slice(0, 12)} is missing from ${this.location} (its record is there); a miss`,
            'warn',
          );
          return this.drop(files);
        }
        const got = await digestStream(body, file, signal);
        if (got.digest !== r.digest || got.size !== r.size) {
          this.log(
            `remote cache: blob ${r.digest.slice(0, 12)} in ${this.location} is damaged (got ${got.size} bytes, sha256 ${got.digest.slice(0, 12)}, recorded ${r.size}); not used, a miss`,
            'warn',
          );
          return this.drop(files);
        }
      }
      return chain.map((record, i) => ({ record, file: files[i]! }));
    } catch (e) {
      this.drop(files);
      signal?.throwIfAborted();
      this.log(`remote cache: downloading from ${this.location} failed: ${(e as Error).message}; a miss`, 'warn');
      return undefined;
    }
  }

  private drop(files: string[]): undefined {
    for (const f of files) rmSync(f, { force: true });
    return undefined;
  }

  /**
   * Whether the store honours "create only if absent" (If-None-Match: *): two writes of one probe
   * object; 412 on the second is support, a second 200 means the condition was ignored, 501 refused.
   */
  async probeConditionalCreate(signal?: AbortSignal): Promise<ConditionalCreate> {
    if (this.conditional) return this.conditional;
    const key = `probe/${randomBytes(8).toString('hex')}`;
    let answer: ConditionalCreate;
    try {
      await this.store.put(key, Buffer.from('1'), { ifNoneMatch: true, signal });
      await this.store.put(key, Buffer.from('2'), { ifNoneMatch: true, signal });
      answer = 'ignored';
    } catch (e) {
      if (e instanceof PreconditionFailed) answer = 'supported';
      else if (e instanceof NotImplementedByStore) answer = 'refused';
      else throw e;
    } finally {
      await this.store.delete(key, signal).catch(() => undefined);
    }
    this.conditional = answer;
    return answer;
  }

  /**
   * Shares `file` as layer `localKey`: the blob goes up (unless that digest is there already), is read
   * back and checked, and only then is this builder's record written. Returns the record; throws when
   * the blob did not arrive intact (no record is written then). `signal` aborts a multipart upload.
   */
  async push(
    localKey: string,
    kind: RemoteKind,
    file: string,
    meta: Pick<RemoteRecord, 'parent' | 'base' | 'baseFormat' | 'final' | 'description'>,
    signal?: AbortSignal,
  ): Promise<RemoteRecord> {
    if (this.readonly) throw new Error('the remote cache is read-only here (--cache-remote-readonly)');
    const { digest, size } = await digestStream(createReadStream(file), undefined, signal);
    if (statSync(file).size !== size) throw new Error(`${file} changed while it was read`);
    const blobKey = `blobs/sha256/${digest}`;
    const existing = (await this.store.list(blobKey, signal)).find((o) => o.key === blobKey);
    if (!existing || existing.size !== size) await this.store.put(blobKey, createReadStream(file), { size, signal });
    // Read back: what the store serves is what a reader will get.
    const back = await this.store.get(blobKey, signal);
    const got = back ? await digestStream(back, undefined, signal) : undefined;
    if (!got || got.digest !== digest || got.size !== size) {
      throw new Error(
        `the blob read back from ${this.location}/${blobKey} ${got ? `is ${got.size} bytes with sha256 ${got.digest.slice(0, 12)}` : 'is missing'}, not what was sent; no record written`,
      );
    }
    const record: RemoteRecord = {
      schema: REMOTE_SCHEMA,
      kind,
      digest,
      size,
      ...meta,
      epoch: await this.epoch(signal),
      kiln: this.o.kilnVersion,
      builder: this.o.builder ?? `${hostname()}:${process.pid}`,
      created: new Date().toISOString(),
    };
    const name = await this.nameOf(localKey, kind, signal);
    const body = Buffer.from(JSON.stringify(record, null, 2) + '\n');
    // One record per builder per blob: an existing one (412) is this same record. The condition only
    // saves a rewrite where the store honours it; nothing depends on it.
    const conditional = (await this.probeConditionalCreate(signal).catch(() => 'refused' as const)) === 'supported';
    try {
      await this.store.put(`layers/${name}/${digest}.json`, body, { ifNoneMatch: conditional, signal });
    } catch (e) {
      if (!(e instanceof PreconditionFailed)) throw e;
    }
    this.listed.delete(name);
    return record;
  }

  /**
   * Removes records first (another epoch's, those older than `olderThanMs`, those whose blob is gone),
   * then blobs no remaining record names, and multipart uploads left unfinished; blobs and uploads
   * younger than `graceMs` stay (a builder may be between its blob and its record).
   */
  async prune(o: {
    olderThanMs?: number;
    graceMs: number;
    now?: Date;
    signal?: AbortSignal;
  }): Promise<{ records: number; blobs: number; bytes: number; uploads: number }> {
    const now = (o.now ?? new Date()).getTime();
    const epoch = await this.epoch(o.signal);
    const blobs = await this.store.list('blobs/sha256/', o.signal);
    const blobNames = new Set(blobs.map((b) => b.key.slice('blobs/sha256/'.length)));
    const kept = new Set<string>();
    let records = 0;
    for (const obj of await this.store.list('layers/', o.signal)) {
      const m = /\/([0-9a-f]{64})\.json$/.exec(obj.key);
      const r = m ? await this.readRecord(obj.key, m[1]!, o.signal) : undefined;
      const old = o.olderThanMs !== undefined && now - obj.modified.getTime() > o.olderThanMs;
      // A record whose blob is gone is removed once past the grace period (a listing may lag behind).
      const dangling = r !== undefined && !blobNames.has(r.digest) && now - obj.modified.getTime() >= o.graceMs;
      if (!r || r.epoch !== epoch || old || dangling) {
        await this.store.delete(obj.key, o.signal);
        records++;
        continue;
      }
      kept.add(r.digest);
      if (r.parent) kept.add(r.parent);
    }
    let removed = 0;
    let bytes = 0;
    for (const b of blobs) {
      const d = b.key.slice('blobs/sha256/'.length);
      if (kept.has(d) || now - b.modified.getTime() < o.graceMs) continue;
      await this.store.delete(b.key, o.signal);
      removed++;
      bytes += b.size;
    }
    let uploads = 0;
    for (const u of (await this.store.pendingUploads?.('', o.signal)) ?? []) {
      if (u.started && now - u.started.getTime() < o.graceMs) continue;
      await this.store.abortUpload?.(u.key, u.uploadId, o.signal);
      uploads++;
    }
    this.listed.clear();
    return { records, blobs: removed, bytes, uploads };
  }
}
