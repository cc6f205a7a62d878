// Post-processors on staged artifacts: compress replaces an artifact by its compressed file (digested
// again); shell-local runs with the artifacts in its environment and fails the step on a bad exit.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { postProcessStep } from '../../../../src/build/steps/post-process.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

function staged(postProcessors: unknown[]) {
  const h = stepContext({ build: { post_processors: postProcessors } });
  const file = path.join(h.dir, 'unit.raw');
  writeFileSync(file, Buffer.alloc(64 << 10));
  h.ctx.state.stagingDir = h.dir;
  h.ctx.state.artifacts = [
    { name: 'unit.raw', path: file, format: 'raw', size: 64 << 10, virtualSize: 64 << 10, sha256: 'x' },
  ];
  return { h, file };
}

describe('post-process', () => {
  it('compress replaces the artifact by its compressed file, digested and measured', async () => {
    const { h, file } = staged([{ type: 'compress', algorithm: 'gzip' }]);
    expect((await runStep(postProcessStep, h.ctx)).error).toBeUndefined();
    const [a] = h.ctx.state.artifacts;
    expect(a).toMatchObject({ name: 'unit.raw.gz', path: `${file}.gz`, compression: 'gzip', format: 'raw' });
    expect(a!.size).toBeLessThan(64 << 10);
    expect(a!.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('shell-local sees the artifacts; a failing one fails the step with its label', async () => {
    const { h, file } = staged([
      { type: 'shell-local', inline: ['echo "$KILN_ARTIFACTS" > "$KILN_STAGING_DIR/seen"'] },
      { type: 'shell-local', inline: ['exit 4'] },
    ]);
    const { error } = await runStep(postProcessStep, h.ctx);
    expect(readFileSync(path.join(h.dir, 'seen'), 'utf8')).toBe(`${file}\n`);
    expect(error).toMatch(/^post-processor 2: exited with 4/);
  });
});
