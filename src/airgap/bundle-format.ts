/** The bundle's layout and manifest, shared by its writer and its reader. */

/** The tar's first member; it lists every other one with its SHA-256. */
export const MANIFEST_MEMBER = 'manifest.json';
/** The recorded package set's index (its bodies are blobs like any input). */
export const PACKAGES_INDEX_MEMBER = 'packages/index.json';
/** kiln itself (--with-kiln): `npm install -g ./kiln.tgz` with no network. */
export const KILN_MEMBER = 'kiln.tgz';
export const blobMember = (sha256: string): string => `blobs/${sha256}`;

export interface BundleManifest {
  kind: 'kiln-bundle';
  /** 2 adds root, vars and downloads (a version 1 bundle has none of them). */
  version: 1 | 2;
  kilnVersion: string;
  /** The template's place in `tree`. */
  template: string;
  varFiles: string[];
  /** The inputs as laid out beside the template (paths relative to their common root) -> blob digest. */
  tree: { path: string; sha256: string; size: number; executable: boolean }[];
  /**
   * The folder the tree's paths were relative to on the recording machine: an input the template names
   * by an absolute path under it is read from the tree's copy offline.
   */
  root?: string;
  /** The `--var name=value` values given to kiln bundle (never a sensitive variable's), applied before the offline build's own. */
  vars?: string[];
  /** Base images and ISOs the template gives as URLs, carried by digest (blobs/<sha256>) from the download cache. */
  downloads?: { url: string; sha256: string; size: number }[];
  /** How many responses the recorded package set holds (0: the build fetched nothing). */
  packages: number;
  /** Every member but this manifest, sorted by name. */
  members: { name: string; sha256: string; size: number }[];
}
