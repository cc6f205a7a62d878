/**
 * Step: upload the committed artifacts to the build's `publish:` targets (src/publish/), recording in
 * manifest.json under `published` where each image now lives, and emitting a `published` event per
 * target. It runs last, on the output directory's final files, so a failed upload leaves the local
 * build complete: `kiln publish` retries it. It also runs when the build is up to date (the layer
 * cache found its artifacts in place): a rebuild that changed only the publish list, or a target
 * that has not received this artifact yet, still publishes; a target already holding the same
 * digest is a cheap no-op. The artifact key leaves the publish list out, so publishing never rebuilds.
 */
import path from 'node:path';
import type { Step } from '../step.js';
import { publishManifest } from '../../publish/runner.js';
import { usesUefi } from '../../template/schema.js';

export const publishStep: Step = {
  name: 'publish',
  whenUpToDate: true,
  enabled: (ctx) => ctx.build.publish.length > 0,
  async run(ctx) {
    const out = ctx.build.output_directory;
    await publishManifest(path.join(out, 'manifest.json'), ctx.build.publish, {
      signal: ctx.signal,
      uefi: usesUefi(ctx.build.source.firmware),
      log: (m) => ctx.log(m),
      progress: 'lines',
      // The manifest changes: the layer cache records the output again, so an identical later build
      // still finds it untouched.
      cacheDir: ctx.options.noCache ? undefined : ctx.options.cacheDir,
      onResult: (r) =>
        ctx.events.emit({
          type: 'published',
          build: ctx.build.name,
          target: r.target,
          targetType: r.type,
          ok: r.status === 'published',
          ...(r.location ? { location: r.location } : {}),
          ...(r.id ? { id: r.id } : {}),
          ...(r.remote_digest ? { remoteDigest: r.remote_digest } : {}),
          ...(r.status === 'published'
            ? { unchanged: !!r.unchanged, bytesSent: r.bytes_sent ?? 0, ms: r.duration_ms ?? 0 }
            : {}),
          ...(r.error ? { error: r.error } : {}),
        }),
    });
  },
};
