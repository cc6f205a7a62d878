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
import { KilnError } from '../util/errors.js';

export interface RecordedResponse {
  url: string;
  status: number;
  /** Lower-case names; only those a client needs (type, dates, validators). */
  headers: Record<string, string>;
  sha256: string;
  size: number;
}

export interface RecordingIndex {
  version: 1;
  responses: RecordedResponse[];
}

/** Headers kept from the upstream answer; hop-by-hop and length headers are kiln's own on replay. */
export const keptHeaders = [
  'content-type',
  'last-modified',
  'etag',
  'content-encoding',
  'cache-control',
  'expires',
  'location',
];

/** A recorded body's name: its SHA-256 in hex, nothing else (never a path). */
export const SHA256_HEX = /^[0-9a-f]{64}$/;
/** An HTTP header name (RFC 9110 token) and a value with no control characters (no CR LF: no response splitting). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const HEADER_VALUE = /^[^\u0000-\u0008\u000a-\u001f\u007f]*$/;

export class IndexError extends KilnError {}

/**
 * Checks an index.json read from disk or from a bundle before anything is served from it: each entry's
 * URL, status (100-999, what Node can answer with), headers (kept names, no CR LF or control
 * characters) and sha256 (64 hex digits: a blob's name, never a path). `where` names the file in errors.
 */
export function validateIndex(parsed: unknown, where: string): RecordingIndex {
  const bad = (what: string) =>
    new IndexError(`${where}: ${what}`, {
      fix: `the recording is damaged or was altered; record the build again (kiln build --record) and write the bundle again`,
    });
  if (
    !parsed ||
    typeof parsed !== 'object' ||
    (parsed as RecordingIndex).version !== 1 ||
    !Array.isArray((parsed as RecordingIndex).responses)
  ) {
    throw bad('not a version 1 index of recorded responses ({"version": 1, "responses": [...]})');
  }
  const responses = (parsed as RecordingIndex).responses as unknown[];
  const seen = new Set<string>();
  responses.forEach((r, i) => {
    const e = r as Partial<RecordedResponse> | null;
    const name = `responses[${i}]${e && typeof e.url === 'string' ? ` (${JSON.stringify(e.url.slice(0, 200))})` : ''}`;
    if (!e || typeof e !== 'object') throw bad(`${name} is not an object`);
    if (typeof e.url !== 'string' || !/^http:\/\/[^\s\u0000-\u001f\u007f]+$/i.test(e.url))
      throw bad(`${name}: url must be an absolute http:// URL without spaces or control characters`);
    if (seen.has(e.url)) throw bad(`${name}: the URL is listed twice`);
    seen.add(e.url);
    if (!Number.isInteger(e.status) || (e.status as number) < 100 || (e.status as number) > 999)
      throw bad(`${name}: status ${JSON.stringify(e.status)} is not an HTTP status (an integer 100-999)`);
    if (typeof e.sha256 !== 'string' || !SHA256_HEX.test(e.sha256))
      throw bad(
        `${name}: sha256 ${JSON.stringify(e.sha256)} is not 64 lower-case hex digits (a recorded body is named by its digest, never by a path)`,
      );
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0)
      throw bad(`${name}: size ${JSON.stringify(e.size)} is not a byte count`);
    if (!e.headers || typeof e.headers !== 'object' || Array.isArray(e.headers))
      throw bad(`${name}: headers must be an object of strings`);
    for (const [k, v] of Object.entries(e.headers)) {
      if (!HEADER_NAME.test(k) || !keptHeaders.includes(k))
        throw bad(`${name}: header ${JSON.stringify(k)} is not one kiln records (${keptHeaders.join(', ')})`);
      if (typeof v !== 'string' || !HEADER_VALUE.test(v))
        throw bad(
          `${name}: header ${k}'s value ${JSON.stringify(v).slice(0, 200)} is not a string free of control characters (CR LF would split the response)`,
        );
    }
  });
  return parsed as RecordingIndex;
}

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
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(index, 'utf8'));
      } catch (e) {
        throw new IndexError(`${index}: not JSON (${(e as Error).message})`, {
          fix: `the recording is damaged; record the build again (kiln build --record)`,
        });
      }
      for (const r of validateIndex(parsed, index).responses) this.byUrl.set(r.url, r);
    }
  }

  static indexFile(dir: string): string {
    return path.join(dir, 'index.json');
  }
  blobPath(sha256: string): string {
    // Validated at load; checked again here so no caller can turn a digest into a path outside blobs/.
    if (!SHA256_HEX.test(sha256))
      throw new IndexError(`"${sha256.slice(0, 80)}" is not a sha256 digest: refusing to read it as a recorded body`);
    return path.join(this.blobsDir, sha256);
  }
  get size(): number {
    return this.byUrl.size;
  }
  lookup(url: string): RecordedResponse | undefined {
    return this.byUrl.get(url);
  }
  responses(): RecordedResponse[] {
    return [...this.byUrl.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
  }

  /** Streams a body into the store (hashing as it goes); a partial body never lands (temp file + rename). */
  async add(
    url: string,
    status: number,
    headers: Record<string, string>,
    body: Readable,
    tee?: (chunk: Buffer) => void,
  ): Promise<RecordedResponse> {
    mkdirSync(this.blobsDir, { recursive: true });
    const tmp = path.join(this.blobsDir, `.partial-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        size += chunk.length;
        tee?.(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp));
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
    const sha256 = hash.digest('hex');
    const blob = this.blobPath(sha256);
    if (existsSync(blob)) rmSync(tmp);
    else renameSync(tmp, blob);
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
