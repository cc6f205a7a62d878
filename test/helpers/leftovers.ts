/**
 * What a failed build must not leave behind, as one assertion: a QEMU process, a /tmp/kiln-<build>-*
 * work directory, a new or changed output directory, a staging directory beside it. Take a snapshot
 * before running kiln and check after it exits. Everything is matched by the build's name (keep it
 * unique to the test) and `markers`, so builds others run on the same machine at the same time do not
 * count. The finding itself is process-audit.ts's.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { kilnWorkDirs, processesMentioning, stagingDirsBeside } from './process-audit.js';

export interface LeftoverScope {
  /** The build's name: its QEMU runs with `-name <build>,process=kiln-<build>`. */
  build: string;
  outputDir?: string;
  /** Other strings that mark this test's processes in their command lines (e.g. a private cache dir). */
  markers?: string[];
}

export interface LeftoverSnapshot {
  scope: LeftoverScope;
  workDirs: string[];
  /** Names, sizes and mtimes inside outputDir; undefined if it did not exist. */
  output?: string[];
}

function listing(dir: string | undefined): string[] | undefined {
  if (!dir || !existsSync(dir)) return undefined;
  return readdirSync(dir)
    .sort()
    .map((n) => {
      const st = statSync(path.join(dir, n));
      return `${n} ${st.size} ${st.mtimeMs}`;
    });
}

export function snapshotLeftovers(scope: LeftoverScope): LeftoverSnapshot {
  return { scope, workDirs: kilnWorkDirs(os.tmpdir(), scope.build), output: listing(scope.outputDir) };
}

export function expectNoLeftovers(before: LeftoverSnapshot): void {
  const { scope } = before;
  const processes = [`process=kiln-${scope.build}`, ...(scope.markers ?? [])].flatMap((m) => processesMentioning(m));
  expect(
    processes.map((p) => `${p.pid}: ${p.command}`),
    'processes left running',
  ).toEqual([]);
  expect(kilnWorkDirs(os.tmpdir(), scope.build), 'work directories left in /tmp').toEqual(before.workDirs);
  if (scope.outputDir) {
    expect(listing(scope.outputDir), `output directory ${scope.outputDir} created or changed`).toEqual(before.output);
    expect(stagingDirsBeside(scope.outputDir), 'staging directories left beside the output').toEqual([]);
  }
}
