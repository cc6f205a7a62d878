/**
 * Step: write SHA256SUMS and manifest.json, then move the staged artifacts into place in one rename.
 * With --force an existing output directory is replaced only now, after everything succeeded.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { buildManifest, writeSums } from '../../artifacts/manifest.js';
import { qemuImgVersion } from '../../qemu/qemu-img.js';

export const commitOutputStep: Step = {
  name: 'write manifest and commit output',
  async run(ctx) {
    const staging = need(ctx.state, 'stagingDir');
    const out = ctx.build.output_directory!;
    // Final location of each staged file, for the manifest.
    const finalPathOf = (staged: string) => {
      const rel = path.relative(staging, staged);
      const m = /^\.elsewhere-(\d+)\/(.+)$/.exec(rel);
      if (m) return path.join(ctx.build.outputs[Number(m[1])]!.directory!, m[2]!);
      return path.join(out, rel);
    };
    const inOutputDir = ctx.state.artifacts.filter((a) => path.dirname(a.path) === staging);
    for (const algorithm of ctx.build.checksums) writeSums(staging, algorithm, inOutputDir);
    const manifest = buildManifest(ctx, ctx.state.startedAt, finalPathOf, await qemuImgVersion(ctx.signal));
    writeFileSync(path.join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

    // The renames below commit the output: an interrupt that came before them must not leave one.
    ctx.signal.throwIfAborted();
    // Outputs bound for other directories move first; any clash is found before the main rename.
    for (const entry of readdirSync(staging)) {
      const m = /^\.elsewhere-(\d+)$/.exec(entry);
      if (!m) continue;
      const dir = ctx.build.outputs[Number(m[1])]!.directory!;
      mkdirSync(dir, { recursive: true });
      for (const f of readdirSync(path.join(staging, entry))) {
        const dst = path.join(dir, f);
        if (existsSync(dst) && !ctx.options.force) throw new Error(`${dst} already exists\n  fix: remove it or run with --force`);
        renameSync(path.join(staging, entry, f), dst);
      }
      rmSync(path.join(staging, entry), { recursive: true, force: true });
    }
    if (existsSync(out)) {
      const trash = `${staging}.old`;
      renameSync(out, trash);
      renameSync(staging, out);
      rmSync(trash, { recursive: true, force: true });
    } else {
      mkdirSync(path.dirname(out), { recursive: true });
      renameSync(staging, out);
    }
    ctx.state.artifacts = ctx.state.artifacts.map((a) => ({ ...a, path: finalPathOf(a.path) }));
    for (const a of ctx.state.artifacts) ctx.events.emit({ type: 'artifact', build: ctx.build.name, path: a.path, format: a.format, size: a.size, sha256: a.sha256 });
    const layers = ctx.state.layers;
    if (layers?.artifactKey) {
      // Lets an identical later build find these files and stop at once, if nobody has touched them.
      const written = [...ctx.state.artifacts.map((a) => a.path), ...readdirSync(out).filter((f) => /^(manifest\.json|SHA(256|512)SUMS)$/.test(f)).map((f) => path.join(out, f))];
      layers.store.recordArtifacts(layers.artifactKey, out, written);
    }
  },
};
