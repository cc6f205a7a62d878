/**
 * What a kiln run may leave behind, found from the outside: processes (read from /proc), kiln work
 * directories, staging directories beside an output, unfinished cache files, listening sockets and
 * open file descriptors. Everything is scoped to paths a test owns (a private TMPDIR, output and cache
 * directory), because other kiln builds and VMs run on the same machine at the same time.
 */
import { execa } from 'execa';
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcessInfo {
  pid: number;
  command: string;
}

/**
 * Live processes whose command line contains `marker` (e.g. a test's private directory, which every
 * QEMU, qemu-img and kiln of that test has in its arguments). Zombies are dead and not counted.
 */
export function processesMentioning(marker: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (!command.includes(marker)) continue;
      // Field 3 of /proc/PID/stat is the state; the command name before it may hold spaces.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      found.push({ pid, command });
    } catch {
      /* exited while we looked */
    }
  }
  return found;
}

/**
 * Polls until no process mentions `marker`; returns what is still there after `timeoutMs`. For
 * processes the kernel kills asynchronously (pdeathsig): no fixed sleep, only a generous ceiling.
 */
export async function waitForNoProcessesMentioning(marker: string, timeoutMs = 30_000): Promise<ProcessInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = processesMentioning(marker);
    if (!left.length || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** kiln work directories (kiln-<build>-XXXXXX) in `tmpDir`, optionally only one build's. */
export function kilnWorkDirs(tmpDir: string, build?: string): string[] {
  const prefix = build ? `kiln-${build.slice(0, 24)}-` : 'kiln-';
  try {
    return readdirSync(tmpDir)
      .filter((n) => n.startsWith(prefix))
      .map((n) => path.join(tmpDir, n));
  } catch {
    return [];
  }
}

/** The pid a work directory records as its owner (kiln-owner.pid), if it does. */
export function workDirOwner(workDir: string): number | undefined {
  try {
    return Number(readFileSync(path.join(workDir, 'kiln-owner.pid'), 'utf8').trim());
  } catch {
    return undefined;
  }
}

/** Staging directories (".<name>.kiln-partial-<pid>[.old]") beside an output directory. */
export function stagingDirsBeside(outputDir: string): string[] {
  const parent = path.dirname(outputDir);
  const prefix = `.${path.basename(outputDir)}.kiln-partial-`;
  try {
    return readdirSync(parent)
      .filter((n) => n.startsWith(prefix))
      .map((n) => path.join(parent, n));
  } catch {
    return [];
  }
}

/**
 * Files in a cache directory that are not finished entries: kiln writes every cache file under a
 * temporary name (NAME.tmp-PID, NAME.PID.tmp, NAME.PID, NAME.part) and renames it into place, holds
 * NAME.lock (holding its pid) while it works, and lists layers it uses in layers/inuse/PID.json. Any
 * of these left after kiln exited is a leak, unless it belongs to one of `exemptPids` (still running,
 * or killed on purpose).
 */
export function unfinishedCacheFiles(cacheDir: string, exemptPids: number[] = []): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      const file = path.join(dir, name);
      let isDir = false;
      try {
        isDir = statSync(file).isDirectory();
      } catch {
        continue;
      }
      if (isDir) {
        walk(file);
        continue;
      }
      const pid =
        /\.tmp-(\d+)$/.exec(name)?.[1] ??
        /\.(\d+)\.tmp$/.exec(name)?.[1] ??
        /\.(\d+)$/.exec(name)?.[1] ??
        (path.basename(dir) === 'inuse' ? /^(\d+)\.json$/.exec(name)?.[1] : undefined) ??
        (name.endsWith('.lock') ? lockOwner(file) : undefined);
      if (pid !== undefined && exemptPids.includes(Number(pid))) continue;
      if (pid !== undefined || name.endsWith('.part') || name.endsWith('.lock')) found.push(file);
    }
  };
  walk(cacheDir);
  return found;
}

/** A lock file holds its owner's pid. */
function lockOwner(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export interface ListeningSocket {
  address: string;
  pid: number;
  process: string;
}

/** TCP sockets in LISTEN state owned by `pid` (from `ss -ltnp`). */
export async function listeningSocketsOf(pid: number): Promise<ListeningSocket[]> {
  const r = await execa('ss', ['-ltnpH'], { reject: false });
  const sockets: ListeningSocket[] = [];
  for (const line of String(r.stdout).split('\n')) {
    // users:(("node",pid=1234,fd=21),...)
    for (const m of line.matchAll(/\("([^"]+)",pid=(\d+),fd=\d+\)/g)) {
      if (Number(m[2]) === pid) sockets.push({ address: line.trim().split(/\s+/)[3] ?? line, pid, process: m[1]! });
    }
  }
  return sockets;
}

/** What a process has open: one entry per descriptor ("socket:[123]", "/path", "pipe:[45]"). */
export function openDescriptors(pid: number | 'self' = 'self'): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const fd of readdirSync(dir)) {
    try {
      out.push(`${fd} -> ${readlinkSync(path.join(dir, fd))}`);
    } catch {
      /* closed while listing */
    }
  }
  return out;
}

/** The pid of a process that has already ended: an owner a lock or work directory may name, long gone. */
export async function deadPid(): Promise<number> {
  const child = execa('true');
  await child;
  return child.pid!;
}
