/** The file provisioner: upload a file, a directory or inline content; or download from the guest. */
import type { ProvisionerContext } from './context.js';
import type { Provisioner } from '../template/schema.js';
import { interpolateString } from '../template/interpolate.js';
import { sshSession } from './context.js';
import { throttleProgress } from '../communicator/stream-transfer.js';
import { defaultMaxDownloadBytes, DownloadLimitError, templateSize } from '../communicator/download-guard.js';
import { formatBytes } from '../template/units.js';

/** At most this often a transfer-progress event (and the first and the last always). */
const progressIntervalMs = 250;

type FileProvisioner = Extract<Provisioner, { type: 'file' }>;

/** Runs the transfer; `signal` (the build's interrupt or the provisioner's timeout) stops it. */
export async function runFile(
  ctx: ProvisionerContext,
  p: FileProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  try {
    await transfer(ctx, p, label, signal);
  } catch (e) {
    if (signal.aborted) throw e; // the stop's own reason, which says what stopped it
    if (e instanceof DownloadLimitError) (e as Error).message += `; ${limitFix(e)}`;
    // Keep the error's class (a lost connection is told apart later); only name the provisioner.
    (e as Error).message = `${label}: ${(e as Error).message}`;
    throw e;
  }
}

async function transfer(
  ctx: ProvisionerContext,
  p: FileProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  const ssh = await sshSession(ctx, signal);
  const values = { build: ctx.buildValues() };
  const index = Number(/\d+/.exec(label)?.[0] ?? 0) - 1; // "provisioner 3"
  const progress = (direction: 'upload' | 'download', guestPath: string) =>
    throttleProgress(
      (done, total) =>
        ctx.events.emit({
          type: 'transfer-progress',
          build: ctx.build.name,
          index,
          direction,
          path: guestPath,
          done,
          ...(total !== undefined ? { total } : {}),
        }),
      progressIntervalMs,
    );
  if (p.direction === 'download') {
    const maxBytes = p.max_size ?? defaultMaxDownloadBytes;
    await ssh.download(p.source!, p.destination, signal, progress('download', p.source!), maxBytes);
    ctx.log(`${label}: downloaded ${p.source} -> ${p.destination} (${ssh.lastTransferVia})`);
  } else if (p.content !== undefined) {
    await ssh.uploadContent(String(interpolateString(p.content, values)), p.destination, undefined, signal);
    ctx.log(`${label}: wrote ${p.destination}`);
  } else {
    const n = await ssh.upload(p.source!, p.destination, signal, progress('upload', p.destination));
    ctx.log(
      `${label}: uploaded ${p.source} -> ${p.destination} (${n} file${n === 1 ? '' : 's'}, ${ssh.lastTransferVia})`,
    );
  }
}

/** How to get past a download's limit: raise max_size (to what it needed, when known), or send less. */
function limitFix(e: DownloadLimitError): string {
  if (e.kind === 'entries')
    return 'fix: pack the folder in the guest first (tar -czf in a shell provisioner) and download the archive';
  const to = templateSize(Math.max(e.atLeast ?? 0, e.limit) * (e.atLeast && e.atLeast > e.limit ? 1 : 2));
  return `fix: if that much is expected, set max_size: ${to} (or more) on this file provisioner (the limit was ${formatBytes(e.limit)}${e.limit === defaultMaxDownloadBytes ? ', the default' : ''}); otherwise download less`;
}
