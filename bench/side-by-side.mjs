#!/usr/bin/env node
// `BENCH_ONLY=packer make bench`: kiln against Packer 1.6.6's qemu builder, side by side in one run,
// on bench/side-by-side/{kiln.yaml,packer.json}: the same Debian fixture as the base (kiln boots an
// overlay on it; Packer copies it, because its use_backing_file passes no backing format, which
// qemu-img 7.2 refuses: "Backing file specified without backing format"), 2 vCPUs,
// 1024 MiB, TCG, the same provisioning (a script writing 100 files and a 64 MiB blob, a 16 MiB file
// upload, a sha256sum of it) and one uncompressed qcow2. Rounds alternate kiln and Packer; each kiln
// round is a cold build (fresh cache), then a no-change rebuild and a last-provisioner-changed rebuild
// on that cache. Prints per-phase medians and the ratios kiln/Packer. Skipped with a note when
// packer is not installed (apt-get install packer).
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { root } from './debian-guest.mjs';
import { generateKeyPair } from '../dist/communicator/keys.js';

const dir = path.join(root, 'bench/side-by-side');
const fmt = (ms) => (ms === undefined || Number.isNaN(ms) ? '-' : `${(ms / 1000).toFixed(2)} s`);
const median = (xs) => { const v = xs.filter((x) => x !== undefined).sort((a, b) => a - b); return v.length ? v[Math.floor((v.length - 1) / 2)] : undefined; };

export async function sideBySide(rounds = Number(process.env.BENCH_ROUNDS ?? 3)) {
  if (spawnSync('packer', ['version']).status !== 0) {
    console.log('\nkiln vs Packer: skipped, packer is not installed (apt-get install -y packer gives 1.6.6 with its qemu builder)');
    return;
  }
  const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-sbs-'));
  const upload = path.join(work, 'upload.bin');
  { const fd = openSync(upload, 'w'); for (let i = 0; i < 16; i++) writeSync(fd, randomBytes(1 << 20)); closeSync(fd); }
  // Packer's seed: the plain NoCloud-Net user-data a Packer user writes (a user with a key).
  const key = generateKeyPair('packer-bench');
  writeFileSync(path.join(work, 'id'), key.privateKey, { mode: 0o600 });
  const http = path.join(work, 'http');
  mkdirSync(http);
  writeFileSync(path.join(http, 'user-data'), ['#cloud-config', 'users:', '  - default', '  - name: kiln', '    sudo: ALL=(ALL) NOPASSWD:ALL',
    '    shell: /bin/bash', '    ssh_authorized_keys:', `      - ${key.publicKey}`, ''].join('\n'));
  writeFileSync(path.join(http, 'meta-data'), 'instance-id: packer-bench\nlocal-hostname: bench\n');
  writeFileSync(path.join(http, 'vendor-data'), '');
  const kilnOut = path.join(work, 'kiln-out');
  const packerOut = path.join(work, 'packer-out');
  const rows = { kiln: [], packer: [], same: [], changed: [], moved: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      const cache = path.join(work, `cache-${r}`);
      rows.kiln.push(await kilnBuild(cache, kilnOut, upload, []));
      rows.same.push(await kilnBuild(cache, kilnOut, upload, []));
      rows.changed.push(await kilnBuild(cache, kilnOut, upload, ['--var', `note=round ${r}`]));
      // The same inputs into another directory: every provisioner and the clean-up are cached.
      rows.moved.push(await kilnBuild(cache, `${kilnOut}-${r}`, upload, ['--var', `note=round ${r}`]));
      rmSync(`${kilnOut}-${r}`, { recursive: true, force: true });
      rmSync(cache, { recursive: true, force: true });
      rmSync(packerOut, { recursive: true, force: true });
      rows.packer.push(await packerBuild(packerOut, path.join(work, 'id'), http, upload));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const phases = ['boot to SSH', 'provisioning', 'clean-up', 'shutdown', 'conversion', 'total', 'total - boot', 'layer capture (background)', 'peak RSS (MiB)'];
  const med = (set, p) => median(set.map((x) => x[p]));
  console.log(`\nkiln vs Packer ${spawnSync('packer', ['version'], { encoding: 'utf8' }).stdout.trim()} (qemu builder), bench/side-by-side, medians of ${rounds} round(s), TCG`);
  console.log(`  ${'phase'.padEnd(28)} ${'kiln'.padStart(9)} ${'Packer'.padStart(9)} ${'ratio'.padStart(7)}`);
  for (const p of phases) {
    const k = med(rows.kiln, p);
    const q = med(rows.packer, p);
    const show = p === 'peak RSS (MiB)' ? (v) => (v === undefined ? '-' : v.toFixed(0)) : fmt;
    console.log(`  ${p.padEnd(28)} ${show(k).padStart(9)} ${show(q).padStart(9)} ${(k !== undefined && q ? (k / q).toFixed(2) : '-').padStart(7)}`);
  }
  const pk = med(rows.packer, 'total');
  const ratio = (set) => (pk ? ` ${(med(set, 'total') / pk).toFixed(2)}x of Packer's (full) rebuild` : '');
  console.log(`  ${'kiln no-change rebuild'.padEnd(28)} ${fmt(med(rows.same, 'total')).padStart(9)}${ratio(rows.same)}`);
  console.log(`  ${'kiln last provisioner changed'.padEnd(28)} ${fmt(med(rows.changed, 'total')).padStart(9)}${ratio(rows.changed)}`);
  console.log(`  ${'kiln new output directory'.padEnd(28)} ${fmt(med(rows.moved, 'total')).padStart(9)}${ratio(rows.moved)}${rows.moved.some((x) => x['boot to SSH']) ? ' (booted)' : ' (no boot)'}`);
  console.log(`  ratios: cold total ${(med(rows.kiln, 'total') / pk).toFixed(2)}x, total - boot ${(med(rows.kiln, 'total - boot') / med(rows.packer, 'total - boot')).toFixed(2)}x, ` +
    `no-change ${fmt(med(rows.same, 'total'))}, last changed ${(med(rows.changed, 'total') / pk).toFixed(2)}x`);
  console.log('  targets: cold total <= 0.85x, total - boot <= 0.6x, no-change rebuild <= 2 s, last changed <= 0.5x of Packer');
}

async function kilnBuild(cache, out, upload, extra) {
  const started = performance.now();
  const r = await execa('node', [path.join(root, 'bin/kiln.js'), 'build', path.join(dir, 'kiln.yaml'), '--force', '--events=json',
    '--var', `output=${out}`, '--var', `upload=${upload}`, ...extra], { reject: false, env: { KILN_CACHE_DIR: cache } });
  const total = performance.now() - started;
  if (r.exitCode !== 0) throw new Error(`kiln bench build failed:\n${r.stderr.split('\n').slice(-20).join('\n')}`);
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const step = Object.fromEntries(events.filter((e) => e.type === 'step-end').map((e) => [e.step, e.ms]));
  const saved = events.filter((e) => e.type === 'layer-saved');
  const end = events.find((e) => e.type === 'build-end');
  let boot;
  try { boot = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).timings_ms?.['boot to SSH']; } catch { /* up to date: no boot */ }
  if (step['launch QEMU'] === undefined) boot = 0;
  return {
    'boot to SSH': boot, provisioning: step['provision'], 'clean-up': step['remove build access'], shutdown: step['shut down'],
    conversion: step['convert disk'], total, 'total - boot': total - (boot ?? 0),
    // Copies into the layer store run beside the next provisioner or the conversion; they cost no wall time unless the build waits for them at its end.
    'layer capture (background)': saved.length ? saved.reduce((n, e) => n + e.ms, 0) : undefined,
    'peak RSS (MiB)': end?.peakRssBytes !== undefined ? end.peakRssBytes / 2 ** 20 : undefined,
  };
}

