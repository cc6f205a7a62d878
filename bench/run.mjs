#!/usr/bin/env node
// `make bench`: builds the tiny and Debian examples and prints each phase's time and kiln's own
// overhead, then measures how soon kiln notices SSH after the guest's sshd first answers, kiln's
// transfers against scp, boot to SSH with kiln's seed and a minimal one, and kiln against Packer's qemu
// builder side by side (BENCH_LOAD=1|both: beside a fixed background load too), kiln's peak memory while
// converting 4 GiB, and the guests' boot and CPU-seconds per TCG CPU model (BENCH_ONLY=builds|cache|convert|
// ssh|transfers|seed|packer|rss|publish|cpu runs one part).
// Figures only, no pass/fail: compare ratios from one run (these machines are noisy).
import { execa } from 'execa';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildQemuArgs } from '../dist/qemu/argv.js';
import { QemuProcess } from '../dist/qemu/process.js';
import { createOverlay } from '../dist/qemu/qemu-img.js';
import { waitForSsh } from '../dist/communicator/ssh.js';
import { freePort } from '../dist/qemu/ports.js';
import { readFileSync } from 'node:fs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fmt = (ms) => (ms === undefined ? '-' : `${(ms / 1000).toFixed(2)} s`);

async function buildExample(file) {
  const started = performance.now();
  // --no-cache: this table is the anatomy of a full build; the layer cache has its own figures below.
  const r = await execa(
    'node',
    [path.join(root, 'bin/kiln.js'), 'build', file, '--force', '--no-cache', '--events=json'],
    { reject: false, cwd: root },
  );
  const total = performance.now() - started;
  if (r.exitCode !== 0) throw new Error(`${file} failed:\n${r.stderr.split('\n').slice(-20).join('\n')}`);
  const events = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const step = Object.fromEntries(events.filter((e) => e.type === 'step-end').map((e) => [e.step, e.ms]));
  const provs = events.filter((e) => e.type === 'provisioner-end');
  const end = events.find((e) => e.type === 'build-end');
  const manifest = JSON.parse(readFileSync(path.join(end.outputDirectory, 'manifest.json'), 'utf8'));
  const t = manifest.timings_ms;
  const bootToSsh = t['boot to SSH'];
  const rows = [
    ['fetch base image', step['fetch base image']],
    ['create disk (qemu-img)', step['create disk']],
    [
      'seed, keys, HTTP server',
      (step['start HTTP server'] ?? 0) + (step['generate SSH keys'] ?? 0) + (step['render cloud-init seed'] ?? 0),
    ],
    ['launch QEMU (+probe)', step['launch QEMU']],
    ['boot -> SSH', bootToSsh],
    ['cloud-init wait', (step['wait for SSH'] ?? 0) - (bootToSsh ?? 0)],
    ...provs.map((p) => [`  provisioner ${p.index + 1}: ${p.provisioner}`, p.ms]),
    ['remove build access + trim', step['remove build access']],
    ['shutdown', step['shut down']],
    ['convert + check + sha256', step['convert disk']],
    ['manifest + commit', step['write manifest and commit output']],
  ];
  // Time the guest or qemu-img spent; the rest is kiln itself (node start, template, steps, I/O).
  const external =
    (step['create disk'] ?? 0) +
    (step['wait for SSH'] ?? 0) +
    (step['provision'] ?? 0) +
    (step['remove build access'] ?? 0) +
    (step['shut down'] ?? 0) +
    (step['convert disk'] ?? 0);
  console.log(`\n${path.basename(file)} — total ${fmt(total)} (accelerator ${manifest.accelerator})`);
  for (const [name, ms] of rows) console.log(`  ${name.padEnd(48)} ${fmt(ms).padStart(9)}`);
  console.log(`  ${'kiln overhead (total - guest - qemu-img)'.padEnd(48)} ${fmt(total - external).padStart(9)}`);
  return { total, overhead: total - external, step, provs, bootToSsh };
}

/**
 * The layer cache on the Debian example, in one run with a fresh cache: a full build, an unchanged
 * rebuild (reuses the artifact, no boot), and a rebuild after changing only the last provisioner
 * (boots the cached layer, re-runs the /tmp upload and the last provisioner). The last one is set
 * against what it should cost: one boot + those provisioners + shutdown + conversion of the full build.
 */
