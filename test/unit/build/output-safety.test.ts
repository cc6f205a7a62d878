// kiln never destroys what it did not write: --force replaces only an output directory whose manifest
// lists every entry in it, checked before the build starts and again at commit; a build claims its
// output directory for its whole life; a killed build's staging directory and claim are swept. The
// real output-dir and commit steps run around stand-ins for the disk and conversion steps.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { deadPid } from '../../helpers/process-audit.js';
import { runSteps } from '../../../src/build/runner.js';
import type { Step } from '../../../src/build/step.js';
import type { BuildContext } from '../../../src/build/state.js';
import { createDriver } from '../../../src/qemu/driver.js';
import { outputDirStep } from '../../../src/build/steps/output-dir.js';
import { commitOutputStep } from '../../../src/build/steps/commit-output.js';
import { stagedPath } from '../../../src/build/steps/convert.js';
import { artifactName } from '../../../src/template/output-formats.js';
import { entriesOf } from '../../../src/artifacts/manifest.js';
import { markOwned, recordBesideOutput, removeStaleWorkDirs } from '../../../src/build/stale.js';
import type { OutputConfig } from '../../../src/template/schema.js';
import { EventBus } from '../../../src/ui/events.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-output-safety-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let serial = 0;

/** A fresh directory for one test, and the output directory inside it. */
function place(): { dir: string; out: string } {
  const dir = path.join(root, `t${serial++}`);
  mkdirSync(dir);
  return { dir, out: path.join(dir, 'out', 'web') };
}

interface Run {
  ok: boolean;
  error?: string;
  failedStep?: string;
  ran: string[];
}

/**
 * Runs the output-dir step, a stand-in for the disk (records that the build got past the claim),
 * `middle` steps, a stand-in for the conversion writing each output (content `content`), `post`
 * steps (post-processors), then the commit step.
 */
async function build(
  out: string,
  o: { force?: boolean; outputs?: OutputConfig[]; content?: string; middle?: Step[]; post?: Step[] } = {},
): Promise<Run> {
  const outputs = o.outputs ?? [{ format: 'qcow2' } as OutputConfig];
  const ran: string[] = [];
  const workDir = mkdtempSync(path.join(root, 'work-'));
  const ctx = {
    template: {
      file: path.join(root, 'web.yaml'),
      digest: '0'.repeat(64),
      variables: { values: {}, sensitive: new Set() },
    },
    build: { name: 'web', output_directory: out, outputs, checksums: ['sha256'], post_processors: [] },
    options: {
      force: o.force ?? false,
      onError: 'cleanup',
      debug: false,
      cacheDir: path.join(root, 'cache'),
      noCache: true,
    },
    events: new EventBus(),
    state: { workDir, startedAt: new Date(), artifacts: [], timings: {} },
    signal: new AbortController().signal,
    buildValues: () => ({}),
    log: () => undefined,
    driver: createDriver(),
  } as unknown as BuildContext;
  const disk: Step = {
    name: 'create disk',
    async run() {
      ran.push('create disk');
    },
  };
  const convert: Step = {
    name: 'convert disk',
    async run(c) {
      c.build.outputs.forEach((output, i) => {
        const name = artifactName('web', output);
        const file = stagedPath(c.state.stagingDir!, i, name, Boolean(output.directory));
        mkdirSync(path.dirname(file), { recursive: true });
        writeFileSync(file, o.content ?? 'image');
        c.state.artifacts[i] = {
          name,
          path: file,
          format: output.format,
          size: 5,
          virtualSize: 5,
          sha256: 'f'.repeat(64),
        };
      });
    },
  };
  const r = await runSteps(
    [outputDirStep, disk, ...(o.middle ?? []), convert, ...(o.post ?? []), commitOutputStep],
    ctx,
  );
  return { ok: r.ok, error: r.error?.message, failedStep: r.failedStep, ran };
}

/** Every entry under `dir` with its content, to prove a directory untouched. */
function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    entriesOf(dir).map((e) => [e, e.endsWith('/') ? '' : readFileSync(path.join(dir, e), 'utf8')]),
  );
}

/** What kiln may leave beside an output once a build is over: nothing (staging, its .old, claim). */
function besideOutput(out: string): string[] {
  try {
    return readdirSync(path.dirname(out)).filter((n) => n.startsWith(`.${path.basename(out)}.kiln-`));
  } catch {
    return [];
  }
}

