/**
 * Step: write every output from the captured disk, two at a time (more would only fight over the same
 * disk), then check each with qemu-img, measure it and digest it, the three reading the new file at once.
 */
import path from 'node:path';
import { mkdirSync, statSync, statfsSync } from 'node:fs';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import { artifactName, planFor } from '../../template/output-formats.js';
import { writePackage } from '../../artifacts/packages.js';
import { fileDigests } from '../../cache/digest.js';
import { formatBytes } from '../../template/units.js';
import { usesUefi, type OutputConfig } from '../../template/schema.js';
import { KilnError } from '../../util/errors.js';

/** Where an output is staged: outputs bound for another directory get a sub-folder of their own. */
export function stagedPath(stagingDir: string, index: number, name: string, elsewhere: boolean): string {
  return elsewhere ? path.join(stagingDir, `.elsewhere-${index}`, name) : path.join(stagingDir, name);
}

/** Runs tasks with at most `limit` in flight; the first failure rejects (the others finish first). */
export async function withLimit<T>(limit: number, tasks: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < tasks.length && failure === undefined) {
      const i = next++;
      try {
        results[i] = await tasks[i]!();
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure !== undefined) throw failure;
  return results;
}

/** qemu-img reports a full disk in words; Node's own writes (packaged outputs) with a code. */
function isDiskFull(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOSPC' || /No space left on device|ENOSPC/.test((e as Error).message);
}

function diskFullError(e: Error, finalPath: string, stagedAt: string): Error {
  // Its free space says nothing here (the partial file still fills it); its size tells a small tmpfs.
  let size = '';
  try {
    const fs = statfsSync(path.dirname(stagedAt));
    size = `, on a file system of ${formatBytes(fs.blocks * fs.bsize)}`;
  } catch {
    /* the figure is a courtesy */
  }
  return new Error(
    `disk full (ENOSPC) while writing ${finalPath} (staged as ${stagedAt}${size}); the partial output is removed\n` +
      `  fix: free space on the file system of ${path.dirname(finalPath)}, or set output_directory to one with room\n  ${e.message.split('\n')[0]}`,
  );
}

async function produce(ctx: BuildContext, o: OutputConfig, index: number): Promise<void> {
  const name = artifactName(ctx.build.name, o);
  const dst = stagedPath(need(ctx.state, 'stagingDir'), index, name, Boolean(o.directory));
  try {
    await write(ctx, o, index, name, dst);
  } catch (e) {
    if (!isDiskFull(e)) throw e;
    throw diskFullError(e as Error, path.join(o.directory ?? ctx.build.output_directory, name), dst);
  }
}

async function write(ctx: BuildContext, o: OutputConfig, index: number, name: string, dst: string): Promise<void> {
  const disk = need(ctx.state, 'disk');
  const plan = planFor(o);
  mkdirSync(path.dirname(dst), { recursive: true });
  const started = performance.now();
  const onProgress = (percent: number) =>
    ctx.events.emit({ type: 'progress', build: ctx.build.name, task: `convert ${name}`, percent });
  const algorithms = [...new Set(['sha256', ...ctx.build.checksums] as const)];
  let virtualSize: number;
  let digests: Partial<Record<'sha256' | 'sha512', string>> & { sha256: string };
  if (plan.kind === 'disk') {
    await ctx.driver.convert(disk.path, disk.format, dst, plan.qemuFormat, {
      compress: plan.compress,
      options: plan.options,
      onProgress,
      signal: ctx.signal,
    });
    // The check, the size query and the digest read the new file at once (its pages are still cached):
    // one pass of wall time instead of three in a row.
    const [checked, info, sums] = await Promise.all([
      plan.checkable ? ctx.driver.check(dst, plan.qemuFormat, ctx.signal) : Promise.resolve({ ok: true, output: '' }),
      ctx.driver.imageInfo(dst, plan.qemuFormat, false, ctx.signal),
      fileDigests(dst, algorithms),
    ]);
    if (!checked.ok) throw new Error(`qemu-img check failed for ${name}:\n${checked.output}`);
    virtualSize = info.virtualSize;
    digests = sums;
  } else {
    const src = ctx.build.source;
    await writePackage(plan.packageFormat, {
      source: disk.path,
      sourceFormat: disk.format,
      out: dst,
      name: path.basename(name, `.${plan.extension}`),
      cpus: src.cpus,
      memoryMiB: src.memory,
      firmware: usesUefi(src.firmware) ? 'uefi' : 'bios',
      arch: src.arch,
      onProgress,
      signal: ctx.signal,
      qemuImg: ctx.driver,
      tarBinary: ctx.options.tarBinary, // KILN_QEMU_IMG / KILN_TAR reach packaging too
      vagrantfileExtra: o.vagrantfile_extra,
      include: o.include,
    });
    [virtualSize, digests] = await Promise.all([
      ctx.driver.imageInfo(disk.path, disk.format, false, ctx.signal).then((i) => i.virtualSize),
      fileDigests(dst, algorithms),
    ]);
  }
  ctx.signal.throwIfAborted();
  const { size } = statSync(dst);
  ctx.state.timings[`convert ${name}`] = performance.now() - started;
  ctx.state.artifacts[index] = {
    name,
    path: dst,
    format: o.format,
    size,
    virtualSize,
    sha256: digests.sha256,
    sha512: digests.sha512,
  };
  ctx.log(`${name}: ${formatBytes(size)} on disk, ${formatBytes(virtualSize)} virtual`, 'debug');
}

export const convertStep: Step = {
  name: 'convert disk',
  async run(ctx) {
    const disk = need(ctx.state, 'disk');
    const outputs = ctx.build.outputs;
    const names = new Set<string>();
    for (const o of outputs) {
      const key = `${o.directory ?? ''}/${artifactName(ctx.build.name, o)}`;
      if (names.has(key))
        throw new KilnError(`two outputs would both write ${artifactName(ctx.build.name, o)}`, {
          fix: `give one of them a different "name"`,
        });
      names.add(key);
    }
    if (outputs.some((o) => o.format === 'vhd')) {
      const { virtualSize } = await ctx.driver.imageInfo(disk.path, disk.format, false, ctx.signal);
      const mib = 2 ** 20;
      if (virtualSize % mib) {
        await ctx.driver.resize(disk.path, disk.format, Math.ceil(virtualSize / mib) * mib, ctx.signal);
        ctx.log('disk grown to a whole MiB for the VHD output (Azure requires it)', 'warn');
      }
    }
    await withLimit(
      2,
      outputs.map((o, i) => () => produce(ctx, o, i)),
    );
  },
};
