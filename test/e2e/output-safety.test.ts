// kiln never destroys what it did not write, through the real CLI: --force refuses an output
// directory holding foreign files before anything boots; a second build of an output being built fails
// at once naming the first; a kiln-written directory is recognised (up to date, then replaced); a
// SIGKILLed build's staging directory and claim are removed by the next build of any template.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml, writeTinyShellTemplate } from '../helpers/guest.js';
import { kiln, spawnKiln, type KilnRun } from '../helpers/kiln.js';
import { expectNoLeftovers, snapshotLeftovers } from '../helpers/leftovers.js';
import { kilnWorkDirs, stagingDirsBeside } from '../helpers/process-audit.js';
import { entriesOf } from '../../src/artifacts/manifest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-output-safety-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const claimOf = (out: string) => path.join(path.dirname(out), `.${path.basename(out)}.kiln-lock`);
const stepsStarted = (run: KilnRun) => run.events.filter((e) => e.type === 'step-start').map((e) => e.step);

describe('output directories kiln did not write', () => {
  it('--force refuses a directory with foreign files before any disk or VM work, naming them, and leaves nothing', async () => {
    const { file, out } = writeTinyShellTemplate(dir, 'osafe-foreign', ["'true'"]);
    mkdirSync(out, { recursive: true });
    for (let i = 10; i < 22; i++) writeFileSync(path.join(out, `photo${i}.jpg`), 'mine');
    const before = snapshotLeftovers({ build: 'osafe-foreign', outputDir: out });
    const run = await kiln(['build', file, '--force', '--events=json']);
    expect(run.exitCode, run.stderr).toBe(1);
    expect(run.stderr).toContain(
      `output directory ${out} already exists and holds 12 entries kiln did not write (it has no manifest.json): photo10.jpg, photo11.jpg`,
    );
    expect(run.stderr).toContain('photo19.jpg, and 2 more');
    expect(run.stderr).toContain('fix: move those out of it');
    expect(stepsStarted(run)).not.toContain('create disk');
    expectNoLeftovers(before);
    expect(existsSync(claimOf(out))).toBe(false);
  });

  it("a SIGKILLed build's staging directory and claim are removed by the next build of another template, which says so", async () => {
    const tmp = path.join(dir, 'tmp');
    mkdirSync(tmp);
    const env = { TMPDIR: tmp };
    const killed = writeTinyShellTemplate(dir, 'osafe-killed', ["'true'"]);
    // Killed once it holds its output directory, before anything boots.
    const child = spawnKiln(['build', killed.file, '--events=json'], {
      env,
      onEvent: (e, pid) => {
        if (e.type === 'step-start' && e.step === 'create disk') process.kill(pid, 'SIGKILL');
      },
    });
    const end = await child.done;
    expect(end.signal, end.stderr).toBe('SIGKILL');
    const staging = path.join(path.dirname(killed.out), `.osafe-killed.kiln-partial-${child.pid}`);
    const claim = claimOf(killed.out);
    expect(stagingDirsBeside(killed.out)).toEqual([staging]);
    expect(readFileSync(claim, 'utf8')).toBe(String(child.pid));
    const [workDir] = kilnWorkDirs(tmp, 'osafe-killed');

    // Another template, which stops at its own output directory (it exists): the sweep comes first.
    const other = writeTinyShellTemplate(dir, 'osafe-other', ["'true'"]);
    mkdirSync(other.out, { recursive: true });
    const next = await kiln(['build', other.file], env);
    expect(next.exitCode, next.stderr).toBe(1);
    expect(next.stderr).toMatch(/output directory .*osafe-other already exists/);
    expect(next.stderr).toContain(`removed ${staging}, a partial output left by a kiln process that no longer exists`);
    expect(next.stderr).toContain(
      `removed ${claim}, the claim on an output directory left by a kiln process that no longer exists`,
    );
    expect(next.stderr).toContain(`removed ${workDir}, left by a kiln process that no longer exists`);
    expect(stagingDirsBeside(killed.out)).toEqual([]);
    expect(existsSync(claim)).toBe(false);
    expect(kilnWorkDirs(tmp)).toEqual([]);
  }, 120_000);
});

describe('an output directory kiln wrote', () => {
  it("is claimed for the whole build, recognised as kiln's when up to date, and replaced with --force", async () => {
    const out = path.join(dir, 'out', 'osafe-real');
    const file = path.join(dir, 'osafe-real.yaml');
    writeFileSync(
      file,
      `
variables:
  note: { default: first }
builds:
  - name: osafe-real
    output_directory: ${out}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo "\${var.note}" > /root/note']
    outputs:
      - format: qcow2
`,
    );
    const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };

    // A second build of the same output while the first one runs fails at once, naming it.
    let second: Promise<KilnRun> | undefined;
    const first = spawnKiln(['build', file, '--events=json'], {
      env,
      onEvent: (e) => {
        if (e.type === 'step-start' && e.step === 'wait for SSH') second ??= kiln(['build', file, '--force'], env);
      },
    });
    const firstEnd = await first.done;
    expect(firstEnd.exitCode, firstEnd.stderr.slice(-3000)).toBe(0);
    expect(second, 'the first build never reached "wait for SSH"').toBeDefined();
    const refused = await second!;
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      `output directory ${out} is being built by another kiln right now (pid ${first.pid})`,
    );
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.files).toEqual([
      'SHA256SUMS',
      'osafe-real.cdx.json',
      'osafe-real.provenance.json',
      'osafe-real.qcow2',
      'osafe-real.spdx.json',
    ]);
    expect(existsSync(claimOf(out))).toBe(false);

    // Unchanged inputs: up to date, nothing replaced.
    const same = await kiln(['build', file, '--force'], env);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.stderr).toContain('up to date');
    expect(JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'))).toEqual(manifest);

    // Changed inputs, and a file of someone else's in it: refused before anything boots.
    writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const foreign = await kiln(['build', file, '--force', '--var', 'note=second', '--events=json'], env);
    expect(foreign.exitCode).toBe(1);
    expect(foreign.stderr).toContain('holds 1 entry kiln did not write: notes.txt');
    expect(stepsStarted(foreign)).not.toContain('create disk');
    rmSync(path.join(out, 'notes.txt'));

    const replaced = await kiln(['build', file, '--force', '--var', 'note=second'], env);
    expect(replaced.exitCode, replaced.stderr.slice(-3000)).toBe(0);
    const after = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(after.variables).toEqual({ note: 'second' });
    expect(entriesOf(out)).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'osafe-real.cdx.json',
      'osafe-real.provenance.json',
      'osafe-real.qcow2',
      'osafe-real.spdx.json',
    ]);
    expect(stagingDirsBeside(out)).toEqual([]);
  }, 600_000);
});
