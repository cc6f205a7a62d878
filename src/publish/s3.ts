/**
 * S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Swift s3api) with the official SDK: a
 * multipart upload with parallel parts, each carrying its SHA-256 (ChecksumSHA256) for a server that
 * verifies them. The artifact's sha256 goes into the object's metadata once the data is complete, so a
 * re-run that finds the same object with the same digest sends nothing. An interrupted or failed upload
 * is aborted (AbortMultipartUpload), leaving no parts and no object behind.
 */
import { createReadStream, readFileSync } from 'node:fs';
import {
  AbortMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { z } from 'zod';
import type { s3Target } from '../template/schema-publish.js';
import type { Timeouts } from './http.js';
import { ArtifactCheck, checkedStream } from './integrity.js';
import { safeUrl, serverSaid } from './redact.js';
import type { GuestArch } from '../qemu/arch.js';
import { PublishError, type Publisher, withRetries } from './target.js';

type S3Target = z.output<typeof s3Target>;

/** Metadata key holding the artifact's sha256 (x-amz-meta-kiln-sha256). */
const digestKey = 'kiln-sha256';

/** The object's metadata: the artifact's sha256 and the guest's architecture (x-amz-meta-kiln-arch: x86_64, aarch64). */
export function objectMetadata(artifact: { sha256: string }, arch: GuestArch | undefined): Record<string, string> {
  return { [digestKey]: artifact.sha256, 'kiln-arch': arch ?? 'x86_64' };
}

interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  from: string;
}

/** Reads `[profile]` of an AWS shared credentials file (INI). */
export function parseAwsCredentialsFile(text: string, profile: string): Partial<S3Credentials> {
  let section = '';
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const head = /^\[(?:profile\s+)?([^\]]+)\]$/.exec(line);
    if (head) {
      section = head[1]!.trim();
      continue;
    }
    const kv = /^([A-Za-z_]+)\s*=\s*(.*)$/.exec(line);
    if (kv && section === profile) out[kv[1]!.toLowerCase()] = kv[2]!.trim();
  }
  return {
    accessKeyId: out.aws_access_key_id,
    secretAccessKey: out.aws_secret_access_key,
    sessionToken: out.aws_session_token,
  };
}

export function s3Credentials(target: S3Target, env: NodeJS.ProcessEnv, name: string): S3Credentials {
  if (target.credentials_file) {
    let text: string;
    try {
      text = readFileSync(target.credentials_file, 'utf8');
    } catch (e) {
      throw new PublishError(
        `publish target "${name}": cannot read credentials_file ${target.credentials_file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        {
          fix: `point credentials_file at an AWS credentials file, or remove it and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`,
        },
      );
    }
    const c = parseAwsCredentialsFile(text, target.profile);
    if (!c.accessKeyId || !c.secretAccessKey) {
      throw new PublishError(
        `publish target "${name}": credentials_file ${target.credentials_file} has no aws_access_key_id and aws_secret_access_key under [${target.profile}]`,
        { fix: `add them, or set profile: to the section that has them` },
      );
    }
    return {
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      sessionToken: c.sessionToken,
      from: `credentials_file ${target.credentials_file} [${target.profile}]`,
    };
  }
  const id = env.AWS_ACCESS_KEY_ID,
    secret = env.AWS_SECRET_ACCESS_KEY;
  if (!id || !secret) {
    throw new PublishError(
      `publish target "${name}": ${!id ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY'} is not set`,
      { fix: `export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set credentials_file: in the target` },
    );
  }
  return {
    accessKeyId: id,
    secretAccessKey: secret,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    from: 'AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY',
  };
}

const credentialErrors = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AccessDenied',
  'InvalidToken',
  'ExpiredToken',
  'Forbidden',
]);

/** The URL the client talks to: the endpoint, or AWS's for the region. */
export function s3EndpointUrl(target: Pick<S3Target, 'endpoint' | 'region'>): string {
  return target.endpoint ?? `https://s3.${target.region}.amazonaws.com`;
}

