/**
 * `kiln publish output/<build>/manifest.json [--only target]`: publish a finished build again, without
 * rebuilding, to the targets its manifest records (build and publish are often separate pipeline
 * stages). A target that already holds the same image sends nothing. Flags only: the library's
 * publish() does the work. `--events=json` writes the same JSON-lines events `kiln build` does on
 * stdout (`log`, one `published` per target, then `publish-end`); human lines stay on stderr.
 */
import { publish, PublishFailed, readManifest } from '../index.js';
import { publishedEvent, publishedLine } from '../publish/runner.js';
import type { BuildEvent } from '../ui/events.js';
import { jsonRenderer } from '../ui/render.js';
import { cacheDirFromEnv } from './env.js';
import { fixOf } from '../util/errors.js';

export interface PublishArgs {
  manifest: string;
  only?: string | string[];
  progress?: 'auto' | 'always' | 'never';
  allowHost?: string | string[];
  events?: 'json';
}

const listOf = (v: string | string[] | undefined) =>
  (Array.isArray(v) ? v : v ? [v] : [])
    .flatMap((o) => o.split(','))
    .map((o) => o.trim())
    .filter(Boolean);

/** The build a manifest belongs to, for the events' `build` field ('' when it cannot be read: publish() then says why). */
function buildOf(manifest: string): string {
  try {
    return readManifest(manifest).build ?? '';
  } catch {
    return '';
  }
}

export async function publishCommand(argv: PublishArgs): Promise<number> {
  const started = performance.now();
  const only = listOf(argv.only);
  const json = argv.events === 'json' ? jsonRenderer(process.stdout) : undefined;
  const build = json ? buildOf(argv.manifest) : '';
  const emit = (e: BuildEvent) => json?.({ ...e, time: new Date().toISOString() });
  const end = (ok: boolean, error?: string, fix?: string) =>
    emit({
      type: 'publish-end',
      build,
      ok,
      ms: Math.round(performance.now() - started),
      ...(error ? { error } : {}),
      ...(fix === undefined ? {} : { fix }),
    });
  const log = (m: string) => {
    process.stderr.write(`${m}\n`);
    emit({ type: 'log', build, level: m.startsWith('warning:') ? 'warn' : 'info', message: m });
  };
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    received ??= sig;
    process.stderr.write(`kiln: ${sig} received, stopping the upload\n`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const mode = argv.progress ?? 'auto';
    await publish(argv.manifest, {
      signal: controller.signal,
      only,
      env: process.env,
      // The manifest is a file that can have been edited since the build: credentials go to a host
      // it names only when confirmed here (hosts the environment names need no confirmation).
      allowHosts: listOf(argv.allowHost),
      // A build the layer cache holds stays up to date after its manifest gains publish records.
      cacheDir: cacheDirFromEnv(),
      log,
      progress: mode === 'never' ? 'none' : mode === 'always' || process.stderr.isTTY ? 'bar' : 'lines',
      // Given only for the events: the runner then leaves each result line to us, printed as it would.
      ...(json
        ? {
            onPublished: (r) => {
              if (r.status === 'published') log(publishedLine(r));
              emit(publishedEvent(build, r));
            },
          }
        : {}),
    });
    end(true);
    return 0;
  } catch (e) {
    if (controller.signal.aborted) {
      end(false, `interrupted by ${received ?? 'a signal'}`);
      return received === 'SIGTERM' ? 143 : 130;
    }
    const message = (e as Error).message;
    process.stderr.write(
      `error: ${e instanceof PublishFailed ? message.replace(/\n(?!  fix:)/g, '\nerror: ') : message}\n`,
    );
    end(false, message, fixOf(e));
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