/** A post-processor's doing: compress with keep_input (a second artifact) and a file of its own in the staging directory. */
const postProcessor: Step = {
  name: 'post-process',
  async run(c) {
    const a = c.state.artifacts[0]!;
    writeFileSync(`${a.path}.zst`, 'compressed');
    c.state.artifacts.push({ ...a, name: `${a.name}.zst`, path: `${a.path}.zst`, compression: 'zstd' });
    mkdirSync(path.join(c.state.stagingDir!, 'notes'));
    writeFileSync(path.join(c.state.stagingDir!, 'notes', 'README'), 'from shell-local');
  },
};

describe('--force replaces only an output directory kiln wrote', () => {
  it('recognises everything kiln wrote (artifacts, checksums, compressed and kept inputs, post-processor files) and replaces it', async () => {
    const { out } = place();
    const first = await build(out, { content: 'first', post: [postProcessor] });
    expect(first.ok, first.error).toBe(true);
    const withExtras = await build(out, { force: true, content: 'second', post: [postProcessor] });
    expect(withExtras.ok, withExtras.error).toBe(true);
    expect(entriesOf(out)).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'notes/',
      'notes/README',
      'web.cdx.json',
      'web.provenance.json',
      'web.qcow2',
      'web.qcow2.zst',
      'web.spdx.json',
    ]);
    expect(JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).files).toEqual([
      'SHA256SUMS',
      'notes/',
      'notes/README',
      'web.cdx.json',
      'web.provenance.json',
      'web.qcow2',
      'web.qcow2.zst',
      'web.spdx.json',
    ]);
    const again = await build(out, { force: true, content: 'fourth' });
    expect(again.ok, again.error).toBe(true);
    expect(readFileSync(path.join(out, 'web.qcow2'), 'utf8')).toBe('fourth');
    expect(entriesOf(out)).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'web.cdx.json',
      'web.provenance.json',
      'web.qcow2',
      'web.spdx.json',
    ]);
    expect(besideOutput(out)).toEqual([]);
  });

  it('recognises a directory whose manifest predates its `files` list (artifacts and checksums only)', async () => {
    const { out } = place();
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'web.qcow2'), 'old');
    writeFileSync(path.join(out, 'SHA256SUMS'), `${'f'.repeat(64)}  web.qcow2\n`);
    writeFileSync(
      path.join(out, 'manifest.json'),
      JSON.stringify({ build: 'web', artifacts: [{ name: 'web.qcow2', path: path.join(out, 'web.qcow2') }] }),
    );
    const r = await build(out, { force: true, content: 'new' });
    expect(r.ok, r.error).toBe(true);
    expect(readFileSync(path.join(out, 'web.qcow2'), 'utf8')).toBe('new');
  });

  it('without --force, an output directory kiln wrote is refused with the fix', async () => {
    const { out } = place();
    await build(out);
    const before = snapshot(out);
    const r = await build(out);
    expect(r).toMatchObject({ ok: false, failedStep: 'prepare output directory', ran: [] });
    expect(r.error).toMatch(/output directory .* already exists\n  fix: .*--force/);
    expect(snapshot(out)).toEqual(before);
    expect(besideOutput(out)).toEqual([]);
  });

  const foreignCases: [string, (out: string) => void, RegExp][] = [
    [
      'a file kiln did not write',
      (out) => writeFileSync(path.join(out, 'mine.txt'), 'mine'),
      /holds 1 entry kiln did not write: mine\.txt\n/,
    ],
    [
      'a subdirectory kiln did not write',
      (out) => {
        mkdirSync(path.join(out, 'photos'));
        writeFileSync(path.join(out, 'photos', 'cat.jpg'), 'meow');
      },
      /holds 2 entries kiln did not write: photos\/, photos\/cat\.jpg/,
    ],
    ['an empty subdirectory', (out) => mkdirSync(path.join(out, 'empty')), /kiln did not write: empty\//],
    [
      'no manifest',
      (out) => rmSync(path.join(out, 'manifest.json')),
      /\(it has no manifest\.json\): SHA256SUMS, web\.cdx\.json, web\.provenance\.json, web\.qcow2, web\.spdx\.json/,
    ],
    [
      'an unparseable manifest',
      (out) => writeFileSync(path.join(out, 'manifest.json'), '{ not json'),
      /\(its manifest\.json cannot be read \(.*\)\): SHA256SUMS, manifest\.json, web\.cdx\.json, web\.provenance\.json, web\.qcow2, web\.spdx\.json/,
    ],
    [
      'twelve foreign files',
      (out) => {
        for (let i = 10; i < 22; i++) writeFileSync(path.join(out, `f${i}`), '');
      },
      /holds 12 entries kiln did not write: f10, f11, f12, f13, f14, f15, f16, f17, f18, f19, and 2 more\n/,
    ],
  ];
  for (const [what, spoil, message] of foreignCases) {
    it(`${what}: refused before any disk work, even with --force, and left untouched`, async () => {
      const { out } = place();
      expect((await build(out)).ok).toBe(true);
      spoil(out);
      const before = snapshot(out);
      for (const force of [false, true]) {
        const r = await build(out, { force });
        expect(r).toMatchObject({ ok: false, failedStep: 'prepare output directory', ran: [] });
        expect(r.error).toMatch(message);
        expect(r.error).toMatch(
          /--force replaces only an output directory kiln wrote itself.*\n  fix: move those out of it/,
        );
        expect(snapshot(out)).toEqual(before);
        expect(besideOutput(out)).toEqual([]);
      }
    });
  }

  it('an output path that is a file is never replaced', async () => {
    const { out } = place();
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, 'a file');
    const r = await build(out, { force: true });
    expect(r).toMatchObject({ ok: false, ran: [] });
    expect(r.error).toMatch(/\(it is not a directory\): web/);
    expect(readFileSync(out, 'utf8')).toBe('a file');
  });
});

