/**
 * The recorded package set: every response the guest fetched through kiln's proxy while recording,
 * its body kept once by SHA-256 (blobs/<hex>) and its URL, status and the headers that matter in
 * index.json. Replay answers from it; `kiln bundle` carries it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';

export interface RecordedResponse {
  url: string;
  status: number;
  /** Lower-case names; only those a client needs (type, dates, validators). */
  headers: Record<string, string>;
  sha256: string;
  size: number;
}

export interface RecordingIndex { version: 1; responses: RecordedResponse[] }

/** Headers kept from the upstream answer; hop-by-hop and length headers are kiln's own on replay. */
export const keptHeaders = ['content-type', 'last-modified', 'etag', 'content-encoding', 'cache-control', 'expires', 'location'];

export class PackageStore {
  readonly dir: string;
  private blobsDir: string;
  private byUrl = new Map<string, RecordedResponse>();

  /** `blobsDir`: where the bodies are (an unpacked bundle keeps them with its other blobs). */
  constructor(dir: string, blobsDir = path.join(dir, 'blobs')) {
    this.dir = dir;
    this.blobsDir = blobsDir;
    const index = path.join(dir, 'index.json');
    if (existsSync(index)) {
      const parsed = JSON.parse(readFileSync(index, 'utf8')) as RecordingIndex;
      for (const r of parsed.responses) this.byUrl.set(r.url, r);
    }
  }

  static indexFile(dir: string): string { return path.join(dir, 'index.json'); }
  blobPath(sha256: string): string { return path.join(this.blobsDir, sha256); }
  get size(): number { return this.byUrl.size; }
  lookup(url: string): RecordedResponse | undefined { return this.byUrl.get(url); }
  responses(): RecordedResponse[] { return [...this.byUrl.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0)); }

  /** Streams a body into the store (hashing as it goes); a partial body never lands (temp file + rename). */
  async add(url: string, status: number, headers: Record<string, string>, body: Readable, tee?: (chunk: Buffer) => void): Promise<RecordedResponse> {
    mkdirSync(this.blobsDir, { recursive: true });
    const tmp = path.join(this.blobsDir, `.partial-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) { hash.update(chunk); size += chunk.length; tee?.(chunk); done(null, chunk); },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp));
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
    const sha256 = hash.digest('hex');
    const blob = this.blobPath(sha256);
    if (existsSync(blob)) rmSync(tmp); else renameSync(tmp, blob);
    const record: RecordedResponse = { url, status, headers, sha256, size };
    this.byUrl.set(url, record);
    return record;
  }

  /** Writes index.json (sorted by URL, so the same recording gives the same bytes). */
  save(): void {
    mkdirSync(this.dir, { recursive: true });
    const index: RecordingIndex = { version: 1, responses: this.responses() };
    const file = PackageStore.indexFile(this.dir);
    writeFileSync(`${file}.tmp`, JSON.stringify(index, null, 1) + '\n');
    renameSync(`${file}.tmp`, file);
  }
}

/** Where `kiln build --record` keeps a template's recording, and where `kiln bundle` looks for it. */
export function recordingDirFor(cacheDir: string, templateFile: string): string {
  const id = createHash('sha256').update(path.resolve(templateFile)).digest('hex').slice(0, 16);
  return path.join(cacheDir, 'airgap', 'recordings', `${path.basename(templateFile).replace(/[^\w.-]/g, '_')}-${id}`);
}
