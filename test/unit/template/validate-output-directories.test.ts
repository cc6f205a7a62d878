// Output directories kiln must never be given: kiln build --force replaces an output directory and
// everything in it, so loading refuses one that is or holds the template's folder, the current
// directory, $HOME, /, kiln's cache or anything the build reads, however the path is spelt.
import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadTemplate, type LoadOptions } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import type { VariableInputs } from '../../../src/template/variables.js';
import { cacheDirFromEnv } from '../../../src/cli/env.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

/** A fresh folder in the system temp dir, removed after the file's tests. */
const tempDir = tempDirMaker();

/** A fresh folder holding a template (and the base image it names), plus a private cache directory. */
function setup(build: string, files: Record<string, string> = {}) {
  const root = realpathSync(tempDir('kiln-validate-out-'));
  const dir = path.join(root, 'tpl');
  mkdirSync(dir);
  for (const [name, text] of Object.entries({ 'base.qcow2': 'not really an image', ...files })) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  const file = path.join(dir, 'template.yaml');
  writeFileSync(file, `builds:\n  - name: web\n${build}`);
  return { root, dir, file, cacheDir: path.join(root, 'cache') };
}

const source = '    source:\n      base_image: base.qcow2\n      checksum: none\n';

function problem(file: string, inputs: VariableInputs = {}, options: LoadOptions = {}): string {
  try {
    loadTemplate(file, inputs, options);
  } catch (e) {
    if (e instanceof TemplateError) return e.message;
    throw e;
  }
  throw new Error('expected a template error');
}

