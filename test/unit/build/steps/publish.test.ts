// The publish step's own logic: when it runs (a publish list; also when the build is up to date), that
// it touches no VM or disk tool, and that a build without its manifest fails naming the file. Uploads
// to real servers are test/e2e/publish.test.ts's.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { publishStep } from '../../../../src/build/steps/publish.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

const oci = { type: 'oci', registry: '127.0.0.1:9', repository: 'images/unit', tags: ['latest'] };

describe('publish', () => {
  it('runs only for a build with a publish list, and also when the build is up to date', () => {
    expect(publishStep.enabled!(stepContext().ctx)).toBe(false);
    expect(publishStep.enabled!(stepContext({ build: { publish: [oci] } }).ctx)).toBe(true);
    expect(publishStep.whenUpToDate).toBe(true);
  });

  it('fails naming the manifest it needs when the output directory has none, and uses no VM or disk tool', async () => {
    const h = stepContext({ build: { publish: [oci] } });
    const { error } = await runStep(publishStep, h.ctx);
    expect(error).toContain(path.join(h.ctx.build.output_directory!, 'manifest.json'));
    expect(h.driver.calls).toEqual([]);
    expect(h.events.filter((e) => e.type === 'published')).toEqual([]);
  });
});
