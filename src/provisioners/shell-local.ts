/** shell-local: a command on the host, with the build's values in its environment (KILN_*). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ProvisionerContext } from './context.js';
import type { Provisioner } from '../template/schema.js';
import { interpolateString, interpolateTree } from '../template/interpolate.js';
import { lineSplitter } from './context.js';
import { ProvisionerError } from './shell.js';
import { runInOwnProcessGroup } from './host-process.js';

type ShellLocal = Extract<Provisioner, { type: 'shell-local' }>;

export function buildEnvironment(ctx: ProvisionerContext): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(ctx.buildValues())) env[`KILN_${k.toUpperCase()}`] = String(v);
  return env;
}

export interface HostCommand {
  inline?: string[];
  script?: string;
  /** Inline lines become a script starting "#!<inline_shebang>" (Packer's field); unset: `sh -ec`. */
  inline_shebang?: string;
  /** Where the command runs; relative to the template's folder, which is the default. */
  working_directory?: string;
  env: Record<string, string | number | boolean>;
  valid_exit_codes?: number[];
}

/**
 * Runs a command on the host (shell-local provisioner and post-processor): inline lines with `sh -e`
 * (or the `inline_shebang` interpreter) or a script, in the template's folder (or working_directory),
 * with the build's KILN_* values plus `extraEnv` and its own env, output streamed as lines under
 * `label`; `signal` kills it.
 */
export async function runHostCommand(
  ctx: ProvisionerContext,
  p: HostCommand,
  label: string,
  extraEnv: Record<string, string> = {},
  signal: AbortSignal = ctx.signal,
): Promise<void> {
  const values = { build: ctx.buildValues() };
  const env = {
    ...buildEnvironment(ctx),
    ...extraEnv,
    ...Object.fromEntries(Object.entries(interpolateTree(p.env, values)).map(([k, v]) => [k, String(v)])),
  };
  const body = p.inline?.map((l) => String(interpolateString(l, values))).join('\n');
  // With an inline_shebang the lines go into a script of kiln's own that the kernel runs through that
  // interpreter, as Packer does (a shebang's arguments are not sh's to split).
  const scriptDir = p.inline && p.inline_shebang ? mkdtempSync(path.join(os.tmpdir(), 'kiln-shell-local-')) : undefined;
  if (scriptDir) {
    try {
      writeFileSync(path.join(scriptDir, 'inline.sh'), `#!${p.inline_shebang}\n${body}\n`, { mode: 0o700 });
    } catch (e) {
      rmSync(scriptDir, { recursive: true, force: true });
      throw e;
    }
  }
  const [file, args] = p.script
    ? [p.script, []]
    : scriptDir
      ? [path.join(scriptDir, 'inline.sh'), []]
      : ['/bin/sh', ['-ec', body!]];
  const out = lineSplitter((line) =>
    ctx.events.emit({ type: 'output', build: ctx.build.name, stream: 'stdout', source: label, line }),
  );
  const err = lineSplitter((line) =>
    ctx.events.emit({ type: 'output', build: ctx.build.name, stream: 'stderr', source: label, line }),
  );
  const cwd = path.resolve(ctx.template.dir, p.working_directory ?? '.');
  const r = await runInOwnProcessGroup(file, args, { env, cwd, signal, stdout: out.write, stderr: err.write }).finally(
    () => {
      if (scriptDir) rmSync(scriptDir, { recursive: true, force: true });
    },
  );
  out.flush();
  err.flush();
  if (signal.aborted) throw signal.reason;
  if (r.exitCode === undefined || !(p.valid_exit_codes ?? [0]).includes(r.exitCode)) {
    throw new ProvisionerError(
      `${label}: exited with ${r.exitCode ?? r.signal ?? 'an error'}${r.exitCode === undefined ? `: ${r.message}` : ''}`,
    );
  }
}

export function runShellLocal(
  ctx: ProvisionerContext,
  p: ShellLocal,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  return runHostCommand(ctx, p, label, {}, signal);
}
