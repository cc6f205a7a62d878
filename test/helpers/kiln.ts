/** Runs the real kiln CLI (compiled, as a user would) and collects its JSON event stream. */
import { execa } from 'execa';
import path from 'node:path';
import { repoRoot } from './guest.js';

export interface KilnRun { exitCode: number; stdout: string; stderr: string; events: Record<string, unknown>[] }

export async function kiln(args: string[], env: Record<string, string> = {}, timeoutMs = 600_000): Promise<KilnRun> {
  const r = await execa('node', [path.join(repoRoot, 'bin/kiln.js'), ...args], {
    reject: false, timeout: timeoutMs, env: { ...env }, stdin: 'ignore', cwd: repoRoot,
  });
  const events: Record<string, unknown>[] = [];
  for (const line of String(r.stdout ?? '').split('\n')) {
    if (!line.startsWith('{"type"')) continue; // event lines only (inspect --json prints pretty JSON)
    events.push(JSON.parse(line) as Record<string, unknown>);
  }
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), events };
}
