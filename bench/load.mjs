// The bench's background load (BENCH_LOAD): a fixed, bounded stress-ng beside the builds, so that how
// much a busy host slows each tool is a measured ratio. On this 2-core kind of machine: two CPU workers
// at 40 % each (0.8 of a core), one worker writing and reading back 128 MiB files (I/O and page-cache
// churn) and one cycling 256 MiB of anonymous memory (evicts page cache). Started and stopped by the
// bench; dies with it (setpriv --pdeathsig) and stops by itself after BENCH_LOAD_MAX_S (1 h) anyway.
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { diesWithKiln } from '../dist/util/dies-with-kiln.js';

export const loadSpec = [
  '--cpu',
  '2',
  '--cpu-load',
  '40',
  '--hdd',
  '1',
  '--hdd-bytes',
  '128M',
  '--vm',
  '1',
  '--vm-bytes',
  '256M',
  '--vm-keep',
];
export const loadDescription = 'stress-ng --cpu 2 --cpu-load 40 --hdd 1 --hdd-bytes 128M --vm 1 --vm-bytes 256M';

export const haveStressNg = () => spawnSync('stress-ng', ['--version']).status === 0;

/** Starts the load; resolves to a stop() that ends it and waits for it (idempotent). */
export async function startLoad() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-load-'));
  const maxS = Number(process.env.BENCH_LOAD_MAX_S ?? 3600);
  const child = execa(
    ...diesWithKiln('stress-ng', [...loadSpec, '--temp-path', dir, '--timeout', `${maxS}s`, '--quiet']),
    { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' },
  );
  // Let the workers start (stress-ng forks them) and reach their steady state (the I/O worker's files
  // in the page cache, the memory worker's pages taken) before a build is timed: a build that starts
  // with the load measured the load's start-up too (2026-12-04: kiln's first loaded round booted in
  // 179 s against 90-110 s in the others). BENCH_LOAD_SETTLE_S, 20 s unless set.
  await new Promise((r) => setTimeout(r, Number(process.env.BENCH_LOAD_SETTLE_S ?? 20) * 1000));
  if (child.exitCode !== null) throw new Error(`stress-ng exited at start: ${(await child).stderr}`);
  let stopped;
  return () =>
    (stopped ??= (async () => {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await child;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    })());
}
