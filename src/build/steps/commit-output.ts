/**
 * Step: write SHA256SUMS and manifest.json, then move the staged artifacts into place in one rename.
 * With --force an existing output directory is replaced only now, after everything succeeded, and only
 * if kiln wrote all of it: it is checked again here (someone may have put a file in it during the
 * build), after it is moved aside, so nothing can slip in between the check and the replacement.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import { maskValues } from '../../ui/events.js';
import {
  buildManifest,
  checksumFileOf,
  checksumFiles,
  entriesOf,
  outputOwnership,
  recordedVariables,
  removeKilnOutput,
  writeSums,
} from '../../artifacts/manifest.js';
import { writeSupplyChain } from '../../artifacts/supply-chain.js';
import { kilnVersion } from '../../version.js';
import { checkElsewhereTarget, foreignOutputError } from '../output-guard.js';
import { KilnError } from '../../util/errors.js';

const elsewherePattern = /^\.elsewhere-(\d+)$/;

/** Outputs bound for other directories, staged in `.elsewhere-N`: where each file goes. */
function elsewhereMoves(ctx: BuildContext, staging: string): { from: string; to: string }[] {
  const moves: { from: string; to: string }[] = [];
  for (const entry of readdirSync(staging)) {
    const m = elsewherePattern.exec(entry);
    if (!m) continue;
    const dir = ctx.build.outputs[Number(m[1])]!.directory!;
    for (const f of readdirSync(path.join(staging, entry)))
      moves.push({ from: path.join(staging, entry, f), to: path.join(dir, f) });
  }
  return moves;
}

export const commitOutputStep: Step = {
  name: 'write manifest and commit output',
  async run(ctx) {
    const staging = need(ctx.state, 'stagingDir');
    const out = ctx.build.output_directory;
    // Final location of each staged file, for the manifest.
    const finalPathOf = (staged: string) => {
      const rel = path.relative(staging, staged);
      const m = /^\.elsewhere-(\d+)\/(.+)$/.exec(rel);
      if (m) return path.join(ctx.build.outputs[Number(m[1])]!.directory!, m[2]!);
      return path.join(out, rel);
    };
    const inOutputDir = ctx.state.artifacts.filter((a) => path.dirname(a.path) === staging);
    for (const algorithm of ctx.build.checksums) writeSums(staging, algorithm, inOutputDir);
    const qemuImgVersion = await ctx.driver.qemuImgVersion(ctx.signal);
    const secrets = ctx.template.variables.secrets ?? [];
    // SBOMs, provenance and (sign:) signatures, before the file list: they are the build's output too.
    const supplyChain = await writeSupplyChain(staging, ctx, {
      artifacts: ctx.state.artifacts,
      variables: recordedVariables(ctx.template.variables),
      qemuImgVersion,
      kilnVersion,
      checksumFiles: ctx.build.checksums.map(checksumFileOf),
      mask: (v) => maskValues(v, secrets),
      signal: ctx.signal,
      recordedPackages: ctx.options.airgap?.replayed?.(),
    });
    // Everything that will be in the output directory, including what a shell-local post-processor put in the staging directory.
    const files = entriesOf(staging).filter((e) => !elsewherePattern.test(e.split('/')[0]!) && e !== 'manifest.json');
    const manifest = buildManifest(ctx, ctx.state.startedAt, finalPathOf, qemuImgVersion, files, supplyChain);
    // Secrets masked in every value (a base image URL with a token in it), not in the paths of files that exist.
    writeFileSync(
      path.join(staging, 'manifest.json'),
      JSON.stringify(maskValues(manifest, secrets, ['artifacts', 'files']), null, 2) + '\n',
    );

    // The renames below commit the output: an interrupt that came before them must not leave one.
    ctx.signal.throwIfAborted();
    // Every clash is found before anything moves.
    const moves = elsewhereMoves(ctx, staging);
    for (const { to } of moves) checkElsewhereTarget(to, ctx.options.force);
    if (existsSync(out) && !ctx.options.force) {
      throw new KilnError(`output directory ${out} appeared during the build, and is left as it is`, {
        fix: `remove it, or run with --force (which replaces it if kiln wrote it)`,
      });
    }
    const trash = `${staging}.old`;
    let replacing = false;
    try {
      if (existsSync(out)) {
        renameSync(out, trash);
        replacing = true;
        // Checked once it is aside: a file put in it from now on is not deleted either (see removeKilnOutput).
        const ownership = outputOwnership(trash, out);
        if (ownership.foreign.length) throw foreignOutputError(out, ownership, 'changed during the build: it now');
      }
      for (const { to } of moves) mkdirSync(path.dirname(to), { recursive: true });
      for (const { from, to } of moves) renameSync(from, to);
      for (const entry of readdirSync(staging)) if (elsewherePattern.test(entry)) rmdirSync(path.join(staging, entry));
      renameSync(staging, out);
    } catch (e) {
      if (replacing) renameSync(trash, out);
      throw e;
    }
    if (replacing) {
      const stayed = removeKilnOutput(trash, out);
      if (stayed.length) ctx.log(`left ${trash}: it holds ${stayed.join(', ')}, which kiln did not write`, 'warn');
    }
    ctx.state.artifacts = ctx.state.artifacts.map((a) => ({ ...a, path: finalPathOf(a.path) }));
    for (const a of ctx.state.artifacts)
      ctx.events.emit({
        type: 'artifact',
        build: ctx.build.name,
        path: a.path,
        format: a.format,
        size: a.size,
        sha256: a.sha256,
      });
    const layers = ctx.state.layers;
    if (layers?.artifactKey) {
      // Lets an identical later build find these files and stop at once, if nobody has touched them.
      const ours = new Set(['manifest.json', ...checksumFiles, ...supplyChain.documents.map((d) => d.name)]);
      const written = [
        ...ctx.state.artifacts.map((a) => a.path),
        ...readdirSync(out)
          .filter((f) => ours.has(f))
          .map((f) => path.join(out, f)),
      ];
      layers.store.recordArtifacts(layers.artifactKey, out, written);
    }
  },
};
