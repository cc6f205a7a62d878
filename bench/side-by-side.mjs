#!/usr/bin/env node
// `BENCH_ONLY=packer make bench`: kiln against Packer 1.6.6's qemu builder, side by side in one run,
// on bench/side-by-side/{kiln.yaml,packer.json}: the same Debian fixture as the base (kiln boots an
// overlay on it; Packer copies it, because its use_backing_file passes no backing format, which
// qemu-img 7.2 refuses: "Backing file specified without backing format"), 2 vCPUs,
// 1024 MiB, TCG, the same provisioning (a script writing 100 files and a 64 MiB blob, a 16 MiB file
// upload, a sha256sum of it) and one uncompressed qcow2. Each tool runs with its defaults: kiln's CPU
// model, Packer's (qemu64, as QEMU picks with no -cpu); BENCH_PACKER_EQUAL_CPU=1 adds a Packer row given
// kiln's TCG model ("equal CPU"); BENCH_NO_CACHE=1 adds a kiln row built with --no-cache (no layers, no
// saved VMs: what a pipeline that throws its machine away after one build pays). Rounds alternate
// which tool goes first; each kiln round is a cold build (fresh cache), then (BENCH_REBUILDS=0 skips
// them) a no-change rebuild, a last-provisioner-changed rebuild, one into a new output directory on
// that cache, and a second template on the same base (its first provisioner differs: the warm base,
// cache.boot_snapshot, instead of a boot). BENCH_LOAD=1 runs every build beside a
// fixed background load (bench/load.mjs, stress-ng), BENCH_LOAD=both runs each round quiet and loaded,
// alternating, and prints how much the load slowed each tool. Prints per-phase medians, CPU-seconds
// (the tool and its children: QEMU, qemu-img), the load average at each build's start, and the ratios
// kiln/Packer. Skipped with a note when packer is not installed (apt-get install packer).
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { debianFixture, root } from './debian-guest.mjs';
import { generateKeyPair } from '../dist/communicator/keys.js';
import { TCG_DEFAULT_CPU_MODEL } from '../dist/qemu/argv.js';
import { defaultQemuBinary } from '../dist/qemu/process.js';
import { haveStressNg, loadDescription, startLoad } from './load.mjs';

const dir = path.join(root, 'bench/side-by-side');
const fmt = (ms) => (ms === undefined || Number.isNaN(ms) ? '-' : `${(ms / 1000).toFixed(2)} s`);
const median = (xs) => {
  const v = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : undefined;
};
const load1 = () => os.loadavg()[0];

/** Runs `file args` under /usr/bin/time: the CPU-seconds (user + system) of it and every child it waited for. */
function timed(file, args, opts, timeFile) {
  return execa('/usr/bin/time', ['-f', '%U %S', '-o', timeFile, file, ...args], opts);
}
function cpuSeconds(timeFile) {
  try {
    const [u, s] = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1).split(' ').map(Number);
    return u + s;
  } catch {
    return undefined;
  }
}

