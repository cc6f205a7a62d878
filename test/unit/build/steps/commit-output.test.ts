// Claim, convert (fake driver) and commit run together: the manifest names the driver's qemu-img
// version, the output appears in one rename, and the claim's cleanup runs last, also on failure.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { outputDirStep } from '../../../../src/build/steps/output-dir.js';
import { convertStep } from '../../../../src/build/steps/convert.js';
import { commitOutputStep } from '../../../../src/build/steps/commit-output.js';
import { runSteps } from '../../../../src/build/runner.js';
import { removeStepDirs, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

function building() {
  const h = stepContext({ build: { outputs: [{ format: 'qcow2' }] } });
  h.ctx.state.disk = { path: '/w/disk.qcow2', format: 'qcow2', virtualSize: 1 << 30 };
  h.driver.onConvert = (dst) => writeFileSync(dst, 'qcow2 bytes');
  return h;
}

describe('write manifest and commit output', () => {
  it("writes SHA256SUMS and manifest.json (with the driver's qemu-img version) and renames the output into place", async () => {
    const h = building();
    const r = await runSteps([outputDirStep, convertStep, commitOutputStep], h.ctx);
    expect(r.ok, r.error?.message).toBe(true);
    const out = h.ctx.build.output_directory!;
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'unit.cdx.json',
      'unit.provenance.json',
      'unit.qcow2',
      'unit.spdx.json',
    ]);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(JSON.stringify(manifest)).toContain('8.2.2');
    expect(h.driver.callsTo('qemuImgVersion')).toHaveLength(1);
    expect(h.ctx.state.artifacts[0]!.path).toBe(path.join(out, 'unit.qcow2'));
    // Nothing of the claim or the staging directory is left beside it.
    expect(readdirSync(path.dirname(out)).filter((n) => n.includes('kiln-'))).toEqual([]);
  });

  it("a failure in commit leaves no output and runs the claim's cleanup (no staging, no claim left)", async () => {
    const h = building();
    h.driver.fail('qemuImgVersion', new Error('qemu-img --version failed: gone'));
    const r = await runSteps([outputDirStep, convertStep, commitOutputStep], h.ctx);
    expect(r).toMatchObject({ ok: false, failedStep: 'write manifest and commit output' });
    expect(r.error!.message).toBe('qemu-img --version failed: gone');
    const out = h.ctx.build.output_directory!;
    // The claim, the staging directory and the parent directory the claim made are all gone.
    expect(existsSync(path.dirname(out))).toBe(false);
    expect(h.events.filter((e) => e.type === 'cleanup').map((e) => (e as { step: string }).step)).toEqual([
      'prepare output directory',
    ]);
  });
});