describe('the commit checks again', () => {
  it('a file put in the output directory during the build stops its replacement; the directory stays as it was', async () => {
    const { out } = place();
    await build(out, { content: 'old' });
    const intruder: Step = {
      name: 'provision',
      async run() {
        writeFileSync(path.join(out, 'late.txt'), 'put here during the build');
      },
    };
    const r = await build(out, { force: true, content: 'new', middle: [intruder] });
    expect(r).toMatchObject({ ok: false, failedStep: 'write manifest and commit output' });
    expect(r.error).toMatch(
      /output directory .* changed during the build: it now holds 1 entry kiln did not write: late\.txt/,
    );
    expect(readFileSync(path.join(out, 'web.qcow2'), 'utf8')).toBe('old');
    expect(entriesOf(out)).toEqual([
      'SHA256SUMS',
      'late.txt',
      'manifest.json',
      'web.cdx.json',
      'web.provenance.json',
      'web.qcow2',
      'web.spdx.json',
    ]);
    expect(besideOutput(out)).toEqual([]);
  });

  it('without --force, an output directory that appeared during the build fails the commit and is left alone', async () => {
    const { out } = place();
    const creator: Step = {
      name: 'provision',
      async run() {
        mkdirSync(out);
        writeFileSync(path.join(out, 'theirs'), 'x');
      },
    };
    const r = await build(out, { middle: [creator] });
    expect(r).toMatchObject({ ok: false, failedStep: 'write manifest and commit output' });
    expect(r.error).toMatch(/output directory .* appeared during the build, and is left as it is/);
    expect(snapshot(out)).toEqual({ theirs: 'x' });
    expect(besideOutput(out)).toEqual([]);
  });
});

describe('one build at a time per output directory', () => {
  it('a second build of the same output fails at once naming the other kiln; the first goes on and commits', async () => {
    const { out } = place();
    let release!: () => void;
    let claimed!: () => void;
    const isClaimed = new Promise<void>((resolve) => {
      claimed = resolve;
    });
    const blocker: Step = {
      name: 'provision',
      run: () => {
        claimed();
        return new Promise((resolve) => {
          release = () => resolve();
        });
      },
    };
    const first = build(out, { middle: [blocker] });
    await isClaimed;
    const second = await build(out, { force: true });
    expect(second).toMatchObject({ ok: false, failedStep: 'prepare output directory', ran: [] });
    expect(second.error).toBe(
      `output directory ${out} is being built by another kiln right now (pid ${process.pid})\n  fix: wait for it to finish, or give this build another output_directory`,
    );
    // The refused build left the claim and the staging directory of the one that holds it alone.
    expect(besideOutput(out).sort()).toEqual([`.web.kiln-lock`, `.web.kiln-partial-${process.pid}`]);
    release();
    expect((await first).ok).toBe(true);
    expect(besideOutput(out)).toEqual([]);
  });

  it('names another process holding the claim; takes over the claim of one that is gone', async () => {
    const { out } = place();
    mkdirSync(path.dirname(out), { recursive: true });
    const claim = path.join(path.dirname(out), '.web.kiln-lock');
    const other = execa('sleep', ['30']);
    writeFileSync(claim, String(other.pid));
    const r = await build(out);
    expect(r.error).toMatch(`being built by another kiln right now (pid ${other.pid})`);
    expect(readFileSync(claim, 'utf8')).toBe(String(other.pid));
    other.kill();
    await other.catch(() => undefined);
    const after = await build(out);
    expect(after.ok, after.error).toBe(true);
    expect(besideOutput(out)).toEqual([]);
  });
});

