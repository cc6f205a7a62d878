/** Runs the real kiln CLI (compiled, as a user would) and collects its JSON event stream. */
import { execa } from 'execa';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './guest.js';

export interface KilnRun {
  exitCode: number;
  stdout: string;
  stderr: string;
  events: Record<string, unknown>[];
}

/**
 * Each kiln run gets a layer cache of its own unless the test passes KILN_CACHE_DIR, so no test starts
 * from layers another one left. The accelerator probe's answer is shared (it is host-wide anyway).
 */
function ownCache(env: Record<string, string>): { env: Record<string, string>; release: () => void } {
  if (env.KILN_CACHE_DIR) return { env, release: () => undefined };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-test-cache-'));
  return { env: { ...env, KILN_CACHE_DIR: dir }, release: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function kiln(args: string[], env: Record<string, string> = {}, timeoutMs = 600_000): Promise<KilnRun> {
  const cache = ownCache(env);
  const r = await execa('node', [path.join(repoRoot, 'bin/kiln.js'), ...args], {
    reject: false,
    timeout: timeoutMs,
    env: cache.env,
    stdin: 'ignore',
    cwd: repoRoot,
  }).finally(cache.release);
  const events: Record<string, unknown>[] = [];
  for (const line of String(r.stdout ?? '').split('\n')) {
    if (!line.startsWith('{"type"')) continue; // event lines only (inspect --json prints pretty JSON)
    events.push(JSON.parse(line) as Record<string, unknown>);
  }
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), events };
}

export interface KilnProcessEnd extends KilnRun {
  signal?: string;
}

/**
 * Starts the real kiln CLI and hands each JSON event to `onEvent` the moment its line arrives, so a
 * test can act at a precise point of a build (send a signal at a step boundary, read /proc while a
 * build runs) instead of sleeping.
 */
export function spawnKiln(
  args: string[],
  opts: {
    env?: Record<string, string>;
    onEvent?: (event: Record<string, unknown>, pid: number) => void;
    timeoutMs?: number;
    /** Source of an ES module run instead of bin/kiln.js, with the same args (a driver calling the CLI's main() itself); it gets a stdin pipe for send(). */
    script?: string;
  } = {},
): {
  pid: number;
  kill: (signal: NodeJS.Signals) => void;
  send: (line: string) => void;
  done: Promise<KilnProcessEnd>;
} {
  const cache = ownCache(opts.env ?? {});
  const argv = opts.script
    ? ['--input-type=module', '-e', opts.script, '--', ...args]
    : [path.join(repoRoot, 'bin/kiln.js'), ...args];
  const child = execa('node', argv, {
    reject: false,
    timeout: opts.timeoutMs ?? 600_000,
    env: cache.env,
    stdin: opts.script ? 'pipe' : 'ignore',
    cwd: repoRoot,
    buffer: { stdout: false, stderr: true },
  });
  const pid = child.pid!;
  const events: Record<string, unknown>[] = [];
  let stdout = '';
  let partial = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    stdout += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith('{"type"')) continue;
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      opts.onEvent?.(event, pid);
    }
  });
  const done = child.finally(cache.release).then((r) => ({
    exitCode: r.exitCode ?? -1,
    signal: r.signal ?? undefined,
    stdout,
    stderr: String(r.stderr ?? ''),
    events,
  }));
  return {
    pid,
    kill: (signal) => {
      child.kill(signal);
    },
    send: (line) => {
      child.stdin?.write(`${line}\n`);
    },
    done,
  };
}

/** The lines a provisioner printed ("provisioner 2"), from a run's output events. */
export const outputLines = (events: Record<string, unknown>[], source: string): string[] =>
  events.filter((e) => e.type === 'output' && e.source === source).map((e) => String(e.line));