/**
 * One clear line for a failure: a refused credential naming where it came from; otherwise the HTTP
 * status, the endpoint and the S3 error code (the SDK's own message for a body that is not S3's XML
 * is just "UnknownError"), with the server's text marked as such; a timeout names the setting.
 */
export function explainS3(
  e: unknown,
  name: string,
  from: string,
  bucket: string,
  endpoint: string,
  timeouts: Timeouts,
): unknown {
  if (e instanceof PublishError) return e;
  const where = safeUrl(endpoint);
  if (e instanceof S3ServiceException) {
    const status = e.$metadata?.httpStatusCode;
    if (credentialErrors.has(e.name) || status === 403) {
      return new PublishError(`publish target "${name}": the server refused the credentials from ${from} (${e.name})`, {
        fix: `check the access key and secret, and that they may write to bucket ${bucket}`,
      });
    }
    if (e.name === 'NoSuchBucket')
      return new PublishError(`publish target "${name}": bucket ${bucket} does not exist`, {
        fix: `create it, or correct bucket:`,
      });
    // The SDK names a body it could not parse "UnknownError" (or "Unknown" for a HEAD, which has none).
    const known = !!e.name && !['UnknownError', 'Unknown', 'Error'].includes(e.name);
    const said = e.message && e.message !== e.name && !/^Unknown(Error)?$/.test(e.message) ? serverSaid(e.message) : '';
    const err = new Error(
      `S3 at ${where} answered HTTP ${status ?? '(no status)'}${known ? ` ${e.name}` : ' with no S3 error code'}${said ? `; ${said}` : ''}`,
    );
    return Object.assign(err, { $metadata: e.$metadata });
  }
  const err = e as Error & { code?: string };
  if (err?.name === 'TimeoutError') {
    const connect = /establish a connection/.test(err.message);
    const ms = connect ? timeouts.connectMs : timeouts.idleMs;
    return new PublishError(
      `publish target "${name}": S3 at ${where} ${connect ? `did not accept a connection within ${ms / 1000} s (timeout.connect)` : `stopped answering: no bytes moved for ${ms / 1000} s (timeout.idle)`}`,
      { fix: `check the endpoint and that the server is up; raise timeout: in the target if it is just slow` },
    );
  }
  const code = err?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  if (code && /^E[A-Z]+$/.test(code)) return new Error(`cannot reach S3 at ${where} (${code}: ${err.message})`);
  return e;
}

export function s3Client(target: S3Target, creds: S3Credentials, timeouts: Timeouts): S3Client {
  return new S3Client({
    region: target.region,
    endpoint: target.endpoint,
    forcePathStyle: target.force_path_style,
    credentials: {
      accessKeyId: creds.accessKeyId,
      secretAccessKey: creds.secretAccessKey,
      sessionToken: creds.sessionToken,
    },
    // Checksums are asked for explicitly (SHA-256 per part), not the SDK's default CRC32 some servers reject.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 4,
    // Without these a server that accepts and never answers holds a request for ever. socketTimeout
    // is the SDK's idle timeout (no byte either way), not a bound on a whole part's upload.
    requestHandler: { connectionTimeout: timeouts.connectMs, socketTimeout: timeouts.idleMs },
  });
}

