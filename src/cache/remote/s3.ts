/**
 * The remote layer cache on S3 or any S3-compatible store (s3rver, Swift's s3api, MinIO, Ceph RGW).
 * Endpoint, region and credentials come the way the AWS CLI and SDK read them (AWS_ENDPOINT_URL,
 * AWS_REGION, AWS_PROFILE and its files, AWS_ACCESS_KEY_ID...): kiln adds no variable of its own.
 * A custom endpoint is addressed path-style (bucket in the path), as such stores expect.
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { NotImplementedByStore, PreconditionFailed, type ObjectStore, type StoredObject } from './object-store.js';
import { KilnError } from '../../util/errors.js';

/** `s3://bucket/prefix` -> its parts; the error names the flag and the form. */
export function parseRemoteUrl(url: string, setting = '--cache-remote'): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m)
    throw new KilnError(`${setting}: "${url}" is not s3://BUCKET[/PREFIX]`, {
      fix: `name the bucket (lower case, 3-63 characters) and an optional prefix, e.g. s3://builds/kiln-cache; the endpoint comes from AWS_ENDPOINT_URL`,
    });
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { bucket: m[1]!, prefix: prefix ? `${prefix}/` : '' };
}

const statusOf = (e: unknown) => (e as S3ServiceException).$metadata?.httpStatusCode;
const notFound = (e: unknown) =>
  e instanceof S3ServiceException && (e.name === 'NoSuchKey' || e.name === 'NotFound' || statusOf(e) === 404);

/** Parts of this size go up in a multipart upload (and a smaller object in one PUT). */
const partSize = 8 * 2 ** 20;

export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(url: string, client?: S3Client) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseRemoteUrl(url));
    this.location = `s3://${this.bucket}/${this.prefix.replace(/\/$/, '')}`;
    const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    this.client =
      client ??
      new S3Client({
        forcePathStyle: endpoint !== undefined,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 4,
        requestHandler: { connectionTimeout: 15_000, socketTimeout: 120_000 },
      });
  }

  close(): void {
    this.client.destroy();
  }

  private k(key: string): string {
    return this.prefix + key;
  }

  async put(
    key: string,
    body: Buffer | Readable,
    o: { size?: number; ifNoneMatch?: boolean; signal?: AbortSignal } = {},
  ): Promise<void> {
    const Key = this.k(key);
    if (Buffer.isBuffer(body) || (o.size !== undefined && o.size < partSize)) {
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key,
            Body: body,
            ContentLength: o.size ?? (body as Buffer).length,
            ...(o.ifNoneMatch ? { IfNoneMatch: '*' } : {}),
          }),
          { abortSignal: o.signal },
        );
      } catch (e) {
        if (statusOf(e) === 412) throw new PreconditionFailed(`${Key} exists`);
        if (statusOf(e) === 501) throw new NotImplementedByStore(`${this.location}: conditional PUT not implemented`);
        throw e;
      }
      return;
    }
    const upload = new Upload({
      client: this.client,
      partSize,
      queueSize: 2,
      leavePartsOnError: false,
      params: { Bucket: this.bucket, Key, Body: body },
    });
    const onAbort = () => {
      void upload.abort();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const started = Date.now();
    try {
      await upload.done();
    } catch (e) {
      // lib-storage's own abort does not always reach the server once the signal fired (Swift's s3api
      // kept the upload and its parts): abort what this put started, with a signal of its own.
      await this.abortStarted(Key, (upload as unknown as { uploadId?: string }).uploadId, started);
      throw e;
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
    o.signal?.throwIfAborted();
  }

  private async abortStarted(Key: string, uploadId: string | undefined, since: number): Promise<void> {
    const signal = AbortSignal.timeout(30_000);
    const ids = new Set<string>(uploadId ? [uploadId] : []);
    const listed = await this.client
      .send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: Key }), { abortSignal: signal })
      .catch(() => undefined);
    for (const u of listed?.Uploads ?? [])
      if (u.Key === Key && u.UploadId && (!u.Initiated || u.Initiated.getTime() >= since - 60_000)) ids.add(u.UploadId);
    for (const UploadId of ids)
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), { abortSignal: signal })
        .catch(() => undefined);
  }

  async get(key: string, signal?: AbortSignal): Promise<Readable | undefined> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.k(key) }), {
        abortSignal: signal,
      });
      return r.Body as Readable;
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  async list(prefix: string, signal?: AbortSignal): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const r = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.k(prefix), ContinuationToken: token }),
        { abortSignal: signal },
      );
      for (const c of r.Contents ?? [])
        if (c.Key)
          out.push({
            key: c.Key.slice(this.prefix.length),
            size: c.Size ?? 0,
            modified: c.LastModified ?? new Date(0),
          });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.k(key) }), { abortSignal: signal });
  }

  async pendingUploads(
    prefix: string,
    signal?: AbortSignal,
  ): Promise<{ key: string; uploadId: string; started?: Date }[]> {
    try {
      const r = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.k(prefix) }),
        { abortSignal: signal },
      );
      return (r.Uploads ?? [])
        .filter((u) => u.Key && u.UploadId)
        .map((u) => ({ key: u.Key!.slice(this.prefix.length), uploadId: u.UploadId!, started: u.Initiated }));
    } catch (e) {
      // s3rver does not list multipart uploads.
      if (statusOf(e) === 501 || (e as Error).name === 'NotImplemented') return [];
      throw e;
    }
  }

  async abortUpload(key: string, uploadId: string, signal?: AbortSignal): Promise<void> {
    await this.client.send(
      new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.k(key), UploadId: uploadId }),
      { abortSignal: signal },
    );
  }
}
