// A bad base image, end to end: the real kiln CLI refuses it in the fetch step, within seconds, with
// its real cause; QEMU never starts (no "launch QEMU" step) and nothing is left behind. Before the
// check, a truncated qcow2 booted and failed 30 s later with a silent serial console, and a text file
// booted as a raw disk until the 10-minute SSH timeout.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, writeTinyShellTemplate } from '../helpers/guest.js';
import { kiln, type KilnRun } from '../helpers/kiln.js';
import { expectNoLeftovers, snapshotLeftovers } from '../helpers/leftovers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bad-base-e2e-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** Unique build names, so leftovers are matched to this run only. */
const run = randomBytes(2).toString('hex');
const env = { KILN_CACHE_DIR: path.join(dir, 'cache'), KILN_ACCELERATOR: 'tcg' };

/** A tiny-guest template whose base_image is `base`; returns its file, build name and output directory. */
function templateWithBase(name: string, base: string): { file: string; build: string; out: string } {
  const build = `${name}-${run}`;
  const { file, out } = writeTinyShellTemplate(dir, build, ["'true'"]);
  writeFileSync(file, readFileSync(file, 'utf8').replace(/base_image: .*/, `base_image: ${base}`));
  return { file, build, out };
}

async function buildRefused(name: string, base: string): Promise<string> {
  const t = templateWithBase(name, base);
  const before = snapshotLeftovers({ build: t.build, outputDir: t.out });
  const r: KilnRun = await kiln(['build', t.file, '--events=json'], env);
  expect(r.exitCode).toBe(1);
  const steps = r.events.filter((e) => e.type === 'step-start').map((e) => e.step);
  expect(steps).toContain('fetch base image');
  expect(steps).not.toContain('launch QEMU');
  expectNoLeftovers(before);
  return String(r.events.find((e) => e.type === 'build-end')?.error ?? r.stderr);
}

describe('bad base images stop before QEMU starts', () => {
  it('a text file given as base_image', async () => {
    const text = path.join(dir, 'notes.txt');
    writeFileSync(text, 'not a disk\n');
    expect(await buildRefused('base-text', text)).toBe(
      `fetch base image: base image ${text} is not a bootable disk image: it is a text file, starting "not a disk"\n  fix: point base_image at a disk image (qcow2, raw, vmdk...); if it was downloaded, the server sent a page or a message instead of the image`,
    );
  }, 60_000);

  it('a truncated qcow2', async () => {
    const tiny = readFileSync(path.join(imagesDir, 'tiny.qcow2'));
    const cut = path.join(dir, 'cut.qcow2');
    writeFileSync(cut, tiny.subarray(0, tiny.length >> 1));
    expect(await buildRefused('base-cut', cut)).toMatch(
      new RegExp(
        `^fetch base image: base image ${cut} is damaged: its qcow2 data reaches byte \\d+ but the file has ${tiny.length >> 1} bytes: it was cut short\\n  fix: copy or download it again`,
      ),
    );
  }, 60_000);
});
