/**
 * `kiln publish output/<build>/manifest.json [--only target]`: publish a finished build again, without
 * rebuilding, to the targets its manifest records (build and publish are often separate pipeline
 * stages). A target that already holds the same image sends nothing. Flags only: the library's
 * publish() does the work.
 */
import { publish, PublishFailed } from '../index.js';
import { cacheDirFromEnv } from './env.js';

export interface PublishArgs { manifest: string; only?: string | string[]; progress?: 'auto' | 'always' | 'never'; allowHost?: string | string[] }

const listOf = (v: string | string[] | undefined) => (Array.isArray(v) ? v : v ? [v] : []).flatMap((o) => o.split(',')).map((o) => o.trim()).filter(Boolean);

export async function publishCommand(argv: PublishArgs): Promise<number> {
  const only = listOf(argv.only);
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { received ??= sig; process.stderr.write(`kiln: ${sig} received, stopping the upload\n`); controller.abort(new Error(`interrupted by ${sig}`)); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const mode = argv.progress ?? 'auto';
    await publish(argv.manifest, {
      signal: controller.signal, only, env: process.env,
      // The manifest is a file that can have been edited since the build: credentials go to a host
      // it names only when confirmed here (hosts the environment names need no confirmation).
      allowHosts: listOf(argv.allowHost),
      // A build the layer cache holds stays up to date after its manifest gains publish records.
      cacheDir: cacheDirFromEnv(),
      log: (m) => process.stderr.write(`${m}\n`),
      progress: mode === 'never' ? 'none' : mode === 'always' || process.stderr.isTTY ? 'bar' : 'lines',
    });
    return 0;
  } catch (e) {
    if (controller.signal.aborted) return received === 'SIGTERM' ? 143 : 130;
    process.stderr.write(`error: ${e instanceof PublishFailed ? e.message.replace(/\n(?!  fix:)/g, '\nerror: ') : (e as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
