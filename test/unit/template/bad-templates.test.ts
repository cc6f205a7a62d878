// The bad-input corpus: every broken template in test/fixtures/bad-templates/, run through the compiled
// CLI as `kiln validate` and `kiln build`, must fail with exit code 1 and one clear problem that names
// the file, the field and a fix, without a stack trace and without creating anything.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln } from '../../helpers/kiln.js';
import { repoRoot } from '../../helpers/guest.js';

const corpusDir = path.join(repoRoot, 'test/fixtures/bad-templates');

interface Expectation {
  /** Fragments the one reported problem must contain: the field as kiln names it, the message, the fix. */
  expect: string[];
  /** Extra command-line arguments, given the directory the template was copied to. */
  args?: (dir: string) => string[];
  /** The file the problem is about when it is not the template (e.g. a --var-file). */
  names?: (dir: string) => string;
}

const corpus: Record<string, Expectation> = {
  // Wrong types and values
  'cpus-string.yaml': { expect: ['builds[0].source.cpus', 'expected number, got string "two"', 'fix: write a number'] },
  'cpus-huge.yaml': { expect: ['builds[0].source.cpus', 'Infinity is not a usable number', 'fix: write a number'] },
  'memory-negative.yaml': { expect: ['builds[0].source.memory', '-1 is too small', 'fix: use at least 64'] },
  'memory-word.yaml': {
    expect: ['builds[0].source.memory', '"lots" is not an amount of memory', 'fix: write MiB as a number'],
  },
  'disk-size-word.yaml': { expect: ['builds[0].source.disk_size', '"big" is not a size', 'fix: write e.g. "20G"'] },
  'headless-string.yaml': {
    expect: [
      'builds[0].source.headless',
      'expected true or false, got string "yes"',
      'fix: write true or false here (without quotes)',
    ],
  },
  'builds-not-list.yaml': { expect: [': builds: expected list, got a map', 'fix: write a list here'] },
  'inline-string.yaml': {
    expect: ['builds[0].provisioners[0].inline', 'expected list, got string "echo hello"', 'fix: write a list here'],
  },
  'ssh-port-too-big.yaml': {
    expect: ['builds[0].source.communicator.port', '70000 is too big', 'fix: use at most 65535'],
  },
  'build-name-spaces.yaml': { expect: ['builds[0].name', 'build names use letters, digits', 'fix: rename it'] },
  'checksum-md5.yaml': {
    expect: [
      'builds[0].source.checksum',
      'checksum must be "sha256:<64 hex>"',
      "fix: write the image's digest as sha256:<hex>",
    ],
  },
  'firmware-typo.yaml': { expect: ['builds[0].source.firmware', '"uefl" is not allowed', 'fix: did you mean "uefi"?'] },
  'json-wrong-type.json': {
    expect: ['builds[0].source.cpus', 'expected number, got string "2"', 'fix: write a number'],
  },
  'var-default-wrong-type.yaml': {
    expect: ['variables.cpus.default', '"many" is not a number', 'fix: make the default a number'],
  },

  // Unknown keys, with "did you mean"
  'provisoners.yaml': {
    expect: ['builds[0].provisoners', 'unknown key "provisoners"', 'fix: did you mean "provisioners"?'],
  },
  'base-imgae.yaml': {
    expect: ['builds[0].source.base_imgae', 'unknown key "base_imgae"', 'fix: did you mean "base_image"?'],
  },
  'ssh-usernme.yaml': {
    expect: [
      'builds[0].source.ssh_usernme',
      'unknown key "ssh_usernme"',
      '"ssh_username" is how Packer says it',
      'communicator: { username: ... }',
    ],
  },
  'communicator-usernme.yaml': {
    expect: ['builds[0].source.communicator.usernme', 'unknown key "usernme"', 'fix: did you mean "username"?'],
  },
  'output-formt.yaml': { expect: ['builds[0].outputs[0].formt', 'unknown key "formt"', 'fix: did you mean "format"?'] },
  'variable-defualt.yaml': {
    expect: ['variables.user.defualt', 'unknown key "defualt"', 'fix: did you mean "default"?'],
  },
  'top-level-typo.yaml': { expect: [': build: unknown key "build"', 'fix: did you mean "builds"?'] },
  'provisioner-type-typo.yaml': {
    expect: ['builds[0].provisioners[0].type', 'unknown type "shel"', 'fix: did you mean "shell"?'],
  },
  'post-processor-type-typo.yaml': {
    expect: ['builds[0].post_processors[0].type', 'unknown type "compres"', 'fix: did you mean "compress"?'],
  },

  // Missing files, resolved against the template's directory
  'base-image-missing.yaml': {
    expect: [
      'builds[0].source.base_image',
      'path support/no-such-base.qcow2 does not exist',
      "resolved relative to the template's directory",
      'fix: correct the path',
    ],
  },
  'iso-missing.yaml': {
    expect: ['builds[0].source.iso', 'path support/no-such-installer.iso does not exist', 'fix: correct the path'],
  },
  'script-missing.yaml': {
    expect: [
      'builds[0].provisioners[0].script',
      'path support/no-such-script.sh does not exist',
      'fix: correct the path',
    ],
  },
  'file-source-missing.yaml': {
    expect: ['builds[0].provisioners[0].source', 'path support/no-such-motd does not exist', 'fix: correct the path'],
  },
  'checksum-file-missing.yaml': {
    expect: ['builds[0].source.checksum', 'path support/NO-SUCH-SHA256SUMS does not exist', 'fix: correct the path'],
  },
  'var-file-missing.yaml': {
    args: (dir) => ['--var-file', path.join(dir, 'no-such-vars.yaml')],
    names: (dir) => path.join(dir, 'no-such-vars.yaml'),
    expect: ['--var-file: file not found', 'fix: check the --var-file path'],
  },

  // Variables and build values
  'var-undefined.yaml': {
    expect: [
      'builds[0].provisioners[0].inline[0]',
      'undefined variable "nope"',
      'fix: declare "nope" under "variables:"',
    ],
  },
  'var-no-value.yaml': {
    expect: ['variables.user', 'variable "user" has no default and no value was given', 'fix: pass --var user=...'],
  },
  'var-undeclared-flag.yaml': {
    args: () => ['--var', 'usr=root'],
    expect: ['--var usr: usr: variable "usr" is not declared', 'fix: did you mean "user"?'],
  },
  'build-value-unknown.yaml': {
    expect: [
      'builds[0].provisioners[0].inline[0]',
      'unknown build value ${build.nope}',
      'fix: did you mean ${build.name}?',
    ],
  },

  // Boot commands, each with its column
  'boot-unclosed-wait.yaml': {
    expect: ['builds[0].source.boot_command[0]', 'unclosed <wait5 at column 21', 'fix: write ">" to close it: <wait5>'],
  },
  'boot-unknown-key.yaml': {
    expect: ['builds[0].source.boot_command[0]', 'unknown key <foo> at column 1', 'fix: write a known key'],
  },
  'boot-key-typo.yaml': {
    expect: [
      'builds[0].source.boot_command[0]',
      'unknown key <entr> at column 13',
      'fix: write a known key; did you mean <enter>?',
    ],
  },
  'boot-bad-regex.yaml': {
    expect: [
      'builds[0].source.boot_command[0]',
      'bad regex',
      'at column 10',
      'fix: write a valid JavaScript regular expression',
    ],
  },
  'boot-unclosed-waitfor.yaml': {
    expect: ['builds[0].source.boot_command[0]', 'unterminated <waitFor ...> at column 22', 'fix: write ">"'],
  },

  // Conflicting or incomplete options
  'iso-and-base-image.yaml': {
    expect: ['builds[0].source.iso', 'both "base_image" and "iso" are set', 'fix: keep "base_image"'],
  },
  'no-image.yaml': { expect: ['builds[0].source', 'neither "base_image" nor "iso" is set', 'fix: add "base_image"'] },
  'iso-without-disk-size.yaml': {
    expect: ['builds[0].source.disk_size', 'an ISO install needs a blank disk', 'fix: add disk_size'],
  },
  'inline-and-script.yaml': {
    expect: ['builds[0].provisioners[0]', 'exactly one of "inline", "script" or "scripts"', 'fix: keep one of them'],
  },
  'file-source-and-content.yaml': {
    expect: ['builds[0].provisioners[0]', 'exactly one of "source" or "content"', 'fix: keep "source"'],
  },
  'duplicate-build-names.yaml': {
    expect: ['builds[1].name', 'build name "bad" is used twice', 'fix: give each build its own name'],
  },
  'output-directory-shared.yaml': {
    expect: [
      'builds[1].output_directory',
      'writes to the same output directory',
      'fix: give each build its own output_directory',
    ],
  },
  'output-twice.yaml': {
    expect: ['builds[0].outputs[1]', 'writes bad.qcow2, like outputs[0]', 'fix: give one of them another "name"'],
  },
  'subformat-not-vmdk.yaml': {
    expect: ['builds[0].outputs[0]', '"subformat" and "adapter_type" only apply to format: vmdk', 'fix: remove them'],
  },
  'include-not-vagrant.yaml': {
    expect: ['builds[0].outputs[0]', '"include" only applies to format: vagrant', 'fix: remove it'],
  },
  'vagrant-include-clash.yaml': {
    expect: [
      'builds[0].outputs[0].include[0]',
      "support/Vagrantfile: the box's own Vagrantfile has that name",
      'fix: rename the file',
    ],
  },
  'vagrant-include-case.yaml': {
    expect: [
      'builds[0].outputs[0].include[1]',
      'would be one file, Info.json, in the box (names compared without case',
      'fix: rename one of them',
    ],
  },
  'vagrant-include-url.yaml': {
    expect: ['builds[0].outputs[0].include[0]', 'include takes local files, not URLs', 'fix: download the file first'],
  },
  'vagrant-include-missing.yaml': {
    expect: ['builds[0].outputs[0].include[0]', 'path support/info.json does not exist', 'fix: correct the path'],
  },
  'cloud-init-false-no-key.yaml': {
    expect: [
      'builds[0].source.cloud_init',
      'without cloud-init kiln cannot give the guest its build key',
      'fix: set communicator.private_key_file',
    ],
  },
  'communicator-none-with-shell.yaml': {
    expect: [
      'builds[0].source.communicator',
      'shell and file provisioners need a communicator',
      'fix: set communicator.type to ssh',
    ],
  },

  // Output directories that would replace what kiln did not write (kiln build --force replaces them)
  'output-directory-dot.yaml': {
    expect: [
      'builds[0].output_directory',
      "is the template's folder",
      'kiln build --force replaces an output directory',
      'fix: give the build a directory of its own, e.g. output_directory: output/bad',
    ],
  },
  'output-directory-parent.yaml': {
    expect: ['builds[0].output_directory', "holds the template's folder", 'fix: give the build a directory of its own'],
  },
  'output-directory-holds-input.yaml': {
    expect: [
      'builds[0].output_directory',
      "holds the build's input source.base_image",
      'support/base.qcow2',
      'fix: give the build a directory of its own',
    ],
  },
  'output-directory-cache.yaml': {
    expect: ['builds[0].output_directory', "is kiln's cache directory", 'fix: give the build a directory of its own'],
  },
  'outputs-directory-holds-input.yaml': {
    expect: ['builds[0].outputs[0].directory', "holds the build's input source.base_image", 'fix: remove "directory"'],
  },

  // qemu_args that would take kiln's controls away, or that QEMU itself refuses
  'qemu-args-qmp-tcp.yaml': {
    expect: [
      'builds[0].source.qemu_args[1]',
      '-qmp tcp:0.0.0.0:4444',
      'kiln talks to QEMU over its own QMP socket',
      "open the VM's control socket to the network",
      'fix: remove it',
    ],
  },
  'qemu-args-nographic.yaml': {
    expect: [
      'builds[0].source.qemu_args[0]',
      '--nographic: it connects the serial port and the monitor',
      'fix: remove it: headless: true',
    ],
  },
  'qemu-args-netdev-net0.yaml': {
    expect: [
      'builds[0].source.qemu_args[0]',
      '-netdev user,id=net0: it claims the id net0',
      'SSH',
      'fix: give yours another id',
      'id=net1',
    ],
  },
  'qemu-args-equals.yaml': {
    expect: [
      'builds[0].source.qemu_args[0]',
      'QEMU has no -cpu=max spelling',
      'fix: write the switch and its value as two items: ["-cpu", "max"]',
    ],
  },

  // Mistakes that used to surface only late in a build
  'output-name-dotdot.yaml': {
    expect: [
      'builds[0].outputs[0].name',
      '"." and ".." name directories, not a file',
      'fix: give the artifact a file name',
    ],
  },
  'compress-format-not-produced.yaml': {
    expect: [
      'builds[0].post_processors[0].formats[0]',
      'no output of this build is raw',
      'fix: list formats the build writes (qcow2)',
    ],
  },
  'file-destination-relative.yaml': {
    expect: [
      'builds[0].provisioners[0].destination',
      'must be absolute',
      'fix: write an absolute guest path, e.g. destination: /tmp/',
    ],
  },
  'cd-content-dotdot.yaml': {
    expect: [
      'builds[0].source.cd_content',
      'a cd_content name is a path inside the CD',
      "fix: write it relative to the CD's root",
    ],
  },
  'env-key-bad.yaml': {
    expect: [
      'builds[0].provisioners[0].env.MY-VAR',
      'not an environment variable name',
      'fix: use letters, digits and "_"',
    ],
  },
  'var-default-loop.yaml': {
    expect: [
      'variables.a.default',
      'variables refer to each other in a loop: a -> b -> a',
      'fix: give one of them a value that does not refer back',
    ],
  },
  'cloud-init-enabled-false-no-key.yaml': {
    expect: [
      'builds[0].source.cloud_init',
      'without cloud-init kiln cannot give the guest its build key',
      'fix: set communicator.private_key_file',
    ],
  },

  // Not a template at all: syntax errors, with their line
  'yaml-bad-indentation.yaml': {
    expect: [
      'yaml-bad-indentation.yaml:6:',
      'syntax error: All mapping items must start at the same column',
      'fix: line this key up',
    ],
  },
  'yaml-tab.yaml': {
    expect: [
      'yaml-tab.yaml:5:',
      'syntax error: Tabs are not allowed as indentation',
      'fix: indent with spaces, not tabs',
    ],
  },
  'yaml-unclosed-quote.yaml': {
    expect: ['yaml-unclosed-quote.yaml:7:', 'syntax error: Missing closing "quote', 'fix: close the quote'],
  },
  'yaml-duplicate-key.yaml': {
    expect: ['yaml-duplicate-key.yaml:7:', 'syntax error: Map keys must be unique', 'fix: remove one of the two'],
  },
  'json-syntax.json': {
    expect: [
      'json-syntax.json:3:',
      'syntax error: Unexpected double-quoted-scalar token',
      'fix: look just before this point for a missing ","',
    ],
  },
  'empty.yaml': { expect: ['(top level): the template is empty', 'fix: describe at least one build under "builds:"'] },
  'top-level-list.yaml': {
    expect: ['(top level): a template is a map with "builds:"', 'not a list', 'fix: see examples/tiny.yaml'],
  },
  'no-builds.yaml': { expect: [': builds: required field is missing', 'fix: add "builds"'] },
};

