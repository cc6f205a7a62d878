/** Step: write each output from the captured disk with qemu-img, then check and measure it. */
import path from 'node:path';
import { mkdirSync, statSync } from 'node:fs';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { check, convert, imageInfo } from '../../qemu/qemu-img.js';
import { artifactName, planFor } from '../../artifacts/formats.js';
import { fileDigest } from '../../cache/digest.js';
import { formatBytes } from '../../template/units.js';

/** Where an output is staged: outputs bound for another directory get a sub-folder of their own. */
export function stagedPath(stagingDir: string, index: number, name: string, elsewhere: boolean): string {
  return elsewhere ? path.join(stagingDir, `.elsewhere-${index}`, name) : path.join(stagingDir, name);
}

export const convertStep: Step = {
  name: 'convert disk',
  async run(ctx) {
    const disk = need(ctx.state, 'disk');
    const staging = need(ctx.state, 'stagingDir');
    const names = new Set<string>();
    for (const [i, o] of ctx.build.outputs.entries()) {
      const name = artifactName(ctx.build.name, o);
      const key = `${o.directory ?? ''}/${name}`;
      if (names.has(key)) throw new Error(`two outputs would both write ${name}\n  fix: give one of them a different "name"`);
      names.add(key);
      const plan = planFor(o);
      const dst = stagedPath(staging, i, name, Boolean(o.directory));
      mkdirSync(path.dirname(dst), { recursive: true });
      const started = performance.now();
      await convert(disk.path, disk.format, dst, plan.qemuFormat, {
        compress: plan.compress, options: plan.options,
        onProgress: (percent) => ctx.events.emit({ type: 'progress', build: ctx.build.name, task: `convert ${name}`, percent }),
      });
      const checked = await check(dst, plan.qemuFormat);
      if (!checked.ok) throw new Error(`qemu-img check failed for ${name}:\n${checked.output}`);
      const info = await imageInfo(dst, plan.qemuFormat);
      const sha256 = await fileDigest(dst);
      ctx.state.timings[`convert ${name}`] = performance.now() - started;
      const { size } = statSync(dst);
      ctx.state.artifacts.push({ name, path: dst, format: o.format, size, virtualSize: info.virtualSize, sha256 });
      ctx.log(`${name}: ${formatBytes(size)} on disk, ${formatBytes(info.virtualSize)} virtual`, 'debug');
    }
  },
};
