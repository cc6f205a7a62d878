// A Debian 12 cloud guest booted for measurements (not a build): an overlay on the fixture, a cidata
// seed (kiln's own, or a minimal one like Packer's), QEMU as kiln runs it, and a logged-in SSH session.
// Used by bench/run.mjs for the upload/download throughput against scp and for boot-to-sshd per seed.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildQemuArgs } from '../dist/qemu/argv.js';
import { QemuProcess } from '../dist/qemu/process.js';
import { createOverlay } from '../dist/qemu/qemu-img.js';
import { waitForSsh } from '../dist/communicator/ssh.js';
import { generateKeyPair } from '../dist/communicator/keys.js';
import { renderSeed, writeSeedIso } from '../dist/cloudinit/seed.js';
import { freePort } from '../dist/qemu/ports.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const debianFixture = path.join(root, 'fixtures/images/debian-12-cloud.qcow2');

/** The smallest seed that gives a login: a user with a key, as Packer's plain cloud-init seeds do. */
function minimalSeed(username, authorizedKey) {
  const userData = [
    '#cloud-config',
    'users:',
    '  - default',
    `  - name: ${username}`,
    '    sudo: ALL=(ALL) NOPASSWD:ALL',
    '    shell: /bin/bash',
    '    ssh_authorized_keys:',
    `      - ${authorizedKey}`,
    '',
  ].join('\n');
  return { userData, metaData: `instance-id: bench-${Date.now()}\nlocal-hostname: bench\n`, instanceId: 'bench' };
}

/**
 * Boots the fixture with `seed` ('kiln' | 'minimal'); resolves once logged in, with loginMs from QEMU's
 * start. No separate banner poll: every TCP connection makes the guest's sshd fork a child, and
 * polling every 100 ms kept a TCG guest from ever finishing its boot.
 */
export async function bootDebian({ seed = 'kiln', cpus = 2, memoryMiB = 1024, extraArgs = [] } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-guest-'));
  const disk = path.join(dir, 'disk.qcow2');
  await createOverlay(debianFixture, 'qcow2', disk, 4 * 2 ** 30);
  const client = generateKeyPair('kiln-build-bench');
  const hostKey = generateKeyPair('kiln-host-bench');
  const rendered =
    seed === 'kiln'
      ? renderSeed({
          hostname: 'bench',
          username: 'kiln',
          authorizedKey: client.publicKey,
          hostKey,
          userData: {},
          metaData: {},
        })
      : minimalSeed('kiln', client.publicKey);
  const iso = path.join(dir, 'cidata.iso');
  await writeSeedIso(rendered, dir, iso);
  const port = await freePort();
  const argv = buildQemuArgs({
    name: 'bench',
    accelerator: 'tcg',
    cpus,
    memoryMiB,
    machine: 'pc',
    firmware: { type: 'bios' },
    disks: [{ path: disk, format: 'qcow2', interface: 'virtio', discard: true }],
    cdroms: [iso],
    net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: port, guestPort: 22 }] },
    qmpSocket: path.join(dir, 'q.sock'),
    serial: { socket: path.join(dir, 's.sock'), log: path.join(dir, 'serial.log') },
    headless: true,
    extraArgs,
  });
  const started = performance.now();
  const qemu = QemuProcess.start(argv);
  const target = {
    host: '127.0.0.1',
    port,
    username: 'kiln',
    privateKey: client.privateKey,
    ...(seed === 'kiln' ? { hostKeyFingerprint: hostKey.fingerprint } : { trustOnFirstUse: true }),
  };
  let session;
  try {
    session = await waitForSsh(target, {
      timeoutMs: Number(process.env.BENCH_SSH_TIMEOUT_MS ?? 600_000),
      onAttempt: process.env.BENCH_DEBUG ? (n, e, o) => console.error('attempt', n, o, e.message) : undefined,
      abort: () => (qemu.hasExited ? `QEMU exited: ${qemu.stderr}` : undefined),
    });
  } catch (e) {
    await qemu.kill(1000);
    // The guest's console says why (a kernel panic under load, cloud-init's errors): kept in the error.
    let consoleTail = '';
    try {
      consoleTail = readFileSync(path.join(dir, 'serial.log'), 'latin1').split('\n').slice(-40).join('\n');
    } catch {
      /* no console output */
    }
    rmSync(dir, { recursive: true, force: true });
    if (consoleTail) e.message += `\n--- last lines of the guest's serial console (${seed} seed) ---\n${consoleTail}`;
    throw e;
  }
  const loginAt = performance.now();
  const keyFile = path.join(dir, 'id');
  writeFileSync(keyFile, client.privateKey, { mode: 0o600 });
  return {
    session,
    port,
    dir,
    keyFile,
    qemu,
    loginMs: loginAt - started,
    /** OpenSSH client options reaching this guest (scp/ssh). */
    sshOptions: [
      '-P',
      String(port),
      '-i',
      keyFile,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
    ],
    async stop() {
      session.close();
      await qemu.kill(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
