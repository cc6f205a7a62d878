/** Streaming digests (never a whole file in memory) with a stat-keyed memo for large local images. */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export async function fileDigest(
  file: string,
  algorithm: 'sha256' | 'sha512' | 'md5' | 'sha1' = 'sha256',
): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Several digests of one file in a single streamed read. */
export async function fileDigests<A extends 'sha256' | 'sha512' | 'sha1'>(
  file: string,
  algorithms: readonly A[],
): Promise<Record<A, string>> {
  const hashes = algorithms.map((a) => [a, createHash(a)] as const);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }))
    for (const [, h] of hashes) h.update(chunk as Buffer);
  return Object.fromEntries(hashes.map(([a, h]) => [a, h.digest('hex')])) as Record<A, string>;
}

/**
 * A digest remembered by (path, size, mtime, inode): hashing a 400 MiB base image costs ~1-2 s, and the
 * same unchanged file is used build after build. Any change to the file changes the key.
 */
export async function cachedFileDigest(
  file: string,
  cacheDir: string,
  algorithm: 'sha256' | 'sha512' = 'sha256',
): Promise<string> {
  const st = statSync(file);
  const key = `${algorithm}:${path.resolve(file)}:${st.size}:${st.mtimeMs}:${st.ino}`;
  const memo = path.join(cacheDir, 'digests.json');
  let table: Record<string, string> = {};
  try {
    table = JSON.parse(readFileSync(memo, 'utf8')) as Record<string, string>;
  } catch {
    /* first use */
  }
  const known = table[key];
  if (known) return known;
  const digest = await fileDigest(file, algorithm);
  table[key] = digest;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${memo}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(table));
  renameSync(tmp, memo);
  return digest;
}

/** JSON with object keys sorted at every level, so equal values always hash alike. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(
        Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      );
    }
    return v;
  });
}

export function digestOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}
