/**
 * kiln bundle as a library call: what may go into a bundle is decided here, before a byte is written.
 * The recording must be of a build that succeeded (recording-status.ts) and not past its mirror's
 * Valid-Until (valid-until.ts); `--var` values are stored in the manifest unless sensitive (a bundle
 * is a file anyone holding it can read: a secret goes in a var-file, carried as a file on purpose, or
 * is given again to the offline build); base images and ISOs given as URLs come from the download cache.
 */
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import { PackageStore, recordingDirFor } from './store.js';
import { writeBundle, type WrittenBundle } from './bundle-write.js';
import { checkRecordingUsable, RecordingRefused } from './recording-status.js';
import { checkValidUntil, type ReleaseValidity } from './valid-until.js';
import { templateDownloads } from './carried.js';
import { packKiln } from './kiln-pack.js';

export interface MakeBundleOptions {
  output: string;
  cacheDir: string;
  force?: boolean;
  /** The `name=value` values the template was loaded with, stored for the offline build. */
  vars?: string[];
  varFiles?: string[];
  /** The recording to carry (default: the template's, in the cache). */
  recording?: string;
  /** Add kiln itself (npm pack with its dependencies). */
  withKiln?: boolean;
  /** Bundle a recording past its mirror's Valid-Until (the site's guests set Acquire::Check-Valid-Until "false"). */
  allowExpired?: boolean;
  /** How the user named the template, for the fixes in messages (default: its path). */
  templateName?: string;
  log?: (message: string) => void;
  now?: Date;
}

export interface MadeBundle extends WrittenBundle {
  recordingDir: string;
  /** The earliest Valid-Until among the recorded Release files: offline builds after it fail in apt. */
  validUntil?: ReleaseValidity;
  withKiln: boolean;
}

export async function makeBundle(t: LoadedTemplate, o: MakeBundleOptions): Promise<MadeBundle> {
  const name = o.templateName ?? t.file;
  const sensitive = (o.vars ?? [])
    .map((v) => v.slice(0, v.indexOf('=') < 0 ? v.length : v.indexOf('=')))
    .filter((n) => t.variables.sensitive.has(n));
  if (sensitive.length) {
    throw new RecordingRefused(
      `--var ${sensitive.join(', ')}: ${sensitive.length > 1 ? 'these variables are' : 'the variable is'} sensitive, and a bundle stores --var values in its manifest, readable by anyone who holds the bundle\n  fix: give ${sensitive.length > 1 ? 'them' : 'it'} in a var-file (--var-file; the bundle then carries that file, by your choice), or leave ${sensitive.length > 1 ? 'them' : 'it'} out here and pass --var again to the offline build`,
    );
  }
  const recordingDir = o.recording ? path.resolve(o.recording) : recordingDirFor(o.cacheDir, t.file);
  checkRecordingUsable(
    recordingDir,
    name,
    t.template.builds.map((b) => b.name),
  );
  const store = new PackageStore(recordingDir);
  let validUntil: ReleaseValidity | undefined;
  if (!o.allowExpired) validUntil = checkValidUntil(store, name, o.now)[0];
  if (!store.size)
    o.log?.(
      `no recording for ${name} in ${recordingDir}: the bundle holds no packages (fine for a build that fetches nothing; else run kiln build --record ${name} first)`,
    );
  const downloads = templateDownloads(t, o.cacheDir, name);
  let kilnTarball: string | undefined;
  if (o.withKiln) {
    o.log?.('packing kiln with its dependencies (npm pack)');
    kilnTarball = await packKiln(o.cacheDir);
  }
  const w = await writeBundle({
    template: t,
    varFiles: o.varFiles,
    recordingDir,
    kilnTarball,
    output: o.output,
    cacheDir: o.cacheDir,
    force: o.force,
    vars: o.vars,
    downloads,
  });
  return { ...w, recordingDir, validUntil, withKiln: Boolean(kilnTarball) };
}
