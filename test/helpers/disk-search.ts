/**
 * Searching a disk image's bytes for key material: the artifact is converted to raw and only the
 * extents that hold data are read, streamed in chunks with an overlap, so deleted files are searched
 * too and nothing is held in memory.
 */
import { createReadStream, rmSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';

/**
 * An OpenSSH private key as a file holds it: the armour line, then (after a newline, an escaped "\n"
 * in JSON or YAML, or indentation) the base64 of "openssh-key-v1". The armour alone is not enough:
 * ssh binaries carry it as a string constant.
 */
export const privateKeyPattern = /-----BEGIN OPENSSH PRIVATE KEY-----(?:\\n|\s){1,40}b3BlbnNzaC1rZXktdjE/g;
/** OpenSSH ed25519 public keys, in authorized_keys or host key form. */
export const ed25519PublicPattern = /AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}/g;

/** The base64 lines of a PEM body that are unique to the key (the first is the same for every ed25519 key). */
export function uniquePemLines(pem: string): string[] {
  return pem
    .split('\n')
    .filter((l) => l && !l.startsWith('-----'))
    .slice(1)
    .filter((l) => l.length >= 40);
}

/** The byte ranges of a raw disk image that hold data (holes and zero extents are skipped). */
async function dataExtents(raw: string): Promise<{ start: number; length: number }[]> {
  const map = JSON.parse((await execa('qemu-img', ['map', '-f', 'raw', '--output=json', raw])).stdout) as {
    start: number;
    length: number;
    data: boolean;
    zero: boolean;
  }[];
  return map.filter((m) => m.data && !m.zero).map(({ start, length }) => ({ start, length }));
}

/**
 * Converts a disk image to raw and searches its bytes: every match of each pattern (regexes over the
 * bytes read as latin1, so binary data matches byte for byte). Streams 8 MiB chunks with an overlap,
 * so a match across a chunk boundary is found, and never holds the disk in memory.
 */
export async function searchDisk(
  image: string,
  patterns: Record<string, RegExp>,
  scratchDir: string,
): Promise<Record<string, string[]>> {
  const raw = path.join(scratchDir, `${path.basename(image)}.${randomBytes(4).toString('hex')}.raw`);
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  const found: Record<string, Map<number, string>> = Object.fromEntries(
    Object.keys(patterns).map((k) => [k, new Map()]),
  );
  const overlap = 4096;
  try {
    for (const extent of await dataExtents(raw)) {
      let carry = '';
      let carryStart = extent.start;
      const stream = createReadStream(raw, {
        start: extent.start,
        end: extent.start + extent.length - 1,
        highWaterMark: 8 << 20,
      });
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        const text = carry + chunk.toString('latin1');
        for (const [name, re] of Object.entries(patterns)) {
          for (const m of text.matchAll(new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`))) {
            found[name]!.set(carryStart + m.index, m[0]);
          }
        }
        const keep = Math.min(overlap, text.length);
        carryStart += text.length - keep;
        carry = text.slice(text.length - keep);
      }
    }
  } finally {
    rmSync(raw, { force: true });
  }
  return Object.fromEntries(
    Object.entries(found).map(([k, v]) => [k, [...v.entries()].map(([at, s]) => `@${at}: ${s.slice(0, 80)}`)]),
  );
}