const corpusFiles = readdirSync(corpusDir, { withFileTypes: true })
  .filter((e) => e.isFile() && /\.(ya?ml|json)$/.test(e.name))
  .map((e) => e.name)
  .sort();

/** Every file below `dir`, relative, so a run can be checked to have created nothing. */
function listTree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** Processes whose command line mentions `needle` (a QEMU started for this run would name its work dir). */
function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(needle)) found.push(`${pid}: ${cmdline}`);
    } catch {
      /* the process ended meanwhile */
    }
  }
  return found;
}

interface Case {
  file: string;
  command: 'validate' | 'build';
  root: string;
  dir: string;
  tmp: string;
  cache: string;
  args: string[];
  before: string[];
}
interface Result {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Each case gets its own copy of the corpus file, with private temp and cache directories, so "nothing created" is exact. */
function prepare(file: string, command: Case['command']): Case {
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-bad-template-'));
  const dir = path.join(root, 'templates');
  const tmp = path.join(root, 'tmp');
  const cache = path.join(root, 'cache');
  cpSync(path.join(corpusDir, 'support'), path.join(dir, 'support'), { recursive: true });
  cpSync(path.join(corpusDir, file), path.join(dir, file));
  mkdirSync(tmp);
  mkdirSync(cache);
  return {
    file,
    command,
    root,
    dir,
    tmp,
    cache,
    args: [command, path.join(dir, file), ...(corpus[file]?.args?.(dir) ?? [])],
    before: listTree(dir),
  };
}

/**
 * Runs every case through the compiled CLI's main() in one node process, one case after the other,
 * each with its own TMPDIR and cache and its stdout/stderr captured: a node start-up per case (148 of
 * them) cost most of the unit suite's time. The same main() is what bin/kiln.js runs; a few cases also
 * go through bin/kiln.js itself below, and must print exactly the same.
 */
const driverSource = `
import { writeFileSync } from 'node:fs';
import { main } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist/cli/main.js')).href)};
const [casesFile, resultsFile] = process.argv.slice(1);
const cases = JSON.parse((await import('node:fs')).readFileSync(casesFile, 'utf8'));
const results = [];
const out = process.stdout.write.bind(process.stdout);
const err = process.stderr.write.bind(process.stderr);
for (const c of cases) {
  Object.assign(process.env, { TMPDIR: c.tmp, KILN_CACHE_DIR: c.cache, XDG_CACHE_HOME: c.cache });
  let stdout = ''; let stderr = '';
  process.stdout.write = (chunk) => { stdout += String(chunk); return true; };
  process.stderr.write = (chunk) => { stderr += String(chunk); return true; };
  let exitCode;
  try { exitCode = await main(c.args); } catch (e) { exitCode = -1; stderr += 'thrown: ' + (e && e.stack || e) + '\\n'; }
  finally { process.stdout.write = out; process.stderr.write = err; }
  results.push({ exitCode, stdout, stderr });
}
writeFileSync(resultsFile, JSON.stringify(results));
`;

const cases = corpusFiles.flatMap((file) => (['validate', 'build'] as const).map((command) => prepare(file, command)));
const results = new Map<Case, Result>();
/** Cases also run through bin/kiln.js, one process each: a syntax error, a --var-file, a late failure. */
const viaLauncher = new Set(['cpus-string.yaml', 'var-file-missing.yaml', 'output-directory-dot.yaml']);

beforeAll(async () => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-bad-driver-'));
  try {
    const casesFile = path.join(work, 'cases.json');
    const resultsFile = path.join(work, 'results.json');
    writeFileSync(casesFile, JSON.stringify(cases));
    const run = await execa('node', ['--input-type=module', '-e', driverSource, '--', casesFile, resultsFile], {
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    if (run.exitCode !== 0) throw new Error(`the corpus driver failed (${run.exitCode}):\n${run.stderr}`);
    const all = JSON.parse(readFileSync(resultsFile, 'utf8')) as Result[];
    cases.forEach((c, i) => results.set(c, all[i]!));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}, 120_000);
afterAll(() => {
  for (const c of cases) rmSync(c.root, { recursive: true, force: true });
});

function expectCleanFailure(c: Case, r: Result): void {
  const spec = corpus[c.file]!;
  const output = `${r.stdout}${r.stderr}`;
  expect(r.exitCode, output).toBe(1);
  expect(r.stdout).toBe('');
  expect(output, 'a stack trace').not.toMatch(/^\s+at /m);
  // One problem: one "error:" line, nothing else unindented, and exactly one fix.
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^error: /);
  expect(
    lines.filter((l) => !/^\s/.test(l)),
    r.stderr,
  ).toHaveLength(1);
  expect(
    lines.filter((l) => l.startsWith('  fix: ')),
    r.stderr,
  ).toHaveLength(1);
  expect(r.stderr).toContain(spec.names?.(c.dir) ?? path.join(c.dir, c.file));
  for (const fragment of spec.expect) expect(r.stderr).toContain(fragment);
}

function expectNothingCreated(c: Case): void {
  expect(listTree(c.dir), 'files created beside the template').toEqual(c.before);
  expect(listTree(c.tmp), 'work directories created').toEqual([]);
  expect(listTree(c.cache), 'cache entries created').toEqual([]);
  expect(processesMentioning(c.root), 'processes left running').toEqual([]);
}

describe('bad-template corpus', () => {
  it('lists every corpus file in the table, and nothing that is not in the corpus', () => {
    expect(
      corpusFiles.filter((f) => !(f in corpus)),
      'corpus files without expectations',
    ).toEqual([]);
    expect(
      Object.keys(corpus).filter((f) => !corpusFiles.includes(f)),
      'expectations without a corpus file',
    ).toEqual([]);
  });

  describe.each(corpusFiles)('%s', (file) => {
    it.each(['validate', 'build'] as const)('kiln %s fails cleanly', (command) => {
      const c = cases.find((x) => x.file === file && x.command === command)!;
      expectCleanFailure(c, results.get(c)!);
      expectNothingCreated(c);
    });
  });

  it.each([...viaLauncher])(
    '%s: bin/kiln.js (a process of its own) prints exactly what main() did, exits 1, creates nothing',
    async (file) => {
      for (const command of ['validate', 'build'] as const) {
        const c = cases.find((x) => x.file === file && x.command === command)!;
        const r = await kiln(c.args, { TMPDIR: c.tmp, KILN_CACHE_DIR: c.cache, XDG_CACHE_HOME: c.cache }, 50_000);
        const inProcess = results.get(c)!;
        // execa drops the final newline of what a process printed.
        expect({ exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr }).toEqual({
          ...inProcess,
          stdout: inProcess.stdout.replace(/\n$/, ''),
          stderr: inProcess.stderr.replace(/\n$/, ''),
        });
        expectCleanFailure(c, r);
        expectNothingCreated(c);
      }
    },
    60_000,
  );
});
