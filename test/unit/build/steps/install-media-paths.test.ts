// The install-media step writes cd_content files only inside its CD tree, whatever names reach it: the
// loader refuses names that climb out, and the step refuses them again where it writes.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { installMediaStep } from '../../../../src/build/steps/install-media.js';
import type { BuildContext } from '../../../../src/build/state.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-media-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Runs the step in a fresh work directory under `root`; returns it and the step's error, if any. */
async function makeMedia(
  cdContent: Record<string, string>,
  cdFiles: string[] = [],
): Promise<{ work: string; error?: string }> {
  const work = mkdtempSync(path.join(root, 'work-'));
  const ctx = {
    build: {
      source: { cd_files: cdFiles, cd_content: cdContent, cd_label: 'cidata', floppy_files: [], floppy_label: 'KILN' },
    },
    state: { workDir: work },
    buildValues: () => ({}),
  } as unknown as BuildContext;
  const error = await installMediaStep.run(ctx).then(
    () => undefined,
    (e: unknown) => (e as Error).message,
  );
  return { work, error };
}

describe('cd_content names', () => {
  it('writes a name inside the CD, sub-directories included', async () => {
    const { work, error } = await makeMedia({ 'kickstart/ks.cfg': 'text' });
    expect(error).toBeUndefined();
    expect(readFileSync(path.join(work, 'cd', 'kickstart', 'ks.cfg'), 'utf8')).toBe('text');
    expect(existsSync(path.join(work, 'cd_files.iso'))).toBe(true);
  });

  it.each(['../escape.cfg', 'a/../../escape.cfg', '/escape.cfg'])(
    'refuses %j and writes nothing outside the CD',
    async (name) => {
      const { work, error } = await makeMedia({ [name]: 'text' });
      expect(error).toMatch(
        /^cd_content ".+" names .+, outside the CD\n  fix: write it relative to the CD's root, e.g. ks.cfg or kickstart\/ks.cfg$/,
      );
      expect(error).toContain(`cd_content "${name}"`);
      expect(existsSync(path.join(work, 'escape.cfg'))).toBe(false);
      expect(existsSync('/escape.cfg')).toBe(false);
    },
  );

  it('refuses a name that leads through a symlink cd_files copied in', async () => {
    const outside = mkdtempSync(path.join(root, 'outside-'));
    const tree = path.join(root, 'tree');
    mkdirSync(tree);
    symlinkSync(outside, path.join(tree, 'out'));
    const { error } = await makeMedia({ 'tree/out/pwned.cfg': 'text' }, [tree]);
    expect(error).toBe(
      `cd_content "tree/out/pwned.cfg" leads through a symlink to ${outside}, outside the CD\n  fix: write it relative to the CD's root, e.g. ks.cfg or kickstart/ks.cfg`,
    );
    expect(existsSync(path.join(outside, 'pwned.cfg'))).toBe(false);
  });
});
