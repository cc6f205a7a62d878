/**
 * An Azure page blob: the fixed VHD an Azure managed disk or image is made from. The blob is created
 * at the VHD's size (zeros), then only the 512-byte-aligned ranges holding data are sent (a 30 GiB
 * disk with 1 GiB of data sends about 1 GiB), each with its MD5 for the service to check, the VHD
 * footer last; the artifact's sha256 goes into the blob's metadata only once all of it is there, which
 * is what a re-run checks to send nothing. A failed upload deletes the blob.
 * Credentials: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY with
 * account_url, or credentials_file holding a connection string.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { open, readFile } from 'node:fs/promises';
import { BlobServiceClient, RestError, StorageSharedKeyCredential } from '@azure/storage-blob';
import type { z } from 'zod';
import type { azureTarget } from '../template/schema-publish.js';
import { idleTimeoutError } from './http.js';
import { ArtifactCheck } from './integrity.js';
import { safeUrl, serverSaid } from './redact.js';
import { PublishError, type PublishContext, type Publisher } from './target.js';

type AzureTarget = z.output<typeof azureTarget>;

const sector = 512;
/** uploadPages takes at most 4 MiB per call. */
const maxRange = 4 * 2 ** 20;

/** The runs of sectors in `buf` holding a non-zero byte, as [start, end) byte offsets within `buf`. */
export function dataRanges(buf: Buffer, length = buf.length): [number, number][] {
  const ranges: [number, number][] = [];
  let start = -1;
  for (let off = 0; off < length; off += sector) {
    const end = Math.min(off + sector, length);
    let zero = true;
    // Compare 8 bytes at a time where aligned: the scan runs over every byte of a multi-GiB disk.
    let i = off;
    for (; i + 8 <= end; i += 8)
      if (buf.readBigUInt64LE(i) !== 0n) {
        zero = false;
        break;
      }
    if (zero)
      for (; i < end; i++)
        if (buf[i] !== 0) {
          zero = false;
          break;
        }
    if (!zero && start < 0) start = off;
    if (zero && start >= 0) {
      ranges.push([start, off]);
      start = -1;
    }
  }
  if (start >= 0) ranges.push([start, length]);
  return ranges;
}

interface AzureAccess {
  service: BlobServiceClient;
  from: string;
}

async function azureAccess(target: AzureTarget, env: NodeJS.ProcessEnv, name: string): Promise<AzureAccess> {
  let conn = env.AZURE_STORAGE_CONNECTION_STRING;
  let from = 'AZURE_STORAGE_CONNECTION_STRING';
  if (target.credentials_file) {
    try {
      conn = (await readFile(target.credentials_file, 'utf8')).trim();
    } catch (e) {
      throw new PublishError(
        `publish target "${name}": cannot read credentials_file ${target.credentials_file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        { fix: `point it at a file holding the storage account's connection string` },
      );
    }
    from = `credentials_file ${target.credentials_file}`;
  }
  if (conn) {
    try {
      if (target.account_url) {
        const parts = Object.fromEntries(
          conn
            .split(';')
            .filter(Boolean)
            .map((p) => {
              const i = p.indexOf('=');
              return [p.slice(0, i), p.slice(i + 1)];
            }),
        );
        if (parts.AccountName && parts.AccountKey)
          return {
            service: new BlobServiceClient(
              target.account_url,
              new StorageSharedKeyCredential(parts.AccountName, parts.AccountKey),
            ),
            from,
          };
      }
      return { service: BlobServiceClient.fromConnectionString(conn), from };
    } catch (e) {
      throw new PublishError(
        `publish target "${name}": ${from} is not a storage connection string (${(e as Error).message.split('\n')[0]})`,
        { fix: `copy it from the storage account's "Access keys" page` },
      );
    }
  }
  if (env.AZURE_STORAGE_ACCOUNT && env.AZURE_STORAGE_KEY) {
    const url = target.account_url ?? `https://${env.AZURE_STORAGE_ACCOUNT}.blob.core.windows.net`;
    return {
      service: new BlobServiceClient(
        url,
        new StorageSharedKeyCredential(env.AZURE_STORAGE_ACCOUNT, env.AZURE_STORAGE_KEY),
      ),
      from: 'AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY',
    };
  }
  throw new PublishError(`publish target "${name}": AZURE_STORAGE_CONNECTION_STRING is not set`, {
    fix: `export it (or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY), or set credentials_file: in the target`,
  });
}

function explain(e: unknown, name: string, from: string, service: string): unknown {
  if (e instanceof RestError && (e.statusCode === 403 || e.statusCode === 401)) {
    return new PublishError(
      `publish target "${name}": the storage account refused the key from ${from} (${e.code ?? `HTTP ${e.statusCode}`})`,
      { fix: `check the account name and key (the storage account's "Access keys" page)` },
    );
  }
  if (e instanceof RestError) {
    // Its message can quote the request URL (a SAS token) and the server's text: neither raw.
    const said = e.message ? serverSaid(e.message) : '';
    return new Error(
      `the blob service at ${safeUrl(service)} answered ${e.statusCode ? `HTTP ${e.statusCode}` : `with ${e.code ?? 'an error'}`}${e.code && e.statusCode ? ` ${e.code}` : ''}${said ? `; ${said}` : ''}`,
    );
  }
  return e;
}

/**
 * The Azure SDK has no idle timeout of its own: an AbortSignal that fires when no request finished
 * and no page progressed for the target's idle time, or when the publish is interrupted. `touch`
 * marks progress. The SDK's connections are its own, so the connect time counts against `idle`.
 */
