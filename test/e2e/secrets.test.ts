// Secrets stay secret: sensitive variables and the communicator password are masked in every log
// line and event (with --debug too) and never reach the manifest or checksum files; the build's
// private key and its public key never land in the artifact (the host key kiln injects into a
// cloud-init guest is checked in build-debian.test.ts, which builds one anyway). Artifacts are
// searched as raw disks, byte by byte (deleted files included), reading only the extents that hold data.
// The NoCloud-Net seed URL's secrecy (not on QEMU's command line, not in kiln's output) is checked in
// build-debian.test.ts, during the Debian build it makes anyway.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { insecureKey, installerSourceYaml, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { privateKeyPattern, searchDisk, uniquePemLines } from '../helpers/disk-search.js';
import { EventBus, type BuildEvent } from '../../src/ui/events.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'e2e-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Every file kiln wrote beside the disk images (manifest, checksums...), as text. */
function outputTextFiles(out: string, imageNames: string[]): Record<string, string> {
  return Object.fromEntries(readdirSync(out).filter((n) => !imageNames.includes(n)).map((n) => [n, readFileSync(path.join(out, n), 'utf8')]));
}

/** The build's public key, as `${build.ssh_public_key}` gives it: written to a host file by a shell-local provisioner. */
const recordPublicKey = (file: string) => `
      - type: shell-local
        inline: ['echo "\${build.ssh_public_key}" > ${file}']`;

describe('secrets', () => {
  it('masking works for any secret value: numeric, equal to a field name, or containing another secret', () => {
    const bus = new EventBus(['1234', 'build', 'abc', 'abcdef']);
    const seen: BuildEvent[] = [];
    bus.subscribe((e) => seen.push(e));
    // Before: "1234" made emit throw (the masked JSON no longer parsed), "build" renamed the field, and
    // "abcdef" came out as "<sensitive>def".
    bus.emit({ type: 'step-end', build: 'web', step: 'build 1234', index: 0, ms: 1234.5 });
    bus.emit({ type: 'log', build: 'web', level: 'info', message: 'x abcdef y' });
    expect(seen).toMatchObject([
      { type: 'step-end', build: 'web', step: '<sensitive> <sensitive>', ms: 1234.5 },
      { type: 'log', build: 'web', message: 'x <sensitive> y' },
    ]);
  });

  it('a sensitive variable and the password are masked in every event and log line (--debug), and reach no output file or disk', async () => {
    const token = `tok-${randomBytes(9).toString('hex')}`;
    const password = `pw-${randomBytes(9).toString('hex')}`;
    const out = path.join(dir, 'out', 'masked');
    const file = path.join(dir, 'masked.yaml');
    // The tiny guest takes only keys; the password is set so kiln has one to mask (it offers it, and
    // dropbear refuses password logins). The provisioner prints both: through a variable, the
    // environment, the literal, and as a last line without a newline.
    writeFileSync(file, `
variables:
  token: { default: ${token}, sensitive: true }
builds:
  - name: masked
    output_directory: ${out}
${tinySourceYaml().replace('trust_on_first_use: true', `password: ${password}, trust_on_first_use: true`)}
    provisioners:
      - type: shell
        env: { TOKEN: '\${var.token}' }
        inline:
          - echo "token is \${var.token}"
          - echo "env token is $TOKEN" >&2
          - echo "password is ${password}"
          - printf '%s' "\${var.token}"
    outputs:
      - format: qcow2
`);
    const run = await kiln(['build', file, '--events=json', '--debug'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    // The secrets were really printed (masked), so their absence below means something.
    expect(run.stderr).toContain('token is <sensitive>');
    expect(run.stderr).toContain('env token is <sensitive>');
    expect(run.stderr).toContain('password is <sensitive>');
    const lines = run.events.filter((e) => e.type === 'output').map((e) => e.line);
    expect(lines).toContain('<sensitive>');
    for (const secret of [token, password]) {
      expect(run.stdout, 'events').not.toContain(secret);
      expect(run.stderr, 'human log').not.toContain(secret);
    }
    const texts = outputTextFiles(out, ['masked.qcow2']);
    expect(Object.keys(texts).sort()).toEqual(['SHA256SUMS', 'manifest.json']);
    expect(JSON.parse(texts['manifest.json']!).variables).toEqual({ token: '<sensitive>' });
    const insecureLines = uniquePemLines(insecureKey);
    for (const [name, text] of Object.entries(texts)) {
      for (const secret of [token, password, ...insecureLines]) expect(text, name).not.toContain(secret);
    }
    // The guest's /tmp (where scripts are uploaded) is a tmpfs: nothing of this build holds the
    // secrets on disk, and the key kiln logged in with (a file on the host) never went in.
    const hits = await searchDisk(path.join(out, 'masked.qcow2'), {
      privateKey: privateKeyPattern, token: new RegExp(escape(token)), password: new RegExp(escape(password)),
      insecureKey: new RegExp(insecureLines.map(escape).join('|')),
    }, dir);
    expect(hits).toEqual({ privateKey: [], token: [], password: [], insecureKey: [] });
  }, 300_000);

  it('a build key kiln generates (ISO install of the tiny guest) is not in the artifact: no private key, not its public key', async () => {
    const out = path.join(dir, 'out', 'genkey');
    const pubFile = path.join(dir, 'genkey.pub');
    const file = path.join(dir, 'genkey.yaml');
    writeFileSync(file, `
builds:
  - name: genkey
    output_directory: ${out}
${installerSourceYaml()}
    provisioners:${recordPublicKey(pubFile)}
    outputs:
      - format: qcow2
`);
    const run = await kiln(['build', file, '--events=json', '--debug'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    const publicKey = readFileSync(pubFile, 'utf8').trim();
    const body = publicKey.split(/\s+/)[1]!;
    expect(body).toMatch(/^AAAAC3NzaC1lZDI1NTE5/);
    for (const [name, text] of Object.entries(outputTextFiles(out, ['genkey.qcow2']))) expect(text, name).not.toMatch(privateKeyPattern);
    expect(run.stdout + run.stderr).not.toMatch(privateKeyPattern);
    const hits = await searchDisk(path.join(out, 'genkey.qcow2'), { privateKey: privateKeyPattern, buildPublicKey: new RegExp(escape(body)) }, dir);
    expect(hits).toEqual({ privateKey: [], buildPublicKey: [] });
  }, 400_000);
});
