/**
 * An apt mirror's Release (and InRelease) file says until when it may be used (`Valid-Until:`, on
 * Debian's security and many other mirrors); apt refuses an index past it ("is expired"). A recording
 * replays those bytes as they were, so a bundle written after that date would fail offline in apt, on
 * the far side of the air gap: kiln bundle refuses it instead, naming the file and the date.
 * Turning the check off (`Acquire::Check-Valid-Until "false"` in the guest) is the site's choice,
 * not kiln's: kiln bundle's allowExpired (--allow-expired) is for a site that made it.
 */
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import type { PackageStore, RecordedResponse } from './store.js';
import { KilnError } from '../util/errors.js';

export interface ReleaseValidity {
  url: string;
  validUntil: Date;
}

/** The Valid-Until field of a Release or InRelease text (clear-signed or not), or undefined. */
export function parseValidUntil(text: string): Date | undefined {
  // Only the header paragraph (before the first blank line of the signed part) holds it; the first match is that.
  const m = /^Valid-Until:[ \t]*(.+?)[ \t]*$/m.exec(text);
  if (!m) return undefined;
  const d = new Date(m[1]!);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export const isReleaseUrl = (url: string): boolean => /\/(In)?Release$/.test(url.split('?')[0]!);

function body(store: PackageStore, r: RecordedResponse): string {
  const raw = readFileSync(store.blobPath(r.sha256));
  try {
    return (r.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('latin1');
  } catch {
    return raw.toString('latin1');
  }
}

/** Every recorded Release/InRelease with a Valid-Until, earliest first. */
export function releaseValidity(store: PackageStore): ReleaseValidity[] {
  const out: ReleaseValidity[] = [];
  for (const r of store.responses()) {
    if (r.status !== 200 || !isReleaseUrl(r.url) || r.size > 64 * 2 ** 20) continue;
    const validUntil = parseValidUntil(body(store, r));
    if (validUntil) out.push({ url: r.url, validUntil });
  }
  return out.sort((a, b) => a.validUntil.getTime() - b.validUntil.getTime());
}

export class ExpiredRecordingError extends KilnError {}

/** Throws ExpiredRecordingError when a recorded Release file is past its Valid-Until at `now`. */
export function checkValidUntil(store: PackageStore, template: string, now = new Date()): ReleaseValidity[] {
  const all = releaseValidity(store);
  const expired = all.filter((v) => v.validUntil.getTime() <= now.getTime());
  if (expired.length) {
    const first = expired[0]!;
    throw new ExpiredRecordingError(
      `the recording is older than its mirror allows: ${first.url} says Valid-Until ${first.validUntil.toUTCString()}${expired.length > 1 ? ` (and ${expired.length - 1} more Release file${expired.length > 2 ? 's' : ''})` : ''}, and apt in the offline guest would refuse it as expired`,
      {
        fix: `record again (kiln build --record ${template}), then bundle; a site whose guests set Acquire::Check-Valid-Until "false" (its own choice, not kiln's) can bundle it anyway with --allow-expired`,
      },
    );
  }
  return all;
}
