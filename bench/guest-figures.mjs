// Figures measured on a booted Debian fixture guest (bench/debian-guest.mjs), for `make bench`:
// kiln's transfers (exec streams and SFTP) against scp to the same guest (boot-to-SSH per seed is in seed.mjs).
import { execa } from 'execa';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { bootDebian } from './debian-guest.mjs';

const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

/**
 * Uploads and downloads of `mib` MiB of random data to a booted Debian guest: kiln's session (SFTP with
 * requests in flight, what every mode uses for a single file) against scp, rounds alternating;
 * then a folder of `BENCH_TRANSFER_FILES` (1000) small files: kiln's tar stream against `scp -r`.
 */
export async function transferThroughput(
  mib = Number(process.env.BENCH_TRANSFER_MIB ?? 256),
  rounds = Number(process.env.BENCH_ROUNDS ?? 3),
) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-xfer-'));
  const src = path.join(dir, 'blob');
  {
    const fd = openSync(src, 'w');
    for (let i = 0; i < mib; i++) writeSync(fd, randomBytes(1 << 20));
    closeSync(fd);
  }
  const nFiles = Number(process.env.BENCH_TRANSFER_FILES ?? 1000);
  const tree = path.join(dir, 'tree');
  for (let i = 0; i < nFiles; i++) {
    const sub = path.join(tree, `d${i % 10}`);
    if (i < 10) mkdirSync(sub, { recursive: true });
    writeFileSync(path.join(sub, `f${i}`), randomBytes(1024 + (i % 7) * 512));
  }
  const treeMiB = (nFiles * (1024 + 3 * 512)) / 2 ** 20;
  const g = await bootDebian({ seed: 'kiln' });
  const t = {};
  const load = [];
  // Each transfer starts with the guest's earlier writes on its disk (a sync, not timed): otherwise the
  // second of a pair pays the first one's write-back of 256 MiB, and the pair's order decides the ratio.
  const time = async (name, fn) => {
    await g.session.run('sync');
    const s = performance.now();
    await fn();
    (t[name] ??= []).push(performance.now() - s);
    load.push(Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]));
  };
  const kiln = (mode, fn) => async () => {
    g.session.transferMode = mode;
    try {
      await fn();
    } finally {
      g.session.transferMode = 'auto';
    }
  };
  const scp = (...args) => execa('scp', [...g.sshOptions, ...args]);
  try {
    await g.session.run('cloud-init status --wait >/dev/null 2>&1 || true');
    for (let r = 0; r < rounds; r++) {
      // Single files: which tool goes first alternates from round to round.
      const pair = async (...runs) => {
        for (const [name, fn] of r % 2 ? runs.reverse() : runs) await time(name, fn);
      };
      await g.session.run('rm -f /var/tmp/scp.bin /var/tmp/kiln.bin');
      await pair(
        ['scp upload', () => scp(src, 'kiln@127.0.0.1:/var/tmp/scp.bin')],
        ['kiln upload', kiln('auto', () => g.session.uploadFile(src, '/var/tmp/kiln.bin', 0o644))],
      );
      await pair(
        ['scp download', () => scp('kiln@127.0.0.1:/var/tmp/scp.bin', path.join(dir, 'scp.bin'))],
        ['kiln download', kiln('auto', () => g.session.download('/var/tmp/kiln.bin', path.join(dir, 'kiln.bin')))],
      );
      await g.session.run(
        'rm -rf /var/tmp/scp-tree /var/tmp/kiln-tree /var/tmp/sftp-tree; mkdir /var/tmp/kiln-tree /var/tmp/sftp-tree',
      );
      await time('scp -r folder upload', () => scp('-r', tree, 'kiln@127.0.0.1:/var/tmp/scp-tree'));
      await time(
        'kiln folder upload',
        kiln('auto', () => g.session.upload(`${tree}/`, '/var/tmp/kiln-tree')),
      );
      await time(
        'kiln sftp folder upload',
        kiln('sftp', () => g.session.upload(`${tree}/`, '/var/tmp/sftp-tree')),
      );
      rmSync(path.join(dir, 'back'), { recursive: true, force: true });
      await time('scp -r folder download', () =>
        scp('-r', 'kiln@127.0.0.1:/var/tmp/scp-tree', path.join(dir, 'back-scp')),
      );
      await time(
        'kiln folder download',
        kiln('auto', () => g.session.download('/var/tmp/kiln-tree', path.join(dir, 'back'))),
      );
      rmSync(path.join(dir, 'back-scp'), { recursive: true, force: true });
    }
  } finally {
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const rate = (ms, size) => `${(size / (ms / 1000)).toFixed(1)} MiB/s`;
  console.log(
    `\ntransfers to/from the Debian fixture guest (TCG, 2 vCPUs), medians of ${rounds} alternating rounds, load ${Math.min(...load).toFixed(1)}-${Math.max(...load).toFixed(1)}`,
  );
  for (const way of ['upload', 'download']) {
    // A single file goes over SFTP whatever the mode (the exec-stream path for files is gone): one row.
    const k = median(t[`kiln ${way}`]);
    const s = median(t[`scp ${way}`]);
    console.log(
      `  ${mib} MiB ${way.padEnd(9)} kiln (SFTP) ${fmt(k).padStart(9)} (${rate(k, mib)})   scp ${fmt(s).padStart(9)} (${rate(s, mib)})   kiln/scp ${(k / s).toFixed(2)}`,
    );
  }
  for (const way of ['upload', 'download']) {
    const k = median(t[`kiln folder ${way}`]);
    const s = median(t[`scp -r folder ${way}`]);
    const f = t[`kiln sftp folder ${way}`] ? median(t[`kiln sftp folder ${way}`]) : undefined;
    console.log(
      `  ${nFiles} files (${treeMiB.toFixed(1)} MiB) ${way.padEnd(9)} kiln ${fmt(k).padStart(9)}${f !== undefined ? `   kiln SFTP ${fmt(f).padStart(9)}` : ''}   scp -r ${fmt(s).padStart(9)}   kiln/scp ${(k / s).toFixed(2)}`,
    );
  }
}
