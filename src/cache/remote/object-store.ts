/**
 * What the remote layer cache needs of an object store: put, get, list, delete. The S3 implementation
 * is s3.ts; the unit tests use an in-memory one that misbehaves the ways real stores do (conditions
 * ignored or refused, late listings, lost or truncated objects).
 */
import type { Readable } from 'node:stream';

export interface StoredObject {
  key: string;
  size: number;
  modified: Date;
}

/** A conditional create the store refused because the object exists (HTTP 412). */
export class PreconditionFailed extends Error {}
/** The store does not implement what was asked (HTTP 501: Swift's s3api for If-None-Match). */
export class NotImplementedByStore extends Error {}

export interface ObjectStore {
  /** Where it is, for messages (`s3://bucket/prefix`); never holds a credential. */
  readonly location: string;
  /**
   * Writes `key` from `body` (a stream is read once; a large one goes up in parts, aborted on a failure
   * or when `signal` aborts, so no partial upload is left). `ifNoneMatch`: create only if absent (may be
   * ignored, or refused with NotImplementedByStore: the caller never depends on it).
   */
  put(
    key: string,
    body: Buffer | Readable,
    o?: { size?: number; ifNoneMatch?: boolean; signal?: AbortSignal },
  ): Promise<void>;
  /** The object's bytes as a stream, or undefined when it does not exist. */
  get(key: string, signal?: AbortSignal): Promise<Readable | undefined>;
  /** Objects whose key starts with `prefix` (a listing may lag behind recent writes). */
  list(prefix: string, signal?: AbortSignal): Promise<StoredObject[]>;
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /** Multipart uploads started and not finished under `prefix`, where the store can tell. */
  pendingUploads?(prefix: string, signal?: AbortSignal): Promise<{ key: string; uploadId: string; started?: Date }[]>;
  /** Aborts one (prune: uploads left by a builder that died). */
  abortUpload?(key: string, uploadId: string, signal?: AbortSignal): Promise<void>;
}
