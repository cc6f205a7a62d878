/**
 * Step: upload the committed artifacts to the build's `publish:` targets (src/publish/), recording in
 * manifest.json under `published` where each image now lives. It runs last, on the output directory's
 * final files, so a failed upload leaves the local build complete: `kiln publish` retries it.
 */
import path from 'node:path';
import { readdirSync } from 'node:fs';
import type { Step } from '../step.js';
import { publishManifest } from '../../publish/runner.js';

export const publishStep: Step = {
  name: 'publish',
  enabled: (ctx) => ctx.build.publish.length > 0,
  async run(ctx) {
    const out = ctx.build.output_directory!;
    try {
      await publishManifest(path.join(out, 'manifest.json'), ctx.build.publish, {
        signal: ctx.signal,
        uefi: ctx.build.source.firmware === 'uefi',
        log: (m) => ctx.log(m),
        progress: 'lines',
      });
    } finally {
      // The manifest changed: record it again so an identical later build still finds its output untouched.
      const layers = ctx.state.layers;
      if (layers?.artifactKey) {
        const written = [...ctx.state.artifacts.map((a) => a.path), ...readdirSync(out).filter((f) => /^(manifest\.json|SHA(256|512)SUMS)$/.test(f)).map((f) => path.join(out, f))];
        layers.store.recordArtifacts(layers.artifactKey, out, written);
      }
    }
  },
};
