// `BENCH_ONLY=cpu`: which CPU model a TCG guest should get. The tiny and the Debian fixture guests are
// booted as kiln runs them (src/qemu/argv.ts) with each model in turn, rounds rotating the order, and
// for each boot: QEMU start -> SSH login, the CPU-seconds QEMU burned by then (/proc/<pid>/stat utime +
// stime), then a fixed piece of guest work (cloud-init's end on Debian, a 64 MiB urandom dd + sha256sum,
// 300 forks) timed the same way. The guest's clock source is printed, as it changes with the model.
// Figures only; the load averages are printed beside them (the machine is shared: compare ratios).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootDebian, root } from './debian-guest.mjs';
import { buildQemuArgs } from '../dist/qemu/argv.js';
import { QemuProcess } from '../dist/qemu/process.js';
import { createOverlay } from '../dist/qemu/qemu-img.js';
import { waitForSsh } from '../dist/communicator/ssh.js';
import { freePort } from '../dist/qemu/ports.js';

const fmt = (ms) => `${(ms / 1000).toFixed(1)}`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
const ticks = 100; // USER_HZ: /proc/<pid>/stat's clock ticks per second on Linux
/** User + system CPU milliseconds the process has used so far. */
function cpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / ticks;
}

/** The models measured: qemu64 (Packer's default), two x86-64-v2 spellings, and kiln's old TCG default. */
export const cpuModelsMeasured = (process.env.BENCH_CPU_MODELS ?? 'qemu64,qemu64+v2,Nehalem,max').split(',');
const cpuArg = (m) => (m === 'qemu64+v2' ? 'qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt' : m);

async function bootTiny(model) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-cpu-'));
  const disk = path.join(dir, 'd.qcow2');
  await createOverlay(path.join(root, 'fixtures/images/tiny.qcow2'), 'qcow2', disk);
  const port = await freePort();
  const argv = buildQemuArgs({
    name: 'bench-cpu',
    accelerator: 'tcg',
    cpus: 1,
    memoryMiB: 256,
    machine: 'pc',
    firmware: { type: 'bios' },
    disks: [{ path: disk, format: 'qcow2', interface: 'virtio', discard: true }],
    net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: port, guestPort: 22 }] },
    qmpSocket: path.join(dir, 'q.sock'),
    headless: true,
    extraArgs: [['-cpu', cpuArg(model)]],
  });
  const started = performance.now();
  const qemu = QemuProcess.start(argv);
  let session;
  try {
    session = await waitForSsh(
      {
        host: '127.0.0.1',
        port,
        username: 'root',
        privateKey: readFileSync(path.join(root, 'fixtures/keys/insecure_ed25519')),
        trustOnFirstUse: true,
      },
      { timeoutMs: 300_000, abort: () => (qemu.hasExited ? `QEMU exited: ${qemu.stderr}` : undefined) },
    );
  } catch (e) {
    await qemu.kill(1000);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    session,
    qemu,
    loginMs: performance.now() - started,
    work: 'dd if=/dev/urandom of=/root/blob bs=1M count=64 2>/dev/null; sha256sum /root/blob >/dev/null; rm /root/blob; for i in $(seq 1 300); do /bin/true; done',
    async stop() {
      session.close();
      await qemu.kill(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function bootDebianWith(model) {
  const g = await bootDebian({ seed: 'kiln', extraArgs: [['-cpu', cpuArg(model)]] });
  return {
    ...g,
    work: 'while [ ! -e /run/cloud-init/result.json ]; do sleep 0.2; done; dd if=/dev/urandom of=/var/tmp/blob bs=1M count=64 status=none; sha256sum /var/tmp/blob >/dev/null; rm /var/tmp/blob; for i in $(seq 1 300); do /bin/true; done',
  };
}

async function measure(guest, model) {
  const g = await (guest === 'tiny' ? bootTiny(model) : bootDebianWith(model));
  try {
    const loginCpu = cpuMs(g.qemu.pid);
    // The clock source, the Meltdown page-table isolation and the highest x86-64 level glibc sees: what the model changes in the guest.
    const clock = (
      await g.session.run(
        'cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo ?; ' +
          'cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null | cut -d: -f1; ' +
          '/lib64/ld-linux-x86-64.so.2 --help 2>/dev/null | grep -o "x86-64-v[0-9] (supported" | head -1 | cut -d" " -f1',
      )
    )
      .trim()
      .split('\n')
      .filter(Boolean)
      .join(', ');
    const t = performance.now();
    await g.session.run(g.work);
    const workMs = performance.now() - t;
    return { login: g.loginMs, loginCpu, work: workMs, workCpu: cpuMs(g.qemu.pid) - loginCpu, clock };
  } finally {
    await g.stop();
  }
}

export async function cpuModelBench(
  rounds = Number(process.env.BENCH_ROUNDS ?? 2),
  guests = (process.env.BENCH_CPU_GUESTS ?? 'tiny,debian').split(','),
) {
  const startLoad = load();
  const results = {};
  for (const guest of guests) {
    const rows = Object.fromEntries(cpuModelsMeasured.map((m) => [m, []]));
    for (let r = 0; r < rounds; r++) {
      // Rotate the order each round, so no model always runs first (or right after a heavy one).
      const order = cpuModelsMeasured.map((_, i) => cpuModelsMeasured[(i + r) % cpuModelsMeasured.length]);
      for (const model of order) {
        try {
          const m = await measure(guest, model);
          rows[model].push(m);
          console.log(
            `  ${guest} round ${r + 1} ${model.padEnd(10)} login ${fmt(m.login)} s (QEMU ${fmt(m.loginCpu)} CPU-s), work ${fmt(m.work)} s (${fmt(m.workCpu)} CPU-s), guest: ${m.clock}, load ${load()}`,
          );
        } catch (e) {
          console.log(`  ${guest} round ${r + 1} ${model.padEnd(10)} FAILED: ${String(e.message).split('\n')[0]}`);
        }
      }
    }
    results[guest] = rows;
  }
  console.log(
    `\nCPU models under TCG (kiln's argv, -cpu replaced), medians of ${rounds} rotating rounds; load ${startLoad} at the start, ${load()} at the end`,
  );
  console.log(
    `  ${'guest'.padEnd(7)} ${'model'.padEnd(10)} ${'to SSH'.padStart(7)} ${'CPU-s'.padStart(6)} ${'work'.padStart(6)} ${'CPU-s'.padStart(6)}  login/max  CPU/max  guest: clock, meltdown, x86-64 level`,
  );
  for (const [guest, rows] of Object.entries(results)) {
    const base = rows.max?.length ? rows.max : undefined;
    for (const [model, xs] of Object.entries(rows)) {
      if (!xs.length) {
        console.log(`  ${guest.padEnd(7)} ${model.padEnd(10)} failed`);
        continue;
      }
      const med = (k) => median(xs.map((x) => x[k]));
      const rel = (k) => (base ? (med(k) / median(base.map((x) => x[k]))).toFixed(2) : '-');
      const cpu = (x) => x.loginCpu + x.workCpu;
      const cpuRel = base ? (median(xs.map(cpu)) / median(base.map(cpu))).toFixed(2) : '-';
      console.log(
        `  ${guest.padEnd(7)} ${model.padEnd(10)} ${fmt(med('login')).padStart(7)} ${fmt(med('loginCpu')).padStart(6)} ${fmt(med('work')).padStart(6)} ${fmt(med('workCpu')).padStart(6)}  ${rel('login').padStart(9)}  ${cpuRel.padStart(7)}  ${[...new Set(xs.map((x) => x.clock))].join('/')}`,
      );
    }
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await cpuModelBench();
