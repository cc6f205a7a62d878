// kiln as a library, used the way an outside program uses it: a project of its own (a temp directory)
// with kiln linked into node_modules, the TypeScript example examples/api/build-tiny.ts compiled there
// against kiln's published type declarations (package.json "exports"/"types"), then run: it builds
// examples/tiny.yaml into a temp output directory through `import { loadTemplate, build, verify } from
// 'kiln'`. The artifact is then checked from outside: qemu-img check, and the manifest's digest against
// the file's.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-api-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe('library API (an outside TypeScript program)', () => {
  it("compiles against kiln's type declarations and builds the tiny example through import ... from 'kiln'", async () => {
    // The outside project: its own package.json and tsconfig (the example's), kiln linked in as
    // `npm install ../kiln` would, and the Node types it compiles with.
    const project = path.join(dir, 'project');
    mkdirSync(path.join(project, 'node_modules', '@types'), { recursive: true });
    for (const f of ['build-tiny.ts', 'tsconfig.json', 'package.json'])
      copyFileSync(path.join(repoRoot, 'examples', 'api', f), path.join(project, f));
    symlinkSync(repoRoot, path.join(project, 'node_modules', 'kiln'), 'dir');
    symlinkSync(
      path.join(repoRoot, 'node_modules', '@types', 'node'),
      path.join(project, 'node_modules', '@types', 'node'),
      'dir',
    );

    // Type-checked against dist/index.d.ts through the package's "exports" (a wrong or missing
    // declaration fails here, not in a user's editor).
    const tsc = await execa(
      'node',
      [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'],
      { cwd: project, reject: false },
    );
    expect(tsc.exitCode, tsc.stdout + tsc.stderr).toBe(0);

    const out = path.join(dir, 'out', 'tiny');
    const cache = path.join(dir, 'cache');
    // The library reads no KILN_* variable: the cache directory is the program's argument. A
    // KILN_CACHE_DIR pointing elsewhere shows that nothing else picks it up.
    const run = await execa('node', ['build-tiny.js', path.join(repoRoot, 'examples', 'tiny.yaml'), out, cache], {
      cwd: project,
      reject: false,
      stdin: 'ignore',
      timeout: 300_000,
      env: { KILN_CACHE_DIR: path.join(dir, 'not-this-cache') },
    });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/tiny: provision \(\d+ ms\)/);
    const summary = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {
      build: string;
      outputDirectory: string;
      artifacts: { name: string; path: string; format: string; sha256: string }[];
      verified: { name: string; ok: boolean; problems: string[] }[];
    };
    expect(summary.build).toBe('tiny');
    expect(summary.outputDirectory).toBe(out);
    // The artifact, then the SBOMs and provenance written beside it (issue 30).
    expect(summary.verified).toEqual(
      ['tiny.qcow2', 'tiny.spdx.json', 'tiny.cdx.json', 'tiny.provenance.json'].map((name) => ({
        name,
        ok: true,
        problems: [],
      })),
    );

    // Checked from outside the library.
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'tiny.cdx.json',
      'tiny.provenance.json',
      'tiny.qcow2',
      'tiny.spdx.json',
    ]);
    const image = path.join(out, 'tiny.qcow2');
    expect(summary.artifacts).toEqual([
      { name: 'tiny.qcow2', path: image, format: 'qcow2', size: expect.any(Number), sha256: sha256(image) },
    ]);
    const check = await execa('qemu-img', ['check', image], { reject: false });
    expect(check.exitCode, check.stdout + check.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as {
      artifacts: { name: string; sha256: string }[];
      variables: Record<string, unknown>;
    };
    expect(manifest.artifacts).toMatchObject([{ name: 'tiny.qcow2', sha256: sha256(image) }]);
    expect(manifest.variables).toMatchObject({
      marker: 'built-through-the-api',
      greeting: '<sensitive>',
      output_directory: out,
    });
    // The cache it was given was used; the environment's was not.
    expect(readdirSync(cache).length).toBeGreaterThan(0);
    expect(() => readdirSync(path.join(dir, 'not-this-cache'))).toThrow(/ENOENT/);
  }, 360_000);
});