function watchdog(
  ctx: PublishContext,
  where: string,
): { signal: AbortSignal; touch(): void; stop(): void; fired(): Error | undefined } {
  const controller = new AbortController();
  const limit = ctx.timeouts.idleMs;
  let timedOut: Error | undefined;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = idleTimeoutError(where, ctx.timeouts.idleMs);
      controller.abort(timedOut);
    }, limit);
  };
  const onAbort = () => controller.abort(ctx.signal.reason);
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  arm();
  return {
    signal: controller.signal,
    touch: arm,
    stop() {
      clearTimeout(timer);
      ctx.signal.removeEventListener('abort', onAbort);
    },
    fired: () => timedOut,
  };
}

export const publishAzure: Publisher<AzureTarget> = async (target, artifact, ctx) => {
  const name = target.name ?? 'azure';
  if (artifact.size % sector !== 0) {
    throw new PublishError(
      `publish target "${name}": ${artifact.name} is ${artifact.size} bytes, not a whole number of 512-byte sectors, so it is not a fixed VHD`,
      { fix: `use an output with format: vhd (kiln writes it fixed)` },
    );
  }
  const { service, from } = await azureAccess(target, ctx.env, name);
  // The endpoint comes from the connection string (or the account name) unless account_url: names it.
  ctx.credentialsTo({ kind: 'the Azure blob service', url: service.url, from, hostFromSettings: !!target.account_url });
  const container = service.getContainerClient(target.container);
  const blobName = target.blob ?? artifact.name;
  const blob = container.getPageBlobClient(blobName);
  // The blob's URL carries a SAS token as its query when the connection string has one: never recorded.
  const location = safeUrl(blob.url);
  const dog = watchdog(ctx, new URL(service.url).origin);
  const abortSignal = dog.signal;
  let created = false;
  try {
    await container.createIfNotExists({ abortSignal });
    dog.touch();
    const props = await blob.getProperties({ abortSignal }).catch((e: unknown) => {
      if (e instanceof RestError && e.statusCode === 404) return null;
      throw e;
    });
    dog.touch();
    if (props && props.contentLength === artifact.size && props.metadata?.kiln_sha256 === artifact.sha256) {
      ctx.log(`${location} already holds this artifact: nothing to send`);
      return { location, remote_digest: `sha256:${artifact.sha256}`, unchanged: true, bytes_sent: 0 };
    }
    await blob.create(artifact.size, { abortSignal });
    created = true;
    dog.touch();
    const check = new ArtifactCheck(artifact);
    const sent = await uploadDataRanges(blob, artifact.path, artifact.size, ctx, abortSignal, dog.touch, check);
    // The digest labels the blob only once every byte read for it matched the manifest.
    check.verify();
    await blob.setMetadata({ kiln_sha256: artifact.sha256 }, { abortSignal });
    return { location, remote_digest: `sha256:${artifact.sha256}`, unchanged: false, bytes_sent: sent };
  } catch (e) {
    if (created)
      await blob
        .deleteIfExists({ abortSignal: AbortSignal.timeout(ctx.timeouts.connectMs + ctx.timeouts.idleMs) })
        .catch(() => {});
    ctx.signal.throwIfAborted();
    if (dog.fired()) throw new PublishError(`publish target "${name}": ${dog.fired()!.message}`);
    throw explain(e, name, from, service.url);
  } finally {
    dog.stop();
  }
};

type PageBlob = ReturnType<ReturnType<BlobServiceClient['getContainerClient']>['getPageBlobClient']>;

/** Sends the non-zero ranges, 4 at a time, the footer (last sector) last; returns the bytes sent. */
async function uploadDataRanges(
  blob: PageBlob,
  file: string,
  size: number,
  ctx: PublishContext,
  abortSignal: AbortSignal,
  touch: () => void,
  check: ArtifactCheck,
): Promise<number> {
  const fh = await open(file, 'r');
  // Every page request in flight listens on the signal.
  setMaxListeners(64, ctx.signal, abortSignal);
  let sent = 0;
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const send = (data: Buffer, offset: number) => {
    const p = blob
      .uploadPages(data, offset, data.length, {
        abortSignal,
        onProgress: touch,
        transactionalContentMD5: createHash('md5').update(data).digest(),
      })
      .then(
        () => {
          sent += data.length;
          touch();
          ctx.progress(sent, size);
        },
        (e: unknown) => {
          failure ??= e;
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  try {
    const footerAt = size - sector;
    for (let pos = 0; pos < footerAt; pos += maxRange) {
      const len = Math.min(maxRange, footerAt - pos);
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await fh.read(buf, 0, len, pos);
      if (bytesRead !== len) throw new Error(`${file} is shorter than ${size} bytes: it changed during the upload`);
      check.update(buf.subarray(0, len));
      // Reading a long run of zeros sends nothing: with no request waiting, the network is not idle.
      if (!inFlight.size) touch();
      for (const [s, e] of dataRanges(buf, len)) send(buf.subarray(s, e), pos + s);
      while (inFlight.size >= 4) await Promise.race(inFlight);
      if (failure) throw failure;
      ctx.signal.throwIfAborted();
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
    const footer = Buffer.alloc(sector);
    const { bytesRead } = await fh.read(footer, 0, sector, footerAt);
    check.update(footer.subarray(0, bytesRead));
    // A read past the size the manifest gives would show a disk that grew: the check counts it.
    const extra = Buffer.alloc(1);
    if ((await fh.read(extra, 0, 1, size)).bytesRead) check.update(extra);
    check.verify();
    await blob.uploadPages(footer, footerAt, sector, {
      abortSignal,
      transactionalContentMD5: createHash('md5').update(footer).digest(),
    });
    sent += sector;
    ctx.progress(size, size);
    return sent;
  } finally {
    await Promise.allSettled(inFlight);
    await fh.close();
  }
}
