/**
 * The artifact a target sends must be the one manifest.json describes: each target hashes the bytes
 * as it reads them for sending (one read of the disk) and checks the sha256 and size before the
 * remote side would make the upload visible (S3's CompleteMultipartUpload, OCI's PUT ?digest=, the
 * end of Glance's data, Azure's digest metadata). A disk changed after the build is never labelled
 * with the build's stale digest, so no later publish can take it for "already there".
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import type { PublishArtifact } from './target.js';
import { PublishError } from './target.js';

export class ArtifactChanged extends PublishError {}

function changed(artifact: PublishArtifact, what: string): ArtifactChanged {
  return new ArtifactChanged(
    `${artifact.path} is not the artifact manifest.json describes: ${what}; nothing was published from it\n  fix: rebuild it (kiln build), or run kiln verify on the manifest to see what changed`,
  );
}

/** Refuses before sending anything when the file's size already differs (a stat, no read). */
export function checkSize(artifact: PublishArtifact): void {
  let size: number;
  try {
    size = statSync(artifact.path).size;
  } catch (e) {
    throw new PublishError(
      `${artifact.path}: cannot read the artifact (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      { fix: `rebuild it (kiln build), or publish from the output directory the manifest lists` },
    );
  }
  if (size !== artifact.size) throw changed(artifact, `it is ${size} bytes, manifest.json records ${artifact.size}`);
}

/** A running sha256 (and optionally more) of what is read, checked against the manifest at the end. */
export class ArtifactCheck {
  private readonly sha256 = createHash('sha256');
  private readonly extra: Map<string, ReturnType<typeof createHash>>;
  bytes = 0;
  constructor(
    readonly artifact: PublishArtifact,
    extraAlgorithms: string[] = [],
  ) {
    this.extra = new Map(extraAlgorithms.map((a) => [a, createHash(a)]));
  }
  update(chunk: Buffer): void {
    this.sha256.update(chunk);
    for (const h of this.extra.values()) h.update(chunk);
    this.bytes += chunk.length;
  }
  /** Throws ArtifactChanged naming the file, the expected and the actual sha256; returns the extra digests. */
  verify(): Record<string, string> {
    if (this.result) return this.result;
    const actual = (this.actual ??= this.sha256.digest('hex'));
    if (this.bytes !== this.artifact.size || actual !== this.artifact.sha256) {
      throw changed(
        this.artifact,
        `its sha256 is ${actual}${this.bytes !== this.artifact.size ? ` (${this.bytes} bytes)` : ''}, manifest.json records ${this.artifact.sha256}${this.bytes !== this.artifact.size ? ` (${this.artifact.size} bytes)` : ''}`,
      );
    }
    this.result = Object.fromEntries([...this.extra].map(([a, h]) => [a, h.digest('hex')]));
    return this.result;
  }
  private actual?: string;
  private result?: Record<string, string>;
}

/**
 * A pass-through that hashes what flows and fails the stream at its end when the artifact changed.
 * It holds back the latest chunk until the next one arrives, and the last one until the check
 * passed: the remote side never receives the whole body of an artifact that is not the manifest's,
 * so it cannot complete the upload before the failure closes the connection.
 */
export function checkedStream(check: ArtifactCheck): Transform {
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      check.update(chunk);
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb: TransformCallback) {
      try {
        check.verify();
      } catch (e) {
        cb(e as Error);
        return;
      }
      cb(null, held);
    },
  });
}
