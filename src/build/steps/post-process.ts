/**
 * Step: post-processors on the staged artifacts, in order: `compress` replaces (or, with keep_input,
 * adds to) artifacts; `shell-local` runs a host command with the artifacts in its environment. They run
 * before checksums and the manifest, so those describe the final files.
 */
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { compressFile, compressionExtension } from '../../artifacts/compress.js';
import { fileDigests } from '../../cache/digest.js';
import type { PostProcessor } from '../../template/schema.js';
import { runHostCommand } from '../../provisioners/shell-local.js';

/** Packages that are already compressed archives gain nothing from another pass. */
const alreadyCompressed = new Set(['gce', 'vagrant']);

async function compress(ctx: BuildContext, p: Extract<PostProcessor, { type: 'compress' }>): Promise<void> {
  const next = [];
  for (const a of ctx.state.artifacts) {
    const wanted = p.formats
      ? p.formats.includes(a.format as never)
      : !alreadyCompressed.has(a.format) && !a.compression;
    if (!wanted) {
      next.push(a);
      continue;
    }
    const out = `${a.path}.${compressionExtension[p.algorithm]}`;
    const started = performance.now();
    await compressFile(a.path, out, p.algorithm, ctx.signal);
    const digests = await fileDigests(out, [...new Set(['sha256', ...ctx.build.checksums] as const)]);
    ctx.signal.throwIfAborted();
    const size = statSync(out).size;
    ctx.log(
      `compressed ${a.name} with ${p.algorithm}: ${a.size} -> ${size} bytes in ${Math.round(performance.now() - started)} ms`,
    );
    if (p.keep_input) next.push(a);
    else rmSync(a.path);
    next.push({
      ...a,
      name: path.basename(out),
      path: out,
      size,
      sha256: digests.sha256,
      sha512: digests.sha512,
      compression: p.algorithm,
    });
  }
  ctx.state.artifacts = next;
}

export const postProcessStep: Step = {
  name: 'post-process',
  enabled: (ctx) => ctx.build.post_processors.length > 0,
  async run(ctx) {
    for (const [i, p] of ctx.build.post_processors.entries()) {
      if (p.type === 'compress') await compress(ctx, p);
      else {
        await runHostCommand(ctx, p, `post-processor ${i + 1}`, {
          KILN_ARTIFACTS: ctx.state.artifacts.map((a) => a.path).join('\n'),
          KILN_STAGING_DIR: ctx.state.stagingDir ?? '',
        });
      }
    }
  },
};