export async function sideBySide(rounds = Number(process.env.BENCH_ROUNDS ?? 3)) {
  if (spawnSync('packer', ['version']).status !== 0) {
    console.log(
      '\nkiln vs Packer: skipped, packer is not installed (apt-get install -y packer gives 1.6.6 with its qemu builder)',
    );
    return;
  }
  const loadMode = process.env.BENCH_LOAD ?? '';
  if (loadMode && !haveStressNg()) {
    console.log(
      '\nkiln vs Packer under load: skipped, stress-ng is not installed (apt-get install -y stress-ng; make setup does it)',
    );
    return;
  }
  const conditions = loadMode === 'both' ? ['quiet', 'loaded'] : loadMode ? ['loaded'] : ['quiet'];
  const equalCpu = process.env.BENCH_PACKER_EQUAL_CPU === '1';
  // Beside kiln's default (never instead of it): the cold build without the layer cache's captures and saves.
  const noCache = process.env.BENCH_NO_CACHE === '1';
  const rebuilds = process.env.BENCH_REBUILDS !== '0';
  // BENCH_VM_STATE=1: kiln's builds save the VM with each layer (cache.vm_state), so the last-changed rebuild restores instead of booting.
  const vmState = process.env.BENCH_VM_STATE === '1';
  if (vmState)
    writeFileSync(
      vmStateTemplate,
      readFileSync(path.join(dir, 'kiln.yaml'), 'utf8').replace(
        /^    provisioners:/m,
        '    cache: { vm_state: true }\n    provisioners:',
      ),
    );
  // A second template on the same base: the same work, its first provisioner's definition differs.
  writeFileSync(
    secondTemplate,
    readFileSync(vmState ? vmStateTemplate : path.join(dir, 'kiln.yaml'), 'utf8').replace(
      'sudo {{path}}',
      'sudo env TEMPLATE=second {{path}}',
    ),
  );
  const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-sbs-'));
  const upload = path.join(work, 'upload.bin');
  {
    const fd = openSync(upload, 'w');
    for (let i = 0; i < 16; i++) writeSync(fd, randomBytes(1 << 20));
    closeSync(fd);
  }
  // Packer's seed: the plain NoCloud-Net user-data a Packer user writes (a user with a key).
  const key = generateKeyPair('packer-bench');
  writeFileSync(path.join(work, 'id'), key.privateKey, { mode: 0o600 });
  const http = path.join(work, 'http');
  mkdirSync(http);
  writeFileSync(
    path.join(http, 'user-data'),
    [
      '#cloud-config',
      'users:',
      '  - default',
      '  - name: kiln',
      '    sudo: ALL=(ALL) NOPASSWD:ALL',
      '    shell: /bin/bash',
      '    ssh_authorized_keys:',
      `      - ${key.publicKey}`,
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(http, 'meta-data'), 'instance-id: packer-bench\nlocal-hostname: bench\n');
  writeFileSync(path.join(http, 'vendor-data'), '');
  const kilnOut = path.join(work, 'kiln-out');
  const packerOut = path.join(work, 'packer-out');
  const rows = Object.fromEntries(
    conditions.map((c) => [
      c,
      { kiln: [], kilnNoCache: [], packer: [], packerEq: [], same: [], changed: [], moved: [], warm: [] },
    ]),
  );
  const argvs = {};
  const packerRun = (cpu) => async () => {
    rmSync(packerOut, { recursive: true, force: true });
    const row = await packerBuild(packerOut, path.join(work, 'id'), http, upload, cpu, path.join(work, 'time'));
    argvs[`Packer (-cpu ${cpu})`] ??= row.argv;
    return row;
  };
  // The first build of a run would read the base image and QEMU from the disk and every later one
  // from the page cache: read them once, untimed, so round 1's first tool pays no more than the others.
  for (const f of [
    debianFixture,
    spawnSync('sh', ['-c', `command -v ${defaultQemuBinary}`])
      .stdout.toString()
      .trim(),
  ])
    if (f) spawnSync('cat', [f], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    for (let r = 0; r < rounds; r++) {
      for (const cond of r % 2 === 0 ? conditions : [...conditions].reverse()) {
        const stopLoad = cond === 'loaded' ? await startLoad() : undefined;
        try {
          const set = rows[cond];
          const cache = path.join(work, `cache-${r}-${cond}`);
          const kiln = async () => {
            const row = await kilnBuild(cache, kilnOut, upload, [], path.join(work, 'time'));
            argvs.kiln ??= row.argv;
            set.kiln.push(row);
            if (!rebuilds) return;
            set.same.push(await kilnBuild(cache, kilnOut, upload, [], path.join(work, 'time')));
            set.changed.push(
              await kilnBuild(cache, kilnOut, upload, ['--var', `note=round ${r}`], path.join(work, 'time')),
            );
            // The same inputs into another directory: every provisioner and the clean-up are cached.
            set.moved.push(
              await kilnBuild(cache, `${kilnOut}-${r}`, upload, ['--var', `note=round ${r}`], path.join(work, 'time')),
            );
            rmSync(`${kilnOut}-${r}`, { recursive: true, force: true });
            // Another template on the same base (its first provisioner differs): the warm base, not a layer.
            set.warm.push(
              await kilnBuild(cache, `${kilnOut}-second`, upload, [], path.join(work, 'time'), secondTemplate),
            );
            rmSync(`${kilnOut}-second`, { recursive: true, force: true });
          };
          const packer = async () => {
            set.packer.push(await packerRun('qemu64')());
          };
          const packerEq = async () => {
            set.packerEq.push(await packerRun(TCG_DEFAULT_CPU_MODEL)());
          };
          const kilnNoCache = async () => {
            set.kilnNoCache.push(
              await kilnBuild(`${cache}-none`, kilnOut, upload, ['--no-cache'], path.join(work, 'time')),
            );
            rmSync(`${cache}-none`, { recursive: true, force: true });
          };
          const order = [kiln, packer, ...(equalCpu ? [packerEq] : []), ...(noCache ? [kilnNoCache] : [])];
          for (const run of r % 2 === 0 ? order : [...order].reverse()) await run();
          rmSync(cache, { recursive: true, force: true });
        } finally {
          await stopLoad?.();
        }
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(vmStateTemplate, { force: true });
    rmSync(secondTemplate, { force: true });
  }
  // The raw rows, for a closer look (BENCH_ROWS_FILE=path).
  if (process.env.BENCH_ROWS_FILE) writeFileSync(process.env.BENCH_ROWS_FILE, JSON.stringify(rows, null, 1));
  const med = (set, p) => median(set.map((x) => x[p]));
  const packerVersion = spawnSync('packer', ['version'], { encoding: 'utf8' }).stdout.trim();
  const phases = [
    'boot to SSH',
    'warm base save',
    'provisioning',
    '  of which layer captures',
    'clean-up + trim',
    'trim report',
    'package list, beside them',
    'shutdown',
    'conversion',
    'total',
    'total - boot',
    'CPU-seconds',
    'load (1 min) at start',
    'layer capture (background)',
    'peak RSS (MiB)',
  ];
  for (const cond of conditions) {
    const set = rows[cond];
    console.log(
      `\nkiln${vmState ? ' (cache.vm_state)' : ''} vs ${packerVersion} (qemu builder), bench/side-by-side, ${cond === 'loaded' ? `beside ${loadDescription}` : 'no added load'}, medians of ${rounds} round(s), TCG, each tool with its defaults`,
    );
    console.log(
      `  ${'phase'.padEnd(28)} ${'kiln'.padStart(9)} ${'Packer'.padStart(9)} ${'ratio'.padStart(7)}${equalCpu ? `  ${'Packer, equal CPU'.padStart(17)} ${'ratio'.padStart(7)}` : ''}${noCache ? `  ${'kiln --no-cache'.padStart(15)} ${'/Packer'.padStart(7)}` : ''}`,
    );
    console.log("  (boot to SSH: from the VM's start, QEMU's launch included for both tools, to the first SSH login)");
    for (const p of phases) {
      const k = med(set.kiln, p);
      const q = med(set.packer, p);
      const e = med(set.packerEq, p);
      const n = med(set.kilnNoCache, p);
      const show =
        p === 'peak RSS (MiB)' || p === 'CPU-seconds'
          ? (v) => (v === undefined ? '-' : v.toFixed(0))
          : p.startsWith('load')
            ? (v) => (v === undefined ? '-' : v.toFixed(1))
            : fmt;
      const ratio = (a, b) => (a !== undefined && b ? (a / b).toFixed(2) : '-');
      console.log(
        `  ${p.padEnd(28)} ${show(k).padStart(9)} ${show(q).padStart(9)} ${ratio(k, q).padStart(7)}${equalCpu ? `  ${show(e).padStart(17)} ${ratio(k, e).padStart(7)}` : ''}${noCache ? `  ${show(n).padStart(15)} ${ratio(n, q).padStart(7)}` : ''}`,
      );
    }
    const pk = med(set.packer, 'total');
    if (rebuilds) {
      const ratio = (s) => (pk ? ` ${(med(s, 'total') / pk).toFixed(2)}x of Packer's (full) rebuild` : '');
      console.log(
        `  ${'kiln no-change rebuild'.padEnd(28)} ${fmt(med(set.same, 'total')).padStart(9)}${ratio(set.same)}`,
      );
      console.log(
        `  ${'kiln last provisioner changed'.padEnd(28)} ${fmt(med(set.changed, 'total')).padStart(9)}${ratio(set.changed)}${set.changed.some((x) => x.restored) ? ` (VM restored in ${fmt(med(set.changed, 'restored'))}, no boot)` : ''}`,
      );
      console.log(`  ${'kiln VM states saved (cold)'.padEnd(28)} ${set.kiln.map((x) => x.vmStates).join('; ')}`);
      console.log(
        `  ${'kiln new output directory'.padEnd(28)} ${fmt(med(set.moved, 'total')).padStart(9)}${ratio(set.moved)}${set.moved.some((x) => x['boot to SSH']) ? ' (booted)' : ' (no boot)'}`,
      );
      console.log(
        `  ${'kiln new template, same base'.padEnd(28)} ${fmt(med(set.warm, 'total')).padStart(9)}${ratio(set.warm)}${set.warm.every((x) => x.restored !== undefined) ? ` (warm base restored in ${fmt(med(set.warm, 'restored'))}, no boot)` : ' (booted)'}`,
      );
    }
    console.log(
      `  ratios: cold total ${(med(set.kiln, 'total') / pk).toFixed(2)}x, total - boot ${(med(set.kiln, 'total - boot') / med(set.packer, 'total - boot')).toFixed(2)}x, ` +
        `CPU-seconds ${(med(set.kiln, 'CPU-seconds') / med(set.packer, 'CPU-seconds')).toFixed(2)}x` +
        (rebuilds
          ? `, no-change ${fmt(med(set.same, 'total'))}, last changed ${(med(set.changed, 'total') / pk).toFixed(2)}x, new template on a built base ${(med(set.warm, 'total') / pk).toFixed(2)}x`
          : '') +
        (noCache
          ? `; kiln --no-cache: cold total ${(med(set.kilnNoCache, 'total') / pk).toFixed(2)}x, total - boot ${(med(set.kilnNoCache, 'total - boot') / med(set.packer, 'total - boot')).toFixed(2)}x`
          : ''),
    );
  }
  if (rows.quiet && rows.loaded) {
    const slow = (tool, p) => (med(rows.loaded[tool], p) / med(rows.quiet[tool], p)).toFixed(2);
    console.log(
      `\n  what the load did (loaded / no added load, same run): total kiln ${slow('kiln', 'total')}x, Packer ${slow('packer', 'total')}x; ` +
        `boot to SSH kiln ${slow('kiln', 'boot to SSH')}x, Packer ${slow('packer', 'boot to SSH')}x; CPU-seconds kiln ${slow('kiln', 'CPU-seconds')}x, Packer ${slow('packer', 'CPU-seconds')}x`,
    );
  }
  for (const [who, argv] of Object.entries(argvs)) if (argv) console.log(`  ${who} ran: ${argv}`);
  console.log(
    '  targets: cold total <= 0.85x with no added load and <= 1.0x under the load, total - boot <= 0.8x, no-change rebuild < 2 s, last changed <= 0.3x, new template on a built base <= 0.5x of Packer',
  );
}

/** BENCH_VM_STATE=1: kiln.yaml with cache.vm_state, beside it (its paths are relative to it); removed at the end. */
const vmStateTemplate = path.join(dir, '.kiln-vm-state.yaml');
/** The second template on the same base (the warm-base row), beside it; removed at the end. */
const secondTemplate = path.join(dir, '.kiln-second.yaml');

async function kilnBuild(cache, out, upload, extra, timeFile, template) {
  const load = load1();
  const started = performance.now();
  const r = await timed(
    'node',
    [
      path.join(root, 'bin/kiln.js'),
      'build',
      template ?? (process.env.BENCH_VM_STATE === '1' ? vmStateTemplate : path.join(dir, 'kiln.yaml')),
      '--force',
      '--events=json',
      '--var',
      `output=${out}`,
      '--var',
      `upload=${upload}`,
      ...extra,
    ],
    { reject: false, env: { KILN_CACHE_DIR: cache } },
    timeFile,
  );
  const total = performance.now() - started;
  if (r.exitCode !== 0) throw new Error(`kiln bench build failed:\n${r.stderr.split('\n').slice(-20).join('\n')}`);
  const events = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const step = Object.fromEntries(events.filter((e) => e.type === 'step-end').map((e) => [e.step, e.ms]));
  const saved = events.filter((e) => e.type === 'layer-saved');
  const restored = events.find((e) => e.type === 'vm-restored');
  const states = events.filter((e) => e.type === 'vm-state-saved');
  const end = events.find((e) => e.type === 'build-end');
  let boot;
  let packageList;
  try {
    const timings = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).timings_ms;
    boot = timings?.['boot to SSH'];
    packageList = timings?.['package list (beside the clean-up and trim)'];
  } catch {
    /* up to date: no boot */
  }
  if (step['launch QEMU'] === undefined) boot = 0;
  // From the VM's start, as Packer's is measured (its "Starting VM" comes before it runs QEMU): kiln's
  // own timing starts once QEMU answers, so QEMU's start (and its memory allocated up front) is added.
  else if (boot !== undefined) boot += step['launch QEMU'];
  return {
    'boot to SSH': boot,
    provisioning: step['provision'],
    // kiln's own steps after boot, each visible (Packer does none of them).
    'warm base save': step['save the warm base'],
    // Provisioning's time outside the provisioners: the sync, freeze and (before the last) VM state save of each layer.
    '  of which layer captures':
      step['provision'] === undefined
        ? undefined
        : step['provision'] - events.filter((e) => e.type === 'provisioner-end').reduce((n, e) => n + e.ms, 0),
    // It runs beside the clean-up and the trim: its own time, not added to the build's.
    'package list, beside them': packageList,
    // The trim runs in the clean-up's root shell; its step measures the overlay and reports.
    'clean-up + trim': step['remove build access'],
    'trim report': step['trim free space'],
    shutdown: step['shut down'],
    conversion: step['convert disk'],
    total,
    'total - boot': total - (boot ?? 0),
    // Copies into the layer store run beside the next provisioner or the conversion; they cost no wall time unless the build waits for them at its end.
    'layer capture (background)': saved.length ? saved.reduce((n, e) => n + e.ms, 0) : undefined,
    'peak RSS (MiB)': end?.peakRssBytes !== undefined ? end.peakRssBytes / 2 ** 20 : undefined,
    'CPU-seconds': cpuSeconds(timeFile),
    'load (1 min) at start': load,
    argv: events.find((e) => e.type === 'log' && e.message.startsWith('qemu: '))?.message.slice(6),
    restored: restored?.ms,
    vmStates: states
      .map((e) => `${(e.size / 2 ** 20).toFixed(0)} MiB, paused ${(e.pausedMs / 1000).toFixed(2)} s`)
      .join(', '),
  };
}

/** Packer with -machine-readable: each "ui" line is timed as it arrives; PACKER_LOG gives its QEMU command line. */
async function packerBuild(out, keyFile, http, upload, cpu, timeFile) {
  const load = load1();
  const started = performance.now();
  const child = timed(
    'packer',
    [
      'build',
      '-machine-readable',
      '-var',
      `output=${out}`,
      '-var',
      `key=${keyFile}`,
      '-var',
      `http=${http}`,
      '-var',
      `upload=${upload}`,
      '-var',
      `cpu=${cpu}`,
      'packer.json',
    ],
    {
      cwd: dir,
      reject: false,
      env: { PACKER_CACHE_DIR: path.join(path.dirname(out), 'packer-cache'), CHECKPOINT_DISABLE: '1', PACKER_LOG: '1' },
    },
    timeFile,
  );
  const marks = {};
  const at = (name) => {
    marks[name] ??= performance.now() - started;
  };
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
  if (r.exitCode !== 0)
    throw new Error(`packer bench build failed:\n${String(r.stdout).split('\n').slice(-20).join('\n')}`);
  const boot = marks.ssh - marks.vm;
  const shutdownEnd = marks.convert ?? total;
  return {
    'boot to SSH': boot,
    provisioning: marks.halt - marks.provision,
    shutdown: shutdownEnd - marks.halt,
    conversion: marks.convert !== undefined ? total - marks.convert : undefined,
    total,
    'total - boot': total - boot,
    'CPU-seconds': cpuSeconds(timeFile),
    'load (1 min) at start': load,
    argv: /Executing \S*qemu-system-x86_64: (\[\]string\{.*\})/.exec(String(r.stderr))?.[1],
  };
}

if (import.meta.url === `file://${process.argv[1]}`) await sideBySide();
