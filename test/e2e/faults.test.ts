// Faults, end to end: the real kiln CLI, real QEMU and the tiny fixture guest. Each test breaks one
// thing (the guest, the connection, the disk, the host's tools, the network) and checks that kiln says
// what went wrong, exits 1 and leaves nothing behind: no QEMU, no work directory, no partial output.
import { randomBytes } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, insecureKey, insecurePublicKey, repoRoot, tinySourceYaml } from '../helpers/guest.js';
import { kiln, spawnKiln, type KilnRun } from '../helpers/kiln.js';
import { expectNoLeftovers, snapshotLeftovers } from '../helpers/leftovers.js';
import { unfinishedCacheFiles } from '../helpers/process-audit.js';
import { freePort } from '../../src/qemu/ports.js';
import { waitForSsh } from '../../src/communicator/ssh.js';
import { fingerprintOf } from '../../src/communicator/keys.js';
import { fileDigest } from '../../src/cache/digest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'faults-e2e-'));
const cacheDir = path.join(dir, 'cache');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Build names are unique per run, so leftovers are matched to this run, not to other engineers' VMs. */
const run = randomBytes(2).toString('hex');
const tinyImage = path.join(imagesDir, 'tiny.qcow2');
/** TCG without probing KVM, a private cache: only the accelerator tests ask for more. */
const env = { KILN_CACHE_DIR: cacheDir, KILN_ACCELERATOR: 'tcg' };

interface BuildSpec {
  name: string;
  provisioners?: string;
  /** Replaces lines of the tiny source block by key (base_image, checksum, communicator...) or adds them. */
  source?: Record<string, string>;
  outputDirectory?: string;
}

function tinySource(overrides: Record<string, string>): string {
  const lines = tinySourceYaml('    ').split('\n');
  const rest = { ...overrides };
  const replaced = lines.map((line) => {
    const key = /^ {6}([a-z_]+):/.exec(line)?.[1];
    if (!key || !(key in rest)) return line;
    const value = rest[key]!;
    delete rest[key];
    return `      ${key}: ${value}`;
  });
  return [...replaced, ...Object.entries(rest).map(([k, v]) => `      ${k}: ${v}`)].join('\n');
}

/** Writes a one-build template; returns its path, the build name and the output directory. */
function template(b: BuildSpec): { file: string; build: string; outputDir: string } {
  const build = `${b.name}-${run}`;
  const outputDir = b.outputDirectory ?? path.join(dir, 'out', build);
  const file = path.join(dir, `${build}.yaml`);
  writeFileSync(
    file,
    `builds:
  - name: ${build}
    output_directory: ${outputDir}
${tinySource(b.source ?? {})}
    provisioners:
${
  b.provisioners ??
  `      - type: shell
        inline: ['true']`
}
    outputs:
      - format: qcow2
`,
  );
  return { file, build, outputDir };
}

function errorOf(r: KilnRun): string {
  const end = r.events.find((e) => e.type === 'build-end');
  return String(end?.error ?? r.stderr);
}