describe('output directories that would replace what kiln did not write', () => {
  it('refuses "." (the template\'s folder) and ".." (which holds it), naming the line, field and fix', () => {
    const dot = setup(`    output_directory: .\n${source}`);
    const msg = problem(dot.file, {}, { cacheDir: dot.cacheDir });
    expect(msg).toContain(`${dot.file}:3: builds[0].output_directory: ${dot.dir} is the template's folder`);
    expect(msg).toContain('kiln build --force replaces an output directory, and everything in it');
    expect(msg).toContain('fix: give the build a directory of its own, e.g. output_directory: output/web');

    const up = setup(`    output_directory: ..\n${source}`);
    expect(problem(up.file, {}, { cacheDir: up.cacheDir })).toContain(
      `${up.root} holds the template's folder (${up.dir})`,
    );
    // `..` inside the path cannot hide it either.
    const around = setup(`    output_directory: output/../../tpl\n${source}`);
    expect(problem(around.file, {}, { cacheDir: around.cacheDir })).toContain("is the template's folder");
  });

  it("sees through symbolic links: a link to the template's parent is refused with its real path", () => {
    const s = setup(`    output_directory: link/out\n${source}`);
    symlinkSync(s.root, path.join(s.dir, 'link'));
    // link/out does not exist: its real place is found from the nearest existing ancestor (the link).
    const linked = setup(`    output_directory: parent\n${source}`);
    symlinkSync(linked.root, path.join(linked.dir, 'parent'));
    const msg = problem(linked.file, {}, { cacheDir: linked.cacheDir });
    expect(msg).toContain(`${path.join(linked.dir, 'parent')} (really ${linked.root}) holds the template's folder`);
    // A new directory below the link is the link's target's child, and holds nothing of the template.
    expect(() => loadTemplate(s.file, {}, { cacheDir: s.cacheDir })).not.toThrow();
  });

  it('refuses the current directory, $HOME and /', () => {
    for (const [dir, what] of [
      [process.cwd(), 'the current directory'],
      [os.homedir(), 'your home directory'],
      ['/', 'the root of the file system'],
    ] as const) {
      const s = setup(`    output_directory: ${dir}\n${source}`);
      expect(problem(s.file, {}, { cacheDir: s.cacheDir }), dir).toMatch(new RegExp(`(is|holds) ${what}`));
    }
  });
  it('refuses a folder holding $HOME', () => {
    const saved = process.env.HOME;
    const home = path.join(realpathSync(tempDir('kiln-validate-home-')), 'me');
    mkdirSync(home);
    process.env.HOME = home; // os.homedir() reads it
    try {
      const s = setup(`    output_directory: ${path.dirname(home)}\n${source}`);
      expect(problem(s.file, {}, { cacheDir: s.cacheDir })).toContain(`holds your home directory (${home})`);
    } finally {
      process.env.HOME = saved;
    }
  });

  describe("kiln's cache directory", () => {
    const saved = process.env.XDG_CACHE_HOME;
    afterEach(() => {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
    });
    it('refuses the cache given in the options, and a folder holding it', () => {
      const s = setup(`    output_directory: ../cache\n${source}`);
      expect(problem(s.file, {}, { cacheDir: s.cacheDir })).toContain(`${s.cacheDir} is kiln's cache directory`);
      const holding = setup(`    output_directory: ../box\n${source}`);
      expect(problem(holding.file, {}, { cacheDir: path.join(holding.root, 'box', 'kiln-cache') })).toContain(
        "holds kiln's cache directory",
      );
    });
    it("defaults to the cache a build would use: the XDG cache home's kiln/ (KILN_CACHE_DIR is the CLI's, passed as cacheDir)", () => {
      const s = setup(`    output_directory: ../xdg/kiln\n${source}`);
      process.env.XDG_CACHE_HOME = path.join(s.root, 'xdg');
      expect(problem(s.file)).toContain(`${path.join(s.root, 'xdg', 'kiln')} is kiln's cache directory`);
      expect(cacheDirFromEnv({ KILN_CACHE_DIR: s.cacheDir })).toBe(s.cacheDir);
      expect(
        problem(s.file, {}, { cacheDir: cacheDirFromEnv({ KILN_CACHE_DIR: path.join(s.root, 'xdg', 'kiln') }) }),
      ).toContain("is kiln's cache directory");
    });
  });

  // Each input in a folder "in/" of its own, and the output directory set to that folder.
  const inputs: [string, string, Record<string, string>][] = [
    [
      'source.base_image',
      '    source:\n      base_image: in/disk.qcow2\n      checksum: none\n',
      { 'in/disk.qcow2': 'x' },
    ],
    [
      'source.iso',
      '    source:\n      iso: in/i.iso\n      checksum: none\n      disk_size: 1G\n      communicator: { type: none }\n',
      { 'in/i.iso': 'x' },
    ],
    [
      'source.checksum',
      '    source:\n      base_image: base.qcow2\n      checksum: file:in/SHA256SUMS\n',
      { 'in/SHA256SUMS': 'x' },
    ],
    ['source.cd_files[0]', `${source}      cd_files: [in/ks.cfg]\n`, { 'in/ks.cfg': 'x' }],
    ['source.floppy_files[0]', `${source}      floppy_files: [in/ks.cfg]\n`, { 'in/ks.cfg': 'x' }],
    ['source.http_directory', `${source}      http_directory: in/http\n`, { 'in/http/preseed.cfg': 'x' }],
    [
      'source.communicator.private_key_file',
      `${source}      communicator: { private_key_file: in/id_ed25519 }\n`,
      { 'in/id_ed25519': 'x' },
    ],
    ['provisioners[0].script', `${source}    provisioners: [{ type: shell, script: in/a.sh }]\n`, { 'in/a.sh': 'x' }],
    [
      'provisioners[0].scripts[1]',
      `${source}    provisioners: [{ type: shell, scripts: [base.qcow2, in/a.sh] }]\n`,
      { 'in/a.sh': 'x' },
    ],
    [
      'provisioners[0].source',
      `${source}    provisioners: [{ type: file, source: in/motd, destination: /etc/motd }]\n`,
      { 'in/motd': 'x' },
    ],
    [
      'provisioners[0].script',
      `${source}    provisioners: [{ type: shell-local, script: in/a.sh }]\n`,
      { 'in/a.sh': 'x' },
    ],
    [
      'post_processors[0].script',
      `${source}    post_processors: [{ type: shell-local, script: in/a.sh }]\n`,
      { 'in/a.sh': 'x' },
    ],
    [
      'provisioners[0].playbook_file',
      `${source}    provisioners: [{ type: ansible, playbook_file: in/site.yml }]\n`,
      { 'in/site.yml': 'x' },
    ],
  ];
  it.each(inputs)("refuses an output directory holding the build's input %s", (field, build, files) => {
    const s = setup(`    output_directory: in\n${build}`, files);
    const msg = problem(s.file, {}, { cacheDir: s.cacheDir });
    expect(msg).toContain(
      `builds[0].output_directory: ${path.join(s.dir, 'in')} holds the build's input ${field} (${path.join(s.dir, 'in')}`,
    );
    // An output's own directory is held to the same rule.
    const own = setup(`${build}    outputs: [{ format: raw, directory: in }]\n`, files);
    expect(problem(own.file, {}, { cacheDir: own.cacheDir })).toContain(
      `builds[0].outputs[0].directory: ${path.join(own.dir, 'in')} holds the build's input ${field}`,
    );
  });

  it('refuses an output directory that is an input directory, or holds a --var-file', () => {
    const s = setup(`    output_directory: in\n${source}      http_directory: in\n`, { 'in/x': 'x' });
    expect(problem(s.file, {}, { cacheDir: s.cacheDir })).toContain("is the build's input source.http_directory");
    const v = setup(`    output_directory: vars\n${source}`, { 'vars/prod.yaml': '{}' });
    expect(problem(v.file, { varFiles: [path.join(v.dir, 'vars/prod.yaml')] }, { cacheDir: v.cacheDir })).toContain(
      `holds a --var-file (${path.join(v.dir, 'vars/prod.yaml')})`,
    );
  });

  it('accepts output directories beside or below what it protects', () => {
    // Beside an input (same parent, not holding it), inside the template's folder, inside the cache's parent.
    const s = setup(
      `    output_directory: in/out\n${source}    provisioners: [{ type: shell, script: in/a.sh }]\n    outputs:\n      - { format: qcow2 }\n      - { format: raw, directory: ../elsewhere }\n`,
      { 'in/a.sh': 'x' },
    );
    const b = loadTemplate(s.file, {}, { cacheDir: s.cacheDir }).template.builds[0]!;
    expect(b.output_directory).toBe(path.join(s.dir, 'in', 'out'));
    expect(b.outputs[1]!.directory).toBe(path.join(s.root, 'elsewhere'));
    const inCwd = setup(`    output_directory: ${path.join(process.cwd(), 'output', 'kiln-validate-test')}\n${source}`);
    expect(() => loadTemplate(inCwd.file, {}, { cacheDir: inCwd.cacheDir })).not.toThrow();
  });
});
