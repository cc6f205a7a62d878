// `kiln import` is a migration (issue 25): an HCL template with required variables (one sensitive),
// locals built from variables, a local computed by a function, Packer's $${...} escape and two
// builders is imported without any value; the YAML keeps the variables, and with the same --vars it
// is the same build as the Packer template (kiln inspect --json of both), and it builds under QEMU
// (the tiny guest, one boot). The artifact's files are read without booting it again (debugfs on its
// root partition): the literal ${var.password} stayed a literal, the secret reached the guest only
// through the environment.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-packer-import-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const template = path.join(repoRoot, 'test/fixtures/packer/import/tiny-vars.pkr.hcl');

/** kiln run in the YAML's folder: Packer's relative paths are relative to the folder it runs in. */
async function kilnHere(args: string[]) {
  const r = await execa('node', [path.join(repoRoot, 'bin/kiln.js'), ...args], {
    cwd: dir,
    reject: false,
    stdin: 'ignore',
    env: { KILN_CACHE_DIR: path.join(dir, 'cache') },
    timeout: 600_000,
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A file of the artifact's root filesystem (the tiny guest's third partition, ext4). */
async function readGuestFiles(image: string, files: string[]): Promise<Record<string, string>> {
  const raw = path.join(dir, 'artifact.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  const table = JSON.parse((await execa('sfdisk', ['-J', raw])).stdout) as {
    partitiontable: { partitions: { start: number; size: number; name?: string }[] };
  };
  const root =
    table.partitiontable.partitions.find((p) => p.name === 'root') ?? table.partitiontable.partitions.at(-1)!;
  const part = path.join(dir, 'root.ext4');
  await execa('dd', [
    `if=${raw}`,
    `of=${part}`,
    'bs=512',
    `skip=${root.start}`,
    `count=${root.size}`,
    'conv=sparse',
    'status=none',
  ]);
  const out: Record<string, string> = {};
  for (const f of files) out[f] = (await execa('debugfs', ['-R', `cat ${f}`, part], { stderr: 'ignore' })).stdout;
  return out;
}

describe('kiln import of an HCL template with required variables and locals', () => {
  it('writes YAML with the variables, equal to the Packer template under the same --vars, and builds the same image', async () => {
    const started = Date.now();
    const yaml = path.join(dir, 'tiny.yaml');
    // No value for the required image, marker and password.
    const imported = await kilnHere(['import', template, '-o', yaml, '-only=qemu.tiny']);
    expect(imported.exitCode, imported.stderr).toBe(0);
    const text = readFileSync(yaml, 'utf8');
    expect(text).toMatch(/ {2}image:\n {4}type: string\n {4}description: the disk image to start from\n/);
    expect(text).toMatch(/ {2}password:\n {4}type: string\n {4}sensitive: true\n/);
    expect(text).toMatch(/ {2}memory:\n {4}type: number\n {4}default: 256\n/);
    expect(text).toContain('base_image: ${var.image}');
    expect(text).toContain("echo '${var.greeting} from ${var.marker}' > /root/marker");
    expect(text).toContain("echo '$${var.password}' > /root/literal");
    expect(text).not.toContain('qemu.big');

    const password = 'pw-e2e-import-7f3a';
    const vars = [
      '--var',
      `image=${path.join(repoRoot, 'fixtures/images/tiny.qcow2')}`,
      '--var',
      'marker=e2e-mark',
      '--var',
      `password=${password}`,
      '--var',
      'memory=320',
    ];
    const [fromYaml, fromPacker] = await Promise.all([
      kilnHere(['inspect', '--json', yaml, ...vars]),
      kilnHere(['inspect', '--json', '--only=qemu.tiny', template, ...vars]),
    ]);
    expect(fromYaml.exitCode, fromYaml.stderr).toBe(0);
    expect(fromPacker.exitCode, fromPacker.stderr).toBe(0);
    const y = JSON.parse(fromYaml.stdout) as { variables: unknown; builds: { source: { memory: number } }[] };
    const p = JSON.parse(fromPacker.stdout) as typeof y;
    expect(y.builds).toEqual(p.builds);
    expect(y.variables).toEqual(p.variables);
    expect(y.builds[0]!.source.memory).toBe(320);

    const built = await kilnHere(['build', yaml, ...vars]);
    expect(built.exitCode, built.stderr).toBe(0);
    expect(built.stdout + built.stderr).not.toContain(password);
    const files = await readGuestFiles(path.join(dir, 'output-e2e-mark', 'tiny-e2e-mark.qcow2'), [
      '/root/marker',
      '/root/shout',
      '/root/literal',
      '/root/password-digest',
      '/root/verbose',
    ]);
    expect(files).toEqual({
      '/root/marker': 'hello from e2e-mark',
      '/root/shout': 'HELLO',
      '/root/literal': '${var.password}',
      '/root/password-digest': createHash('sha256').update(`${password}\n`).digest('hex').slice(0, 16),
      '/root/verbose': 'false',
    });
    process.stderr.write(`packer-import e2e: ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }, 400_000);
});
