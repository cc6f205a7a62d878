// The install media step (runs xorriso and mkfs.vfat/mcopy, which make setup installs): enabled only
// when the build has cd or floppy files, and what it made recorded in the state. Its path checks are in
// test/unit/build/steps/install-media-paths.test.ts.
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { installMediaStep } from '../../../../src/build/steps/install-media.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('make install media', () => {
  it('applies only to builds with cd_files, cd_content or floppy_files', () => {
    expect(installMediaStep.enabled!(stepContext().ctx)).toBe(false);
    expect(installMediaStep.enabled!(stepContext({ source: { cd_content: { 'ks.cfg': 'x' } } }).ctx)).toBe(true);
  });

  it('makes the CD and the floppy in the work directory and records them', async () => {
    const h = stepContext({ source: { cd_content: { 'ks.cfg': 'name ${build.name}' } } });
    const file = path.join(h.dir, 'answers.txt');
    writeFileSync(file, 'answers');
    h.ctx.build.source.floppy_files = [file];
    expect((await runStep(installMediaStep, h.ctx)).error).toBeUndefined();
    expect(h.ctx.state.cdFilesIso).toBe(path.join(h.ctx.state.workDir, 'cd_files.iso'));
    expect(h.ctx.state.floppyImage).toBe(path.join(h.ctx.state.workDir, 'floppy.img'));
    expect(existsSync(h.ctx.state.cdFilesIso!) && existsSync(h.ctx.state.floppyImage!)).toBe(true);
  });

  it('a floppy file that does not exist fails naming it', async () => {
    const h = stepContext();
    h.ctx.build.source.floppy_files = ['/nonexistent/file'];
    expect((await runStep(installMediaStep, h.ctx)).error).toMatch(
      /^copying \/nonexistent\/file to the floppy failed: /,
    );
  });
});