/** Packer with -machine-readable: each "ui" line is timed as it arrives. */
async function packerBuild(out, keyFile, http, upload) {
  const started = performance.now();
  const child = execa('packer', ['build', '-machine-readable', '-var', `output=${out}`, '-var', `key=${keyFile}`, '-var', `http=${http}`, '-var', `upload=${upload}`, 'packer.json'],
    { cwd: dir, reject: false, env: { PACKER_CACHE_DIR: path.join(path.dirname(out), 'packer-cache'), CHECKPOINT_DISABLE: '1' } });
  const marks = {};
  const at = (name) => { marks[name] ??= performance.now() - started; };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = line.split(',').slice(4).join(',');
    if (/Starting VM/i.test(msg)) at('vm');
    if (/Connected to SSH/i.test(msg)) at('ssh');
    if (/Provisioning with/i.test(msg)) at('provision');
    if (/Gracefully halting/i.test(msg)) at('halt');
    if (/Converting hard drive/i.test(msg)) at('convert');
  });
  const r = await child;
  const total = performance.now() - started;
  if (r.exitCode !== 0) throw new Error(`packer bench build failed:\n${String(r.stdout).split('\n').slice(-20).join('\n')}`);
  const boot = marks.ssh - marks.vm;
  const shutdownEnd = marks.convert ?? total;
  return {
    'boot to SSH': boot, provisioning: marks.halt - marks.provision, shutdown: shutdownEnd - marks.halt,
    conversion: marks.convert !== undefined ? total - marks.convert : undefined, total, 'total - boot': total - boot,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) await sideBySide();
