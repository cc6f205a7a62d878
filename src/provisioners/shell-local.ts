/** shell-local: a command on the host, with the build's values in its environment (KILN_*). */
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
  env: Record<string, string | number | boolean>;
  valid_exit_codes?: number[];
}

/**
 * Runs a command on the host (shell-local provisioner and post-processor): inline lines with `sh -e`
 * or a script, in the template's folder, with the build's KILN_* values plus `extraEnv` and its own
 * env, output streamed as lines under `label`; `signal` kills it.
 */
export async function runHostCommand(ctx: ProvisionerContext, p: HostCommand, label: string, extraEnv: Record<string, string> = {}, signal: AbortSignal = ctx.signal): Promise<void> {
  const values = { build: ctx.buildValues() };
  const env = { ...buildEnvironment(ctx), ...extraEnv, ...Object.fromEntries(Object.entries(interpolateTree(p.env, values)).map(([k, v]) => [k, String(v)])) };
  const [file, args] = p.script ? [p.script, []] : ['/bin/sh', ['-ec', p.inline!.map((l) => String(interpolateString(l, values))).join('\n')]];
  const out = lineSplitter((line) => ctx.events.emit({ type: 'output', build: ctx.build.name, stream: 'stdout', source: label, line }));
  const err = lineSplitter((line) => ctx.events.emit({ type: 'output', build: ctx.build.name, stream: 'stderr', source: label, line }));
  const r = await runInOwnProcessGroup(file, args, { env, cwd: ctx.template.dir, signal, stdout: out.write, stderr: err.write });
  out.flush();
  err.flush();
  if (signal.aborted) throw signal.reason;
  if (r.exitCode === undefined || !(p.valid_exit_codes ?? [0]).includes(r.exitCode)) {
    throw new ProvisionerError(`${label}: exited with ${r.exitCode ?? r.signal ?? 'an error'}${r.exitCode === undefined ? `: ${r.message}` : ''}`);
  }
}

export function runShellLocal(ctx: ProvisionerContext, p: ShellLocal, label: string, signal: AbortSignal): Promise<void> {
  return runHostCommand(ctx, p, label, {}, signal);
}