describe('outputs bound for other directories', () => {
  it('an existing file there is replaced only with --force, and nothing else there is touched', async () => {
    const { dir, out } = place();
    const other = path.join(dir, 'images');
    mkdirSync(other);
    writeFileSync(path.join(other, 'web.raw'), "not kiln's");
    writeFileSync(path.join(other, 'keep.txt'), 'neighbour');
    const outputs = [{ format: 'qcow2' }, { format: 'raw', directory: other }] as OutputConfig[];
    const refused = await build(out, { outputs });
    expect(refused).toMatchObject({ ok: false, failedStep: 'prepare output directory', ran: [] });
    expect(refused.error).toMatch(
      /images\/web\.raw already exists\n  fix: remove it, or run with --force \(which replaces that one file/,
    );
    expect(existsSync(out)).toBe(false);
    const forced = await build(out, { outputs, force: true, content: 'new' });
    expect(forced.ok, forced.error).toBe(true);
    expect(snapshot(other)).toEqual({ 'keep.txt': 'neighbour', 'web.raw': 'new' });
  });

  it('a directory where the artifact would go is never replaced', async () => {
    const { dir, out } = place();
    const other = path.join(dir, 'images');
    mkdirSync(path.join(other, 'web.raw'), { recursive: true });
    const r = await build(out, { outputs: [{ format: 'raw', directory: other }] as OutputConfig[], force: true });
    expect(r).toMatchObject({ ok: false, ran: [] });
    expect(r.error).toMatch(/images\/web\.raw is a directory/);
  });
});

describe('what a build leaves', () => {
  it('a failed build removes the parent directories it created, only while empty', async () => {
    const { dir } = place();
    const out = path.join(dir, 'a', 'b', 'web');
    const fail: Step = {
      name: 'provision',
      async run() {
        throw new Error('provisioner failed');
      },
    };
    expect((await build(out, { middle: [fail] })).ok).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
    // Something else put in one of them meanwhile: it stays, and so do the directories above it.
    const squatter: Step = {
      name: 'provision',
      async run() {
        writeFileSync(path.join(dir, 'a', 'theirs'), 'x');
        throw new Error('provisioner failed');
      },
    };
    expect((await build(out, { middle: [squatter] })).ok).toBe(false);
    expect(entriesOf(dir)).toEqual(['a/', 'a/theirs']);
  });

  it("the stale sweep removes a dead kiln's staging directory and claim, and nothing that lacks kiln's names or that another kiln holds now", async () => {
    const { dir } = place();
    const tmp = path.join(dir, 'tmp');
    mkdirSync(tmp);
    const dead = await deadPid();
    const workDir = (name: string, beside: { staging: string; claim: string }) => {
      const w = path.join(tmp, `kiln-${name}-x`);
      mkdirSync(w);
      writeFileSync(path.join(w, 'kiln-owner.pid'), String(dead));
      recordBesideOutput(w, beside);
      return w;
    };
    const staging = path.join(dir, `.web.kiln-partial-${dead}`);
    mkdirSync(path.join(staging, '.elsewhere-1'), { recursive: true });
    writeFileSync(path.join(staging, 'web.qcow2'), 'partial');
    const claim = path.join(dir, '.web.kiln-lock');
    writeFileSync(claim, String(dead));
    const w1 = workDir('web', { staging, claim });
    // A record naming paths that are not kiln's, or a claim a live kiln holds now: kept.
    const precious = path.join(dir, 'precious');
    mkdirSync(precious);
    const otherClaim = path.join(dir, '.db.kiln-lock');
    writeFileSync(otherClaim, String(process.pid));
    const w2 = workDir('db', { staging: precious, claim: otherClaim });
    const removed = removeStaleWorkDirs(tmp);
    expect(removed).toEqual(
      expect.arrayContaining([
        { path: staging, kind: 'staging directory' },
        { path: claim, kind: 'output claim' },
        { path: w1, kind: 'work directory' },
        { path: w2, kind: 'work directory' },
      ]),
    );
    expect(removed).toHaveLength(4);
    expect(readdirSync(dir).sort()).toEqual(['.db.kiln-lock', 'precious', 'tmp']);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it("a live build's work directory and what it records are left alone", () => {
    const { dir } = place();
    const tmp = path.join(dir, 'tmp');
    const w = path.join(tmp, 'kiln-web-x');
    mkdirSync(w, { recursive: true });
    markOwned(w);
    const staging = path.join(dir, `.web.kiln-partial-${process.pid}`);
    mkdirSync(staging);
    recordBesideOutput(w, { staging, claim: path.join(dir, '.web.kiln-lock') });
    expect(removeStaleWorkDirs(tmp)).toEqual([]);
    expect(existsSync(staging)).toBe(true);
  });
});
