/**
 * What a publish target is to the runner: given one artifact of the format it asked for, put it on the
 * remote side (or find it already there) and say where it now lives. Targets never log credentials:
 * they report only the variable or file a credential came from.
 */
import type { PublishTarget } from '../template/schema-publish.js';
import type { Timeouts } from './http.js';
import type { GuestArch } from '../qemu/arch.js';
import { KilnError } from '../util/errors.js';

export interface PublishArtifact {
  name: string;
  path: string;
  format: string;
  size: number;
  sha256: string;
}

export interface PublishContext {
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  /** The build's name, for default object names. */
  build: string;
  /** The build boots with UEFI firmware (Glance: hw_firmware_type=uefi). */
  uefi: boolean;
  /** The guest's architecture (manifest.arch; absent: x86_64): OCI platform, Glance architecture, S3 metadata. */
  arch?: GuestArch;
  log(message: string): void;
  /** Bytes sent so far of `total` (the runner turns this into a bar or lines). */
  progress(sent: number, total: number): void;
  /** The target's connect and idle timeouts (`timeout:`), for every request it makes. */
  timeouts: Timeouts;
  /**
   * Called by a target before it sends a credential anywhere: the runner says where it goes, warns
   * once when it would cross a network in clear, and (for `kiln publish`) refuses a host the manifest
   * names that the user did not confirm. Throws PublishError to stop the target.
   */
  credentialsTo(dest: CredentialDestination): void;
}

export interface CredentialDestination {
  /** What receives it, e.g. "S3", "Keystone", "the OCI registry". */
  kind: string;
  /** The URL it is sent to (only its scheme and host are shown). */
  url: string;
  /** Where the credential came from (a variable or file name, never the value). */
  from: string;
  /**
   * The host comes from the target's settings (an edited manifest.json can change it), not from the
   * environment or a credentials file that names its own host.
   */
  hostFromSettings: boolean;
}

/** Where an image now lives, recorded in manifest.json under `published`. */
export interface PublishResult {
  /** A URL (s3://, https://, oci://, glance image URL) naming the uploaded image. */
  location: string;
  /** The remote side's own identifier when it has one (Glance image id, OCI manifest digest). */
  id?: string;
  /** The digest the remote side reports or verified, "algorithm:hex". */
  remote_digest: string;
  /** Nothing was sent: the same image was already there. */
  unchanged: boolean;
  /** Bytes sent over the wire for the image data. */
  bytes_sent: number;
}

/** A failure whose message is already the one clear line for the user (bad credentials, missing variable). */
export class PublishError extends KilnError {
  override name = 'PublishError';
}

export type Publisher<T extends PublishTarget = PublishTarget> = (
  target: T,
  artifact: PublishArtifact,
  ctx: PublishContext,
) => Promise<PublishResult>;

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  /** The wait before the first retry; doubled before each next one. */
  baseDelayMs: number;
  /** Ceiling of a single wait. */
  maxDelayMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 4, baseDelayMs: 250, maxDelayMs: 8000 };

/** The wait before retry number `retry` (1 for the first retry): exponential, capped. */
export function retryDelay(retry: number, policy: RetryPolicy = defaultRetryPolicy): number {
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
}

/**
 * Retries `fn` on transient failures (connection resets, 5xx, 429, 408) with exponential backoff;
 * anything else, an interrupt, or the last attempt's failure is thrown as is. `stillRetryable` is
 * asked before each retry (Glance: the image is back to queued), and `sleep` is the wait (tests).
 */
export async function withRetries<R>(
  what: string,
  ctx: Pick<PublishContext, 'signal' | 'log'>,
  fn: () => Promise<R>,
  opts: Partial<RetryPolicy> & {
    stillRetryable?: () => Promise<boolean>;
    sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  } = {},
): Promise<R> {
  const policy = { ...defaultRetryPolicy, ...opts };
  const sleep = opts.sleep ?? abortableSleep;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      ctx.signal.throwIfAborted();
      if (i >= policy.attempts || !isTransient(e)) throw e;
      if (opts.stillRetryable && !(await opts.stillRetryable())) throw e;
      const delay = retryDelay(i, policy);
      const first = (e as Error).message.split('\n')[0]!;
      ctx.log(
        `${first.startsWith(what) ? first : `${what}: ${first}`}; retrying in ${delay} ms (attempt ${i + 1} of ${policy.attempts})`,
      );
      await sleep(delay, ctx.signal);
    }
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class HttpStatusError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** A failure worth another try: a 5xx, 429 or 408 answer, or a connection reset/refused/timed out. */
export function isTransient(e: unknown): boolean {
  if (e instanceof PublishError) return false;
  // A server that let a timeout run out once is not retried: each try would wait that long again.
  if ((e as { timedOut?: boolean })?.timedOut) return false;
  if (e instanceof HttpStatusError) return e.status >= 500 || e.status === 429 || e.status === 408;
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as { cause?: NodeJS.ErrnoException })?.cause?.code;
  return (
    code === 'ECONNRESET' ||
    code === 'ECONNREFUSED' ||
    code === 'EPIPE' ||
    code === 'ETIMEDOUT' ||
    code === 'UND_ERR_SOCKET' ||
    code === 'ECONNABORTED'
  );
}
