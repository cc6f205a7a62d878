// The cloud-init seed step: over HTTP under a secret prefix (masked in events), or as a cidata ISO.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cloudInitSeedStep } from '../../../../src/build/steps/cloud-init-seed.js';
import { httpServerStep } from '../../../../src/build/steps/http-server.js';
import { sshKeysStep } from '../../../../src/build/steps/ssh-keys.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { planOf } from '../../../helpers/plan.js';
import { findExecutable } from '../../../../src/qemu/process.js';

afterAll(removeStepDirs);

describe('render cloud-init seed', () => {
  it('http delivery: the seed is served under a secret prefix, which never shows in events', async () => {
    const h = stepContext({ source: { cloud_init: { delivery: 'http' } } });
    await runStep(sshKeysStep, h.ctx);
    const { cleanup } = await runStep(httpServerStep, h.ctx);
    try {
      expect((await runStep(cloudInitSeedStep, h.ctx)).error).toBeUndefined();
      const seed = h.ctx.state.seed!;
      expect(seed.kind).toBe('http');
      const url = (seed as { url: string }).url;
      expect(url).toMatch(/^http:\/\/10\.0\.2\.2:\d+\/kiln-seed-[0-9a-f]{32}\/$/);
      const local = url.replace('10.0.2.2', '127.0.0.1');
      expect(await (await fetch(`${local}meta-data`)).text()).toContain(h.ctx.state.cloudInitInstanceId!);
      expect(await (await fetch(`${local}user-data`)).text()).toContain(h.ctx.state.buildKey!.publicKey);
      h.ctx.log(`seed at ${url}`);
      expect(h.said().at(-1)).not.toMatch(/[0-9a-f]{32}/);
    } finally {
      await cleanup!();
    }
  });

  it('without an earlier key step the order error names what is missing', async () => {
    const h = stepContext({ source: { cloud_init: {} } });
    expect((await runStep(cloudInitSeedStep, h.ctx)).error).toMatch(/buildKey/);
  });

  it('cdrom delivery writes a cidata ISO into the work directory', async () => {
    const h = stepContext({ source: { cloud_init: { delivery: 'cdrom' } } });
    await runStep(sshKeysStep, h.ctx);
    const { error } = await runStep(cloudInitSeedStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.ctx.state.seed).toEqual({ kind: 'cdrom', iso: path.join(h.ctx.state.workDir, 'cidata.iso') });
    expect(existsSync(path.join(h.ctx.state.workDir, 'cidata.iso'))).toBe(true);
    // It holds the host private key kiln injects: only kiln's user reads it.
    expect(statSync(path.join(h.ctx.state.workDir, 'cidata.iso')).mode & 0o777).toBe(0o600);
  });

  it("delivery unset: kiln's choice (a cidata CD where xorriso is installed), said in one line", async () => {
    const h = stepContext({ source: { cloud_init: {} } });
    await runStep(sshKeysStep, h.ctx);
    const { cleanup } = await runStep(httpServerStep, h.ctx);
    try {
      expect((await runStep(cloudInitSeedStep, h.ctx)).error).toBeUndefined();
      const expected = findExecutable('xorriso') ? 'cdrom' : 'http';
      expect(h.ctx.state.seed!.kind).toBe(expected);
      expect(h.said().filter((l) => /the seed reaches the guest through/.test(l))).toHaveLength(1);
    } finally {
      await cleanup!();
    }
  });
});

describe('render cloud-init seed: the bootcmd that wipes old host keys', () => {
  for (const resumed of [false, true]) {
    it(`is in the seed only when the disk is a cached layer (a plan resuming at a layer: ${resumed})`, async () => {
      const h = stepContext({
        source: { cloud_init: { delivery: 'cdrom' } },
        state: planOf(resumed ? 'resume' : 'fresh'),
      });
      await runStep(sshKeysStep, h.ctx);
      expect((await runStep(cloudInitSeedStep, h.ctx)).error).toBeUndefined();
      const userData = readFileSync(path.join(h.ctx.state.workDir, 'cidata', 'user-data'), 'utf8');
      expect(userData.includes('kiln-wipe-host-keys')).toBe(resumed);
    });
  }
});
