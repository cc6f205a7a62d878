/**
 * Whether a recording can be bundled. A recording is what one `kiln build --record` run fetched, from
 * an empty index (no merging with an earlier run: a failed or partial run would otherwise hide among
 * good entries). Its status file is removed when the run starts and written when the session closes,
 * saying whether every build succeeded; `kiln bundle` refuses a recording without one (the run was
 * killed, or is still going) or whose build failed, since what the build never got to fetch is not in
 * it and the offline build would fail on the far side of the air gap.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

export const RECORDING_STATUS_FILE = 'recording.json';

export interface RecordedBuild {
  name: string;
  ok: boolean;
  failedStep?: string;
  error?: string;
}

export interface RecordingStatus {
  version: 1;
  ok: boolean;
  /** The template recorded (absolute path on the recording machine). */
  template: string;
  builds: RecordedBuild[];
  /** Why the run stopped when it was not a build's own failure (interrupted, a fetch around the proxy). */
  stopped?: string;
  finishedAt: string;
}

export class RecordingRefused extends Error {}

/** A new recording run: the old index and status go (the blobs stay: content-addressed, reused when fetched again). */
export function beginRecording(dir: string): void {
  mkdirSync(dir, { recursive: true });
  rmSync(path.join(dir, RECORDING_STATUS_FILE), { force: true });
  rmSync(path.join(dir, 'index.json'), { force: true });
}

export function finishRecording(dir: string, status: Omit<RecordingStatus, 'version' | 'finishedAt'>): void {
  const file = path.join(dir, RECORDING_STATUS_FILE);
  const full: RecordingStatus = { version: 1, ...status, finishedAt: new Date().toISOString() };
  writeFileSync(`${file}.tmp`, JSON.stringify(full, null, 1) + '\n');
  renameSync(`${file}.tmp`, file);
}

export function readRecordingStatus(dir: string): RecordingStatus | undefined {
  const file = path.join(dir, RECORDING_STATUS_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const s = JSON.parse(readFileSync(file, 'utf8')) as RecordingStatus;
    return s && s.version === 1 && typeof s.ok === 'boolean' && Array.isArray(s.builds) ? s : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Throws RecordingRefused when the recording in `dir` must not be bundled; `template` is how the user
 * named the template (for the fix), `builds` the template's builds, each of which the recording must
 * cover (an offline build of one left out by --only would miss its fetches). A directory with neither
 * index nor status holds no recording at all: that is for the caller to allow (a build that fetches nothing).
 */
export function checkRecordingUsable(dir: string, template: string, builds: string[] = []): void {
  const indexed = existsSync(path.join(dir, 'index.json'));
  const status = readRecordingStatus(dir);
  const again = `kiln build --record ${template}`;
  if (!status) {
    if (!indexed && !existsSync(path.join(dir, RECORDING_STATUS_FILE))) return;
    throw new RecordingRefused(
      `the recording in ${dir} has no finished status: its kiln build --record was killed, is still running, or was made by a kiln that did not record one, so it may lack fetches\n  fix: let the recording build finish, or record again: ${again}`,
    );
  }
  if (status.ok) {
    const missing = builds.filter((b) => !status.builds.some((r) => r.name === b));
    if (!missing.length) return;
    throw new RecordingRefused(
      `the recording in ${dir} covers ${status.builds.map((b) => `"${b.name}"`).join(', ') || 'no build'} only; the template's ${missing.map((b) => `"${b}"`).join(', ')} ${missing.length > 1 ? 'were' : 'was'} not recorded, so an offline build of ${missing.length > 1 ? 'them' : 'it'} would miss ${missing.length > 1 ? 'their' : 'its'} fetches\n  fix: record every build in one run: ${again} (without --only/--except)`,
    );
  }
  const failed = status.builds.filter((b) => !b.ok);
  const which = failed.length
    ? failed
        .map(
          (b) =>
            `build "${b.name}" failed${b.failedStep ? ` at "${b.failedStep}"` : ''}${b.error ? ` (${b.error.split('\n')[0]})` : ''}`,
        )
        .join('; ')
    : `the run stopped: ${status.stopped ?? 'no build finished'}`;
  throw new RecordingRefused(
    `the recording in ${dir} is of a failed build: ${which}. It lacks what the build never got to fetch, so a bundle of it would fail offline\n  fix: make the build succeed, then record again: ${again}`,
  );
}
