/**
 * An air-gapped build run, for the library's build() (src/index.ts) and through it the CLI: which
 * options go together, the package proxy session around the builds, a proxy's fatal error (a URL the
 * bundle lacks, HTTPS while recording) stopping the builds at once, and the recording's status written
 * when the session closes (ok only when every selected build succeeded and nothing stopped the run).
 * It knows nothing of build(): the caller hands in how to run the builds.
 */
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import { startAirgapSession, type AirgapSession } from './session.js';
import { recordingDirFor } from './store.js';
import type { LoadedBundle } from './load-bundle.js';
import { KilnError } from '../util/errors.js';

export interface AirgapOptions {
  /**
   * Record the guest's downloads through kiln's proxy, for a bundle (kiln bundle / writeBundle): true
   * keeps them in the template's recording in the cache, a string in that directory. The layer cache
   * is not read (a cached layer's provisioners do not run, so their fetches would be missing).
   */
  record?: boolean | string;
  /** Build a bundle's template (loadBundle()), its downloads answered from the bundle's recording. */
  bundle?: LoadedBundle;
  /** The guest reaches nothing but kiln (QEMU restrict=on); a download not in the bundle fails the build at once. */
  offline?: boolean;
}

export class AirgapUsageError extends KilnError {}

export const isAirgapped = (o: AirgapOptions): boolean => Boolean(o.record || o.bundle || o.offline);

/** Throws AirgapUsageError for options that do not go together. */
export function checkAirgapOptions(t: LoadedTemplate, o: AirgapOptions): void {
  if (o.record && (o.bundle || o.offline)) {
    throw new AirgapUsageError('record fetches through the network and cannot be combined with a bundle or offline', {
      fix: 'record on a connected machine (kiln build --record TEMPLATE), then bundle and build offline from the bundle',
    });
  }
  if (o.bundle && o.bundle.template !== t) {
    throw new AirgapUsageError(
      `the template given is not the bundle's (${o.bundle.file}): a bundle builds its own template`,
      { fix: `build loadBundle()'s template (kiln build --bundle FILE, without a template)` },
    );
  }
}

/** What a build run reports, as far as the recording's status needs it. */
export interface RunOutcome {
  build: string;
  ok: boolean;
  failedStep?: string;
  error?: Error;
}

export interface AirgapRunOptions extends AirgapOptions {
  cacheDir: string;
  /** The caller's signal; the builds get one that also stops on the proxy's fatal errors. */
  signal?: AbortSignal;
  /** How many builds were selected (a build queued when the run stopped never reports). */
  selected: number;
  log: (message: string, level: 'info' | 'warn') => void;
  /** Masks secrets in what the recording's status keeps (error messages). */
  mask?: (text: string) => string;
}

export interface AirgapRunContext {
  network: AirgapSession['network'];
  signal: AbortSignal;
  /** Recording: the layer cache is neither read nor written. */
  noCache: boolean;
}

export async function runAirgapped<R extends RunOutcome>(
  t: LoadedTemplate,
  o: AirgapRunOptions,
  run: (c: AirgapRunContext) => Promise<R[]>,
): Promise<R[]> {
  checkAirgapOptions(t, o);
  const stop = new AbortController();
  const onOuter = () => stop.abort(o.signal?.reason);
  if (o.signal?.aborted) onOuter();
  else o.signal?.addEventListener('abort', onOuter, { once: true });
  let fatal: Error | undefined;
  const onFatal = (e: Error) => {
    if (!stop.signal.aborted) {
      fatal = e;
      stop.abort(e);
    }
  };
  let session: AirgapSession;
  const recordDir = o.record
    ? typeof o.record === 'string'
      ? path.resolve(o.record)
      : recordingDirFor(o.cacheDir, t.file)
    : undefined;
  if (recordDir) {
    o.log(
      `recording the guest's downloads into ${recordDir} (the layer cache is not used: a cached layer would skip the fetches a recording needs)`,
      'info',
    );
    session = await startAirgapSession({ mode: 'record', storeDir: recordDir, offline: false, onFatal, log: o.log });
  } else {
    const b = o.bundle;
    if (b)
      o.log(
        `offline build from bundle ${b.file} (sha256 ${b.sha256}${b.pinned ? ', as pinned' : ''}): ${b.unpacked ? `${b.manifest.members.length + 1} members verified` : 'unpacked before, reused'}, ${b.manifest.packages} recorded responses`,
        'info',
      );
    session = await startAirgapSession({
      mode: 'replay',
      storeDir: b?.manifest.packages ? b.packagesDir : undefined,
      blobsDir: b?.blobsDir,
      offline: Boolean(o.offline),
      onFatal,
      log: o.log,
    });
  }
  const mask = o.mask ?? ((s: string) => s);
  let results: R[] = [];
  try {
    results = await run({ network: session.network, signal: stop.signal, noCache: Boolean(recordDir) });
    return results;
  } finally {
    o.signal?.removeEventListener('abort', onOuter);
    const ok = results.length === o.selected && results.every((r) => r.ok) && !stop.signal.aborted;
    const stopped = fatal
      ? mask(fatal.message.split('\n')[0]!)
      : stop.signal.aborted
        ? 'interrupted'
        : results.length < o.selected
          ? 'not every selected build ran'
          : undefined;
    await session.close({
      ok,
      template: t.file,
      ...(stopped ? { stopped } : {}),
      builds: results.map((r) => ({
        name: r.build,
        ok: r.ok,
        ...(r.failedStep ? { failedStep: r.failedStep } : {}),
        ...(r.error ? { error: mask(r.error.message.split('\n')[0]!) } : {}),
      })),
    });
  }
}