async function layerCacheBench() {
  const file = path.join(root, 'examples/debian-12-cloud.yaml');
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-cache-'));
  // The same build writing elsewhere: a copy of the example beside it (its relative paths still
  // resolve) whose only change is the output directory.
  const otherOut = path.join(cacheDir, 'other-output');
  const otherFile = path.join(root, 'examples', `.bench-other-output-${process.pid}.yaml`);
  writeFileSync(otherFile, readFileSync(file, 'utf8').replace(/^(\s*output_directory:).*$/m, `$1 ${otherOut}`));
  const run = async (...args) => {
    const template = args[0] === otherFile ? args.shift() : file;
    const started = performance.now();
    const r = await execa('node', [path.join(root, 'bin/kiln.js'), 'build', template, '--events=json', ...args], {
      reject: false,
      cwd: root,
      env: { KILN_CACHE_DIR: cacheDir },
    });
    const ms = performance.now() - started;
    const events = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    if (r.exitCode !== 0)
      throw new Error(
        `layer cache bench: ${args.join(' ')} failed: ${events.find((e) => e.type === 'build-end')?.error}\n${r.stderr.split('\n').slice(-20).join('\n')}`,
      );
    return {
      ms,
      events,
      step: Object.fromEntries(events.filter((e) => e.type === 'step-end').map((e) => [e.step, e.ms])),
    };
  };
  try {
    const full = await run('--force');
    const same = await run();
    const elsewhere = await run(otherFile);
    const changed = await run('--force', '--var', `note=bench ${new Date().toISOString()}`);
    const rerun = changed.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index);
    const expected =
      ['launch QEMU', 'wait for SSH', 'remove build access', 'shut down', 'convert disk'].reduce(
        (n, s) => n + (full.step[s] ?? 0),
        0,
      ) +
      full.events.filter((e) => e.type === 'provisioner-end' && rerun.includes(e.index)).reduce((n, e) => n + e.ms, 0);
    const saved = full.events.filter((e) => e.type === 'layer-saved');
    const capture = full.events.find((e) => e.type === 'layer-capture');
    const booted = elsewhere.events.some((e) => e.type === 'step-start' && e.step === 'launch QEMU');
    console.log('\nlayer cache, examples/debian-12-cloud.yaml (fresh cache)');
    console.log(`  ${'full build (saves a layer per provisioner + final)'.padEnd(52)} ${fmt(full.ms).padStart(9)}`);
    console.log(
      `  ${'  layers saved'.padEnd(52)} ${saved.map((e) => `${e.final ? 'final ' : ''}${(e.size / 2 ** 20).toFixed(1)} MiB in ${fmt(e.ms)}`).join(', ')}`,
    );
    if (capture)
      console.log(
        `  ${'  layer capture (background)'.padEnd(52)} ${fmt(capture.ms).padStart(9)}  waited for at the end ${fmt(capture.waitedMs)}`,
      );
    console.log(
      `  ${'no-change rebuild (artifact reused, no boot)'.padEnd(52)} ${fmt(same.ms).padStart(9)}  ratio ${(same.ms / full.ms).toFixed(3)}`,
    );
    console.log(
      `  ${`only the output directory changed (${booted ? 'BOOTED' : 'no boot'})`.padEnd(52)} ${fmt(elsewhere.ms).padStart(9)}  ratio ${(elsewhere.ms / full.ms).toFixed(3)}  (convert ${fmt(elsewhere.step['convert disk'])})`,
    );
    console.log(
      `  ${`last provisioner changed (re-ran ${rerun.map((i) => i + 1).join(', ')})`.padEnd(52)} ${fmt(changed.ms).padStart(9)}  ratio ${(changed.ms / full.ms).toFixed(3)}`,
    );
    console.log(
      `  ${'  target: boot + those provisioners + shutdown + convert'.padEnd(52)} ${fmt(expected).padStart(9)}  (${(changed.ms / expected).toFixed(2)}x of it)`,
    );
  } finally {
    rmSync(otherFile, { force: true });
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

/**
 * Conversion throughput: kiln's whole path per format (convert + check + info + sha256, or the
 * packaging writer) against a plain `qemu-img convert` of the same disk to the same inner format.
 */
async function conversionThroughput() {
  const source = ['output/debian-12-cloud/debian-12-cloud.qcow2', 'fixtures/images/debian-12-cloud.qcow2']
    .map((p) => path.join(root, p))
    .find((p) => existsSync(p));
  if (!source) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-convert-'));
  const { convert, check, imageInfo } = await import('../dist/qemu/qemu-img.js');
  const { planFor } = await import('../dist/template/output-formats.js');
  const { writePackage } = await import('../dist/artifacts/packages.js');
  const { fileDigests } = await import('../dist/cache/digest.js');
  const time = async (fn) => {
    const t = performance.now();
    await fn();
    return performance.now() - t;
  };
  const info = await imageInfo(source);
  console.log(
    `\nconversion of ${path.relative(root, source)} (${(info.actualSize / 2 ** 20).toFixed(0)} MiB used, ${(info.virtualSize / 2 ** 30).toFixed(1)} GiB virtual)`,
  );
  console.log(
    `  ${'format'.padEnd(10)} ${'plain qemu-img'.padStart(15)} ${'kiln'.padStart(9)} ${'ratio'.padStart(7)} ${'MiB/s'.padStart(7)}`,
  );
  const inner = { ova: ['vmdk', ['subformat=streamOptimized']], vagrant: ['qcow2', ['compat=1.1']], gce: ['raw', []] };
  for (const format of ['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd', 'ova', 'vagrant', 'gce']) {
    const plan = planFor({ format, compress: false });
    const [qf, opts] = plan.kind === 'disk' ? [plan.qemuFormat, plan.options] : inner[format];
    const plainOut = path.join(dir, `plain.${format}`);
    const plain = await time(() => convert(source, info.format, plainOut, qf, { options: opts }));
    rmSync(plainOut, { force: true });
    const out = path.join(dir, `kiln.${format}`);
    const kiln = await time(async () => {
      if (plan.kind === 'disk') {
        await convert(source, info.format, out, plan.qemuFormat, { options: plan.options, onProgress: () => {} });
        if (plan.checkable) await check(out, plan.qemuFormat);
        await imageInfo(out, plan.qemuFormat);
      } else {
        await writePackage(plan.packageFormat, {
          source,
          sourceFormat: info.format,
          out,
          name: 'bench',
          cpus: 2,
          memoryMiB: 1024,
          firmware: 'bios',
        });
      }
      await fileDigests(out, ['sha256']);
    });
    rmSync(out, { force: true });
    console.log(
      `  ${format.padEnd(10)} ${fmt(plain).padStart(15)} ${fmt(kiln).padStart(9)} ${(kiln / plain).toFixed(2).padStart(7)} ${(info.actualSize / 2 ** 20 / (kiln / 1000)).toFixed(0).padStart(7)}`,
    );
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Boots the tiny fixture, polls the raw SSH banner every 20 ms, and races kiln's waitForSsh. */
async function sshDetectionLag() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
  const disk = path.join(dir, 'd.qcow2');
  await createOverlay(path.join(root, 'fixtures/images/tiny.qcow2'), 'qcow2', disk);
  const port = await freePort();
  const argv = buildQemuArgs({
    name: 'bench',
    accelerator: 'tcg',
    cpus: 1,
    memoryMiB: 256,
    machine: 'pc',
    firmware: { type: 'bios' },
    disks: [{ path: disk, format: 'qcow2', interface: 'virtio' }],
    net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: port, guestPort: 22 }] },
    qmpSocket: path.join(dir, 'q.sock'),
    headless: true,
  });
  const started = performance.now();
  const qemu = QemuProcess.start(argv);
  let bannerAt;
  let loggedIn = false;
  const poll = (async () => {
    while (bannerAt === undefined && !loggedIn && !qemu.hasExited) {
      await new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        const done = () => {
          s.destroy();
          resolve();
        };
        s.setTimeout(1000, done);
        s.on('data', (d) => {
          if (d.toString().startsWith('SSH-') && bannerAt === undefined) bannerAt = performance.now();
          done();
        });
        s.on('error', done);
      });
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const session = await waitForSsh(
    {
      host: '127.0.0.1',
      port,
      username: 'root',
      privateKey: readFileSync(path.join(root, 'fixtures/keys/insecure_ed25519')),
      trustOnFirstUse: true,
    },
    {
      timeoutMs: 120_000,
      onAttempt: (n, e) => {
        if (process.env.BENCH_DEBUG) console.error(`attempt ${n} at ${fmt(performance.now() - started)}: ${e.message}`);
      },
    },
  );
  const loggedInAt = performance.now();
  loggedIn = true;
  await poll;
  session.close();
  await qemu.kill(1000);
  rmSync(dir, { recursive: true, force: true });
  console.log(
    `\nSSH detection (tiny fixture, TCG): sshd banner after ${fmt(bannerAt - started)}, kiln logged in after ${fmt(loggedInAt - started)}: lag ${fmt(loggedInAt - bannerAt)} (includes key exchange + auth)`,
  );
}

const only = process.env.BENCH_ONLY;
for (const example of ['examples/tiny.yaml', 'examples/debian-12-cloud.yaml']) {
  if (!existsSync(path.join(root, example)) || (only && only !== 'builds')) continue;
  await buildExample(path.join(root, example));
}
if (!only || only === 'cache') await layerCacheBench();
if (!only || only === 'convert') await conversionThroughput();
if (!only || only === 'ssh') await sshDetectionLag();
if (!only || only === 'transfers') await (await import('./guest-figures.mjs')).transferThroughput();
if (!only || only === 'seed') await (await import('./seed.mjs')).seedBootTimes();
if (!only || only === 'packer') await (await import('./side-by-side.mjs')).sideBySide();
if (!only || only === 'cpu') await (await import('./cpu-models.mjs')).cpuModelBench();
if (!only || only === 'rss') await (await import('./rss.mjs')).peakMemory();
if (!only || only === 'publish') await (await import('./publish.mjs')).publishBench();
