/**
 * Following a submitted Slurm run from the shared run directory: each task's JSON events (its
 * --events=json stdout, tasks/<i>.events.jsonl) are handed on as they are written, and a task is done
 * when its tasks/<i>.rc exists. A task that Slurm ended without one (cancelled while pending, killed
 * past KillWait, node lost) is done when squeue no longer lists its job.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { BuildEvent } from '../ui/events.js';
import { tasksDir } from './sbatch.js';

export interface TaskResult {
  build: string;
  code: number;
  note?: string;
}

/** Reads what was appended to a file since the last call, line by line (a partial last line waits). */
export class LineTail {
  private offset = 0;
  private partial = '';
  constructor(private readonly file: string) {}

  read(): string[] {
    if (!existsSync(this.file)) return [];
    const fd = openSync(this.file, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return [];
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const lines = (this.partial + buf.subarray(0, n).toString('utf8')).split('\n');
      this.partial = lines.pop()!;
      return lines;
    } finally {
      closeSync(fd);
    }
  }
}

/** A task's event lines: kiln's JSON events; anything else Slurm wrote there is skipped. */
export function parseEventLine(line: string): (BuildEvent & { time: string }) | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const e = JSON.parse(line) as BuildEvent & { time: string };
    return typeof e.type === 'string' && typeof e.build === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

/** The job ids squeue still lists (pending, running, completing); [] once all are gone. */
async function activeJobs(jobIds: string[]): Promise<string[]> {
  const r = await execa('squeue', ['-h', '-j', jobIds.join(','), '-o', '%F'], { reject: false });
  // squeue fails with "Invalid job id" once slurmctld forgot the jobs: none is active then.
  if (r.exitCode !== 0) return [];
  return [
    ...new Set(
      String(r.stdout)
        .split('\n')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
}

export interface FollowOptions {
  runDir: string;
  /** Build names by array index (plan.json's order). */
  builds: string[];
  /** Which indices this run submitted, and the job ids that run them. */
  jobIds: string[];
  onEvent: (e: BuildEvent & { time: string }) => void;
  pollMs?: number;
}

export async function followRun(o: FollowOptions): Promise<TaskResult[]> {
  const dir = tasksDir(o.runDir);
  const tails = o.builds.map((_, i) => new LineTail(path.join(dir, `${i}.events.jsonl`)));
  const codes = new Map<number, number>();
  const drain = () =>
    tails.forEach((t) => {
      for (const line of t.read()) {
        const e = parseEventLine(line);
        if (e) o.onEvent(e);
      }
    });
  const readCodes = () =>
    o.builds.forEach((_, i) => {
      const f = path.join(dir, `${i}.rc`);
      if (!codes.has(i) && existsSync(f)) {
        const code = Number.parseInt(readFileSync(f, 'utf8').trim(), 10);
        if (Number.isInteger(code)) codes.set(i, code);
      }
    });
  for (;;) {
    readCodes();
    drain();
    if (codes.size === o.builds.length) break;
    // The codes first, then squeue: a task that wrote its code and left is not taken for a lost one.
    if ((await activeJobs(o.jobIds)).length === 0) {
      readCodes();
      drain();
      break;
    }
    await new Promise((r) => setTimeout(r, o.pollMs ?? 1000));
  }
  return o.builds.map((build, i) =>
    codes.has(i)
      ? { build, code: codes.get(i)! }
      : {
          build,
          code: 1,
          note: `its Slurm task ended without an exit code (cancelled before it started, killed, or its node lost): see ${path.join(dir, `${i}.log`)}`,
        },
  );
}

/** The line a run of several builds ends with, locally (--parallel-builds) or on Slurm alike. */
export function summaryLine(results: { build: string; ok: boolean }[]): string {
  const failed = results.filter((r) => !r.ok);
  return `${results.length - failed.length} of ${results.length} builds succeeded${failed.length ? `; failed: ${failed.map((r) => r.build).join(', ')}` : ''}\n`;
}

/** The exit code of the run: the worst task's (the highest; 0 when all succeeded). */
export const worstCode = (results: TaskResult[]): number => results.reduce((w, r) => Math.max(w, r.code), 0);
