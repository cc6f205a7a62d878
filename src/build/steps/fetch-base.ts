/** Step: find the base image (local path or download cache), verify its checksum, check that it is a sound, bootable disk, learn its format. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { isHttpUrl } from '../../util/url.js';
import { cachedFileDigest, fileDigest } from '../../cache/digest.js';
import { ChecksumMismatchError, fetchChecksumFile, fetchToCache, type Expected } from '../../cache/download.js';

/** Reads "HEX  name" / "ALGO (name) = HEX" lines and picks the one for `fileName`. */
export function pickFromSums(text: string, fileName: string): Expected | undefined {
  for (const line of text.split('\n')) {
    const gnu = /^([0-9a-fA-F]{64}|[0-9a-fA-F]{128})\s+\*?(.+)$/.exec(line.trim());
    if (gnu && path.basename(gnu[2]!) === fileName)
      return { algorithm: gnu[1]!.length === 64 ? 'sha256' : 'sha512', hex: gnu[1]!.toLowerCase() };
    const bsd = /^(SHA256|SHA512) \((.+)\) = ([0-9a-fA-F]+)$/.exec(line.trim());
    if (bsd && path.basename(bsd[2]!) === fileName)
      return { algorithm: bsd[1]!.toLowerCase() as Expected['algorithm'], hex: bsd[3]!.toLowerCase() };
  }
  return undefined;
}

/** The digest `checksum` ("none", "sha256:<hex>", "sha512:<hex>", md5:/sha1: from Packer templates, or "file:<path or URL of a list>") expects of `image`. */
export async function expectedChecksum(
  checksum: string,
  image: string,
  signal: AbortSignal,
): Promise<Expected | undefined> {
  if (checksum === 'none') return undefined;
  const [kind, value] = [checksum.slice(0, checksum.indexOf(':')), checksum.slice(checksum.indexOf(':') + 1)];
  if (kind === 'sha256' || kind === 'sha512' || kind === 'md5' || kind === 'sha1')
    return { algorithm: kind, hex: value.toLowerCase() };
  const text = isHttpUrl(value) ? await fetchChecksumFile(value, signal) : readFileSync(value, 'utf8');
  const name = path.basename(isHttpUrl(image) ? new URL(image).pathname : image);
  const found = pickFromSums(text, name);
  if (!found) throw new Error(`checksum file ${value} has no line for "${name}"`);
  return found;
}

export const fetchBaseStep: Step = {
  name: 'fetch base image',
  async run(ctx) {
    const src = ctx.build.source;
    // base_image or iso, whichever the template gave (the loader resolved which).
    const media = src.media.location;
    const isIso = src.media.kind === 'iso';
    const expected = await expectedChecksum(src.checksum, media, ctx.signal);
    let file: string;
    let sha256: string;
    if (isHttpUrl(media)) {
      ctx.log(`fetching ${media}`);
      ({ path: file, sha256 } = await fetchToCache(
        media,
        ctx.options.cacheDir,
        expected,
        (pct) => ctx.events.emit({ type: 'progress', build: ctx.build.name, task: 'download', percent: pct }),
        ctx.signal,
      ));
    } else {
      file = media;
      sha256 = await cachedFileDigest(file, ctx.options.cacheDir);
      ctx.signal.throwIfAborted();
      if (expected) {
        const got = expected.algorithm === 'sha256' ? sha256 : await fileDigest(file, expected.algorithm);
        if (got !== expected.hex) {
          throw new ChecksumMismatchError(
            `checksum mismatch for ${file}: expected ${expected.algorithm}:${expected.hex}, got ${expected.algorithm}:${got}`,
            { fix: `the file changed or the checksum is wrong; correct "checksum" or use "none"` },
          );
        }
      }
    }
    ctx.signal.throwIfAborted();
    if (isIso) {
      ctx.state.base = { path: file, format: 'raw', sha256, source: media, kind: 'iso' };
      ctx.log(`installer ISO ${path.basename(media)} (sha256 ${sha256.slice(0, 12)}...)`, 'debug');
      return;
    }
    // Before QEMU boots it: a damaged or unbootable image otherwise fails minutes later, far from its cause.
    const bootSectorRequired = !src.qemu_args.some((group) => group.includes('-kernel'));
    const checked = await ctx.driver.checkBaseImage(file, { bootSectorRequired, signal: ctx.signal });
    for (const warning of checked.warnings) ctx.log(warning, 'warn');
    ctx.state.base = { path: file, format: checked.format, sha256, source: media, kind: 'disk' };
    ctx.log(`base image ${path.basename(media)} (${checked.format}, sha256 ${sha256.slice(0, 12)}...)`, 'debug');
  },
};