export const publishS3: Publisher<S3Target> = async (target, artifact, ctx) => {
  const name = target.name ?? 's3';
  const creds = s3Credentials(target, ctx.env, name);
  const endpoint = s3EndpointUrl(target);
  ctx.credentialsTo({
    kind: 'S3',
    url: endpoint,
    from: creds.sessionToken ? `${creds.from} (and its session token)` : creds.from,
    hostFromSettings: !!target.endpoint,
  });
  const client = s3Client(target, creds, ctx.timeouts);
  const key = target.key ?? artifact.name;
  const location = `s3://${target.bucket}/${key}`;
  try {
    const existing = await withRetries('HEAD object', ctx, () => headOrNull(client, target.bucket, key, ctx.signal));
    if (existing && existing.ContentLength === artifact.size && existing.Metadata?.[digestKey] === artifact.sha256) {
      ctx.log(`${location} already holds this artifact (sha256 ${artifact.sha256.slice(0, 12)}…): nothing to send`);
      return {
        location,
        remote_digest: `sha256:${artifact.sha256}`,
        unchanged: true,
        bytes_sent: 0,
        id: existing.ETag?.replace(/"/g, ''),
      };
    }
    // Hashed as it is read for sending; a disk that is not the manifest's fails the stream at its end,
    // before CompleteMultipartUpload (or the single PutObject), so no object appears.
    const check = new ArtifactCheck(artifact);
    const source = createReadStream(artifact.path);
    const body = checkedStream(check);
    source.on('error', (e) => body.destroy(e));
    source.pipe(body);
    // The changed artifact is the cause, whatever lib-storage's abort of the upload then says.
    let bodyError: Error | undefined;
    body.on('error', (e) => {
      bodyError = e;
    });
    const upload = new Upload({
      client,
      queueSize: target.concurrency,
      partSize: target.part_size,
      leavePartsOnError: false,
      params: {
        Bucket: target.bucket,
        Key: key,
        Body: body,
        ContentType: 'application/octet-stream',
        ChecksumAlgorithm: 'SHA256',
        Metadata: objectMetadata(artifact, ctx.arch),
      },
    });
    upload.on('httpUploadProgress', (p) => ctx.progress(p.loaded ?? 0, artifact.size));
    const onAbort = () => {
      void upload.abort();
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const startedAt = Date.now();
    try {
      await upload.done();
    } catch (e) {
      // lib-storage's own abort does not always reach the server once its signal has fired (seen on
      // Swift's s3api: the upload and its parts stayed): abort it here, without the publish's signal.
      await abortLeftovers(
        client,
        target.bucket,
        key,
        (upload as unknown as { uploadId?: string }).uploadId,
        startedAt,
        ctx.log,
      );
      throw bodyError ?? e;
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      source.destroy();
    }
    ctx.signal.throwIfAborted();
    check.verify();
    const head = await headOrNull(client, target.bucket, key, ctx.signal);
    if (!head || head.ContentLength !== artifact.size || head.Metadata?.[digestKey] !== artifact.sha256) {
      throw new Error(
        `${location}: after the upload the server reports ${head ? `${head.ContentLength} bytes` : 'no object'}, not the ${artifact.size} bytes sent`,
      );
    }
    return {
      location,
      remote_digest: `sha256:${artifact.sha256}`,
      unchanged: false,
      bytes_sent: artifact.size,
      id: head.ETag?.replace(/"/g, ''),
    };
  } catch (e) {
    ctx.signal.throwIfAborted();
    throw explainS3(e, name, creds.from, target.bucket, endpoint, ctx.timeouts);
  } finally {
    client.destroy();
  }
};

/**
 * Aborts the multipart upload this publish started (its id when lib-storage exposes it, else the
 * uploads of this key initiated since it began), so no parts stay billed and invisible.
 */
async function abortLeftovers(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string | undefined,
  startedAt: number,
  log: (m: string) => void,
): Promise<void> {
  const signal = AbortSignal.timeout(30_000);
  try {
    const ids = new Set<string>(uploadId ? [uploadId] : []);
    const listed = await client
      .send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }), { abortSignal: signal })
      .catch(() => undefined);
    for (const u of listed?.Uploads ?? []) {
      if (u.Key === key && u.UploadId && (!u.Initiated || u.Initiated.getTime() >= startedAt - 60_000))
        ids.add(u.UploadId);
    }
    for (const id of ids) {
      await client
        .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: id }), { abortSignal: signal })
        .catch((e: Error) => {
          if ((e as S3ServiceException).name !== 'NoSuchUpload')
            log(`could not abort multipart upload ${id} of ${key}: ${e.message}`);
        });
    }
  } catch (e) {
    log(`could not abort the multipart upload of ${key}: ${(e as Error).message}`);
  }
}

async function headOrNull(client: S3Client, bucket: string, key: string, signal: AbortSignal) {
  try {
    return await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
  } catch (e) {
    if (
      e instanceof S3ServiceException &&
      (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404)
    )
      return null;
    throw e;
  }
}
