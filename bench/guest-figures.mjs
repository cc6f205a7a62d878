// Figures measured on a booted Debian fixture guest (bench/debian-guest.mjs), for `make bench`:
// kiln's SFTP transfers against scp to the same guest (boot-to-SSH per seed is in seed.mjs).
import { execa } from 'execa';
import { closeSync, openSync, rmSync, writeSync, mkdtempSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { bootDebian } from './debian-guest.mjs';

const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

/** Uploads and downloads of `mib` MiB of random data: kiln's session vs scp, rounds alternating. */
export async function transferThroughput(mib = Number(process.env.BENCH_TRANSFER_MIB ?? 256), rounds = Number(process.env.BENCH_ROUNDS ?? 3)) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-xfer-'));
  const src = path.join(dir, 'blob');
  { const fd = openSync(src, 'w'); for (let i = 0; i < mib; i++) writeSync(fd, randomBytes(1 << 20)); closeSync(fd); }
  const g = await bootDebian({ seed: 'kiln' });
  const t = { 'kiln upload': [], 'scp upload': [], 'kiln download': [], 'scp download': [] };
  const time = async (name, fn) => { const s = performance.now(); await fn(); t[name].push(performance.now() - s); };
  try {
    await g.session.run('cloud-init status --wait >/dev/null 2>&1 || true');
    for (let r = 0; r < rounds; r++) {
      await time('scp upload', () => execa('scp', [...g.sshOptions, src, 'kiln@127.0.0.1:/var/tmp/scp.bin']));
      await time('kiln upload', () => g.session.uploadFile(src, '/var/tmp/kiln.bin'));
      await time('scp download', () => execa('scp', [...g.sshOptions, 'kiln@127.0.0.1:/var/tmp/scp.bin', path.join(dir, 'scp.bin')]));
      await time('kiln download', () => g.session.download('/var/tmp/kiln.bin', path.join(dir, 'kiln.bin')));
    }
  } finally {
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\ntransfers of ${mib} MiB to/from the Debian fixture guest (TCG), medians of ${rounds}`);
  for (const way of ['upload', 'download']) {
    const k = median(t[`kiln ${way}`]);
    const s = median(t[`scp ${way}`]);
    console.log(`  ${way.padEnd(10)} kiln ${fmt(k).padStart(9)} (${(mib / (k / 1000)).toFixed(1)} MiB/s)   scp ${fmt(s).padStart(9)} (${(mib / (s / 1000)).toFixed(1)} MiB/s)   kiln/scp ${(k / s).toFixed(2)}`);
  }
}
