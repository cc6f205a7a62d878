/** What both SBOM formats are written from: the build's base image, guest packages and the files kiln put in. */
import type { GuestPackages } from './guest-packages.js';
import type { InputFile } from './build-inputs.js';

export interface SbomInput {
  build: string;
  created: Date;
  kilnVersion: string;
  base?: { source: string; sha256: string; format: string; kind?: 'disk' | 'iso' };
  packages?: GuestPackages;
  /** The build's local inputs; those with a guest path (uploads, scripts) are listed. */
  files: InputFile[];
  /** The artifacts this SBOM describes (all made from one disk). */
  artifacts: { name: string; sha256: string }[];
  /** Set when the build converted a cached final layer without booting: whose package list this is. */
  fromCache?: { finalLayer: string };
}

/** The files kiln put into the guest (uploads) or ran there (scripts). */
export function guestFiles(files: readonly InputFile[]): (InputFile & { guestPath: string })[] {
  return files.filter((f): f is InputFile & { guestPath: string } => f.guestPath !== undefined);
}

/** The marking of an SBOM made without booting: the package list is the one the producing build read. */
export function fromCacheNote(input: SbomInput): string | undefined {
  if (!input.fromCache) return undefined;
  const p = input.packages;
  const when = p?.recordedAt ? ` on ${p.recordedAt}` : '';
  const by = p?.kilnVersion ? ` (kiln ${p.kilnVersion})` : '';
  return `Converted from the layer cache without booting: the package list is the one the build that saved final layer ${input.fromCache.finalLayer} read from the guest${when}${by}.`;
}