/** A port and the one after it, both free on loopback right now. */
async function twoFreePorts(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p >= 65535) continue;
    const next = await new Promise<boolean>((resolve) => {
      const s = net
        .createServer()
        .once('error', () => resolve(false))
        .listen(p + 1, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (next) return p;
  }
}

function occupy(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net
      .createServer((c) => c.destroy())
      .once('error', reject)
      .listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe('faults: the guest', () => {
  it('1. a guest whose SSH never answers: timeout with the serial console tail and the QEMU command', async () => {
    // The tiny guest boots and runs dropbear on 22; the communicator looks on 2222, where nothing listens.
    // The boot command waits for the guest's "ready" line, so the 20 s start only once it has booted,
    // however slow a loaded machine makes the boot, and the console tail must show that line.
    const t = template({
      name: 'ssh-never',
      source: {
        communicator: `{ username: root, private_key_file: ${path.join(repoRoot, 'fixtures/keys/insecure_ed25519')}, trust_on_first_use: true, timeout: 20s, port: 2222 }`,
        boot_command: `['<waitFor "kiln-tiny: ready" 5m>']`,
      },
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    expect(error).toMatch(
      /timed out waiting for the guest's SSH server \(port 2222 in the guest, communicator.timeout 20s\)/,
    );
    expect(error).toMatch(/did not succeed within 20 s/);
    expect(error).toMatch(/fix: check that the guest boots and runs an SSH server on port 2222/);
    const tail = /--- last lines of the serial console \(.*\) ---\n([\s\S]*)\n--- QEMU command ---\n(.*)/.exec(error);
    expect(tail, error).not.toBeNull();
    const consoleLines = tail![1]!.split('\n');
    expect(consoleLines.length).toBeGreaterThan(5);
    expect(consoleLines.length).toBeLessThanOrEqual(30);
    expect(tail![1]).toContain('kiln-tiny: ready'); // the guest did boot: its console is really quoted
    expect(tail![2]).toMatch(/^qemu-system-x86_64 .*hostfwd=tcp:127\.0\.0\.1:\d+-:2222/);
    expectNoLeftovers(before);
  }, 120_000);

  it('1b. a user the guest refuses: named with the key kiln offered, failing without waiting out communicator.timeout', async () => {
    // The tiny guest has no cloud-init and no user "bob": its dropbear answers every attempt and refuses
    // the login, which nothing in the guest will change. communicator.timeout is 5m; the test allows 3.
    const keyFile = path.join(repoRoot, 'fixtures/keys/insecure_ed25519');
    const t = template({
      name: 'ssh-refused',
      source: {
        communicator: `{ username: bob, private_key_file: ${keyFile}, trust_on_first_use: true, timeout: 5m }`,
      },
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    const refused = `refused login as "bob" with communicator.private_key_file ${keyFile} (ed25519 ${fingerprintOf(insecurePublicKey)})`;
    expect(error).toMatch(/^wait for SSH: the guest's SSH server /);
    expect(error).toContain(refused);
    expect(error).toContain(
      'the build gives the guest no cloud-init (cloud_init: false) that could still create the user or authorize the key, so kiln stopped after 30 s of refusals instead of waiting out communicator.timeout 5m',
    );
    expect(error).toContain(
      'fix: check communicator.username ("bob" must be a user of the image) and that the image trusts the key of communicator.private_key_file',
    );
    expect(error).not.toMatch(/check that the guest boots|timed out/);
    const tail = /--- last lines of the serial console \(.*\) ---\n([\s\S]*)\n--- QEMU command ---\n(.*)/.exec(error);
    expect(tail, error).not.toBeNull();
    expect(tail![1]).toContain('Login attempt for nonexistent user'); // dropbear's side of it
    expect(tail![2]).toMatch(/^qemu-system-x86_64 /);
    expectNoLeftovers(before);
  }, 180_000);

  it('2a. the guest powers off during a provisioner: fails at once, naming the provisioner', async () => {
    const t = template({
      name: 'poweroff',
      provisioners: `      - type: shell
        inline: ['true']
      - type: shell
        inline: ['echo going down', 'echo o > /proc/sysrq-trigger', 'sleep 600']`,
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    expect(errorOf(r)).toMatch(
      /^provision: provisioner 2: the VM exited while the provisioner ran: the guest powered off \(QEMU exited with status 0\)/,
    );
    expect(r.events.filter((e) => e.type === 'provisioner-end').map((e) => e.index)).toEqual([0]);
    expectNoLeftovers(before);
  }, 120_000);

  it('2b. the guest kernel panics during a provisioner: fails at once (not after SSH keepalives), quoting the panic', async () => {
    // A panicked guest keeps its TCP connections open: only the console tells.
    const t = template({
      name: 'panic',
      provisioners: `      - type: shell
        inline: ['true']
      - type: shell
        inline: ['echo about to panic', 'echo c > /proc/sysrq-trigger', 'sleep 600']`,
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    expect(error).toMatch(
      /^provision: provisioner 2: the guest kernel panicked while the provisioner ran \(Kernel panic - not syncing: sysrq triggered crash\)\n/,
    );
    expect(error).toContain('Kernel panic - not syncing');
    expectNoLeftovers(before);
  }, 120_000);

  it('3. a provisioner exits non-zero: the error names it, its exit code and its last output lines', async () => {
    const t = template({
      name: 'exit7',
      provisioners: `      - type: shell
        inline: ['true']
      - type: shell
        inline: ['for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "line $i"; done', 'echo "on stderr" >&2', 'exit 7']`,
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    expect(error).toMatch(/^provision: provisioner 2: script "inline" exited with 7 \(valid: 0\); its last output:\n/);
    // The last ten lines, in order, in the message itself (not only in the streamed output).
    expect(error.split('\n').slice(1)).toEqual(
      ['line 4', 'line 5', 'line 6', 'line 7', 'line 8', 'line 9', 'line 10', 'line 11', 'line 12', 'on stderr'].map(
        (l) => `  ${l}`,
      ),
    );
    expectNoLeftovers(before);
  }, 120_000);

  it('3b. a shutdown_command that fails: named with its exit code and output at once, not as a guest that did not power off', async () => {
    const t = template({
      name: 'shutdown-fails',
      source: { shutdown_command: `"sh -c 'echo nope >&2; exit 3'"`, shutdown_timeout: '5m' },
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    expect(error).toBe(
      `shut down: shutdown_command "sh -c 'echo nope >&2; exit 3'" exited with 3 and the guest kept running; QEMU was killed and the disk is not captured; its last output:\n  nope\n` +
        '  fix: correct shutdown_command: run as "root", it must power the guest off (as root, or through "sudo -n" with passwordless sudo)',
    );
    expect(r.stderr).not.toMatch(/did not power off|sending ACPI power-down/);
    expectNoLeftovers(before);
  }, 120_000);
});

describe('faults: the connection', () => {
  it('4. the SSH connection drops in the middle of a file upload: a clear failed-upload error, no output', async () => {
    const big = path.join(dir, 'big.bin');
    await execa('truncate', ['-s', '200M', big]);
    const t = template({
      name: 'upload-drop',
      provisioners: `      - type: file
        source: ${big}
        destination: /root/big.bin`,
    });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    // A second login, opened as soon as QEMU runs, waits in the guest until the upload has written
    // 8 MB, then kills the dropbear process serving kiln's SFTP session: driven by the guest, no sleeps.
    let breaker: Promise<string> | undefined;
    const r = await spawnKiln(['build', t.file, '--events=json'], {
      env,
      onEvent: (e) => {
        const port = /ssh on 127\.0\.0\.1:(\d+)/.exec(String(e.message ?? ''))?.[1];
        if (e.type !== 'log' || !port || breaker) return;
        breaker = (async () => {
          const ssh = await waitForSsh(
            { host: '127.0.0.1', port: Number(port), username: 'root', privateKey: insecureKey, trustOnFirstUse: true },
            { timeoutMs: 120_000 },
          );
          try {
            return await ssh.run(
              [
                'while [ "$(stat -c %s /root/big.bin 2>/dev/null || echo 0)" -lt 8000000 ]; do sleep 0.1; done',
                'p=$(pidof sftp-server)',
                'while [ "$(cat /proc/$p/comm)" != dropbear ]; do p=$(cut -d" " -f4 /proc/$p/stat); done',
                'kill -9 $p && echo "killed $p"',
              ].join('; '),
            );
          } finally {
            ssh.close();
          }
        })();
      },
    }).done;
    expect(await breaker).toMatch(/^killed \d+/);
    expect(r.exitCode).toBe(1);
    const error = errorOf(r);
    expect(error).toMatch(
      new RegExp(
        `^provision: provisioner 1: uploading ${big} to /root/big.bin failed: the SSH connection was lost \\(\\d.* of 200\\.0 MiB sent\\)`,
      ),
    );
    expect(error).not.toMatch(/200\.0 MiB of 200\.0 MiB/);
    expectNoLeftovers(before);
  }, 180_000);
});

describe('faults: the host', () => {
  it('5. the output file system fills up during conversion: disk-full error naming the output, nothing left on it', async () => {
    const mnt = mkdtempSync(path.join(os.tmpdir(), 'faults-tmpfs-'));
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=20M', 'tmpfs', mnt]);
    try {
      const t = template({ name: 'enospc', outputDirectory: path.join(mnt, 'out') });
      const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
      const r = await kiln(['build', t.file, '--events=json'], env);
      expect(r.exitCode).toBe(1);
      const error = errorOf(r);
      expect(error).toMatch(
        new RegExp(
          `^convert disk: disk full \\(ENOSPC\\) while writing ${mnt}/out/${t.build}\\.qcow2 \\(staged as ${mnt}/\\.out\\.kiln-partial-\\d+/${t.build}\\.qcow2`,
        ),
      );
      expect(error).toMatch(/fix: free space on the file system of .*, or set output_directory to one with room/);
      expect(error).toMatch(/No space left on device/);
      expectNoLeftovers(before);
      expect(readdirSync(mnt)).toEqual([]);
    } finally {
      await execa('umount', [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  }, 120_000);

  it('6. QEMU or qemu-img missing: names the binary, the package to install and the variable to set', async () => {
    for (const [variable, tool, pkg] of [
      ['KILN_QEMU', 'qemu-system-x86_64', 'qemu-system-x86'],
      ['KILN_QEMU_IMG', 'qemu-img', 'qemu-utils'],
    ] as const) {
      const t = template({ name: `no-${tool}` });
      const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
      const r = await kiln(['build', t.file, '--events=json'], { ...env, [variable]: '/nonexistent/bin/qemu' });
      expect(r.exitCode).toBe(1);
      expect(errorOf(r)).toMatch(
        new RegExp(
          `${tool} not found: /nonexistent/bin/qemu \\(set by ${variable}\\) does not exist or is not executable\\n  fix: apt-get install ${pkg} \\(make setup does it\\), or set ${variable} to the path of ${tool}`,
        ),
      );
      expectNoLeftovers(before);
    }
  }, 60_000);

  it('7a. accelerator: kvm where KVM does not work fails fast with a fix; so does KILN_ACCELERATOR=kvm', async () => {
    const accelCache = path.join(dir, 'accel-cache'); // empty, for the probe's image and its answers: the probe really runs
    const t = template({ name: 'kvm', source: { accelerator: 'kvm' } });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir, markers: [accelCache] });
    const r = await kiln(['build', t.file, '--events=json'], {
      KILN_CACHE_DIR: accelCache,
      KILN_ACCEL_CACHE: accelCache,
      KILN_ACCELERATOR: '',
    });
    expect(r.exitCode).toBe(1);
    expect(errorOf(r)).toMatch(
      /^launch QEMU: accelerator "kvm" does not work on this host: .+\n  fix: set accelerator: auto \(falls back to tcg\) or accelerator: tcg in the template$/,
    );
    expectNoLeftovers(before);

    const fromEnv = template({ name: 'kvm-env' });
    const beforeEnv = snapshotLeftovers({ build: fromEnv.build, outputDir: fromEnv.outputDir, markers: [accelCache] });
    const e = await kiln(['build', fromEnv.file, '--events=json'], {
      KILN_CACHE_DIR: accelCache,
      KILN_ACCEL_CACHE: accelCache,
      KILN_ACCELERATOR: 'kvm',
    });
    expect(e.exitCode).toBe(1);
    expect(errorOf(e)).toMatch(
      /accelerator "kvm" \(from KILN_ACCELERATOR\) does not work on this host: .+\n  fix: unset KILN_ACCELERATOR, or set it to tcg$/,
    );
    expectNoLeftovers(beforeEnv);
  }, 60_000);

  it('7b. accelerator: auto where KVM does not work: exactly one fallback line, and the build succeeds on TCG', async () => {
    const accelCache = path.join(dir, 'accel-cache'); // the probe's answer from 7a, if it ran
    const t = template({ name: 'auto', source: { accelerator: 'auto' } });
    const r = await kiln(['build', t.file, '--events=json'], {
      KILN_CACHE_DIR: accelCache,
      KILN_ACCEL_CACHE: accelCache,
      KILN_ACCELERATOR: '',
    });
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    const fallback = r.stderr.split('\n').filter((l) => /falling back/i.test(l));
    expect(fallback).toHaveLength(1);
    expect(fallback[0]).toMatch(
      /warning: kvm is not usable \(.+\); falling back to TCG software emulation, which is much slower$/,
    );
    expect(JSON.parse(readFileSync(path.join(t.outputDir, 'manifest.json'), 'utf8')).accelerator).toBe('tcg');
  }, 120_000);

  it('8a. the pinned SSH port is taken: kiln moves on to the next port of KILN_SSH_HOST_PORTS and builds', async () => {
    const port = await twoFreePorts();
    const blocker = await occupy(port);
    try {
      const t = template({ name: 'port-next' });
      const r = await kiln(['build', t.file, '--events=json'], { ...env, KILN_SSH_HOST_PORTS: `${port}-${port + 1}` });
      expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
      expect(r.stderr).toContain(
        `warning: port ${port} on 127.0.0.1 is in use; trying the next port of KILN_SSH_HOST_PORTS`,
      );
      expect(r.stderr).toContain(`ssh on 127.0.0.1:${port + 1})`);
    } finally {
      blocker.close();
    }
  }, 120_000);

  it('8b. every pinned SSH port is taken: a clear error naming the port and the fix', async () => {
    const port = await freePort();
    const blocker = await occupy(port);
    try {
      const t = template({ name: 'port-taken' });
      const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
      const r = await kiln(['build', t.file, '--events=json'], { ...env, KILN_SSH_HOST_PORTS: String(port) });
      expect(r.exitCode).toBe(1);
      expect(errorOf(r)).toBe(
        `launch QEMU: no free port for the SSH forward in KILN_SSH_HOST_PORTS=${port}: ${port} on 127.0.0.1 is in use\n  fix: stop what listens there, widen KILN_SSH_HOST_PORTS, or unset it to let kiln pick a free port`,
      );
      expectNoLeftovers(before);
    } finally {
      blocker.close();
    }
  }, 60_000);
});

describe('faults: the base image', () => {
  it('9. a local base image whose checksum does not match: expected and actual digests, nothing created', async () => {
    const wrong = 'ab'.repeat(32);
    const t = template({ name: 'bad-sum', source: { checksum: `sha256:${wrong}` } });
    const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
    const r = await kiln(['build', t.file, '--events=json'], env);
    expect(r.exitCode).toBe(1);
    expect(errorOf(r)).toBe(
      `fetch base image: checksum mismatch for ${tinyImage}: expected sha256:${wrong}, got sha256:${await fileDigest(tinyImage)}\n  fix: the file changed or the checksum is wrong; correct "checksum" or use "none"`,
    );
    expectNoLeftovers(before);
  }, 60_000);

  describe('10. downloads', () => {
    // Serves the tiny image; in "drop" mode it announces the whole length, sends half, and hangs up.
    let mode: 'drop' | 'ok' = 'drop';
    const size = statSync(tinyImage).size;
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Length': size, 'Content-Type': 'application/octet-stream' });
      if (mode === 'ok') {
        createReadStream(tinyImage).pipe(res);
        return;
      }
      createReadStream(tinyImage, { end: Math.floor(size / 2) - 1 })
        .on('data', (c) => res.write(c))
        .on('end', () => req.socket.destroy());
    });
    const listening = new Promise<string>((resolve) =>
      server.listen(0, '127.0.0.1', () =>
        resolve(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/tiny.qcow2`),
      ),
    );
    afterAll(() => {
      server.close();
    });

    const downloads = (cache: string) =>
      existsSync(path.join(cache, 'downloads')) ? readdirSync(path.join(cache, 'downloads')).sort() : [];

    it('a download cut off half-way fails clearly and caches nothing; the next run downloads again and builds', async () => {
      const url = await listening;
      const digest = await fileDigest(tinyImage);
      const cache = path.join(dir, 'download-cache');
      mkdirSync(cache, { recursive: true });
      const t = template({ name: 'dl-cut', source: { base_image: url, checksum: `sha256:${digest}` } });
      const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
      mode = 'drop';
      const r = await kiln(['build', t.file, '--events=json'], { ...env, KILN_CACHE_DIR: cache });
      expect(r.exitCode).toBe(1);
      expect(errorOf(r)).toMatch(
        new RegExp(
          `^fetch base image: downloading ${url} was interrupted after .+ of ${(size / 2 ** 20).toFixed(1)} MiB: .+; nothing was cached\\n  fix: run the build again \\(the download starts over\\)$`,
        ),
      );
      expect(downloads(cache)).toEqual([]);
      expect(unfinishedCacheFiles(cache)).toEqual([]);
      expectNoLeftovers(before);

      mode = 'ok';
      const again = await kiln(['build', t.file, '--events=json'], { ...env, KILN_CACHE_DIR: cache });
      expect(again.exitCode, again.stderr.slice(-2000)).toBe(0);
      expect(downloads(cache)).toEqual([`sha256-${digest}`, expect.stringMatching(/^url-[0-9a-f]+\.json$/)]);
      expect(JSON.parse(readFileSync(path.join(t.outputDir, 'manifest.json'), 'utf8')).base_image.sha256).toBe(digest);
    }, 180_000);

    it('a download whose checksum does not match fails with both digests and caches nothing', async () => {
      const url = await listening;
      const cache = path.join(dir, 'mismatch-cache');
      const wrong = 'cd'.repeat(32);
      const t = template({ name: 'dl-sum', source: { base_image: url, checksum: `sha256:${wrong}` } });
      const before = snapshotLeftovers({ build: t.build, outputDir: t.outputDir });
      mode = 'ok';
      const r = await kiln(['build', t.file, '--events=json'], { ...env, KILN_CACHE_DIR: cache });
      expect(r.exitCode).toBe(1);
      expect(errorOf(r)).toBe(
        `fetch base image: checksum mismatch for ${url}: expected sha256:${wrong}, got sha256:${await fileDigest(tinyImage)}; nothing was cached\n  fix: the server sent a different file or the checksum is wrong; correct "checksum" or use "none"`,
      );
      expect(downloads(cache)).toEqual([]);
      expect(unfinishedCacheFiles(cache)).toEqual([]);
      expectNoLeftovers(before);
    }, 60_000);
  });
});
