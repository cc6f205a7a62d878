/**
 * The library entry point: build(template, options) runs the selected builds (optionally in
 * parallel), each through its step list, and reports through the event bus. The CLI is a thin layer
 * over this; tests call it directly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import { EventBus } from '../ui/events.js';
import { runSteps } from './runner.js';
import type { BuildContext, BuildOptions, BuildState } from './state.js';
import { buildSteps } from './steps/index.js';
import type { Step } from './step.js';
import { markOwned, removeStaleWorkDirs } from './stale.js';
import type { Scalar } from '../template/interpolate.js';

export interface BuildResult {
  build: string;
  ok: boolean;
  error?: Error;
  failedStep?: string;
  outputDirectory?: string;
  artifacts: BuildState['artifacts'];
  timings: Record<string, number>;
  ms: number;
}

export function selectBuilds(t: LoadedTemplate, only?: string[], except?: string[]): BuildConfig[] {
  const names = t.template.builds.map((b) => b.name);
  for (const n of [...(only ?? []), ...(except ?? [])]) {
    if (!names.includes(n)) throw new Error(`no build named "${n}" in ${t.file} (builds: ${names.join(', ')})`);
  }
  return t.template.builds.filter((b) => (!only?.length || only.includes(b.name)) && !except?.includes(b.name));
}

export async function runBuild(
  template: LoadedTemplate, build: BuildConfig, options: BuildOptions, events: EventBus, signal: AbortSignal,
  steps: Step[] = buildSteps,
): Promise<BuildResult> {
  const started = performance.now();
  // Sockets live here, so the path must stay well under the 108-byte unix socket limit.
  const workDir = mkdtempSync(path.join(os.tmpdir(), `kiln-${build.name.slice(0, 24)}-`));
  markOwned(workDir);
  const state: BuildState = { workDir, startedAt: new Date(), artifacts: [], timings: {} };
  const ctx: BuildContext = {
    template, build, options, events, state, signal,
    buildValues: () => {
      const v: Record<string, Scalar> = { name: build.name, output_dir: build.output_directory! };
      if (state.http) { v.http_ip = state.http.ip; v.http_port = state.http.port; v.http_url = state.http.url; }
      if (state.buildKey) v.ssh_public_key = state.buildKey.publicKey;
      if (build.source.communicator.type === 'ssh') v.ssh_username = build.source.communicator.username;
      if (state.sshHostPort) { v.ssh_host = '127.0.0.1'; v.ssh_port = state.sshHostPort; }
      return v;
    },
    log: (message, level = 'info') => events.emit({ type: 'log', build: build.name, level, message }),
  };
  const result = await runSteps(steps, ctx);
  const ms = performance.now() - started;
  if (result.kept) {
    const how = state.sshHostPort && build.source.communicator.type === 'ssh'
      ? `ssh -p ${state.sshHostPort} ${build.source.communicator.username}@127.0.0.1${build.source.communicator.private_key_file ? ` -i ${build.source.communicator.private_key_file}` : ''}` : '(no SSH)';
    ctx.log(`--on-error=abort: everything is kept. VM: ${state.qemu && !state.qemu.hasExited ? `running (pid ${state.qemu.pid}), ${how}; serial console socket ${path.join(workDir, 'serial.sock')}` : 'not running'}; work dir ${workDir}`, 'warn');
  } else {
    rmSync(workDir, { recursive: true, force: true });
  }
  const error = result.error;
  events.emit({
    type: 'build-end', build: build.name, ok: result.ok, ms,
    error: error ? (result.failedStep ? `${result.failedStep}: ${error.message}` : error.message) : undefined,
    outputDirectory: result.ok ? build.output_directory : undefined,
  });
  return {
    build: build.name, ok: result.ok, error, failedStep: result.failedStep, ms,
    outputDirectory: result.ok ? build.output_directory : undefined, artifacts: state.artifacts, timings: state.timings,
  };
}

/** Runs builds with at most `parallel` at once. */
export async function runBuilds(
  template: LoadedTemplate, builds: BuildConfig[], options: BuildOptions, events: EventBus, signal: AbortSignal, parallel = 1,
): Promise<BuildResult[]> {
  for (const dir of removeStaleWorkDirs()) {
    events.emit({ type: 'log', build: builds[0]?.name ?? 'kiln', level: 'warn', message: `removed ${dir}, left by a kiln process that no longer exists` });
  }
  const results: BuildResult[] = new Array(builds.length);
  let next = 0;
  const worker = async () => {
    while (next < builds.length) {
      const i = next++;
      results[i] = await runBuild(template, builds[i]!, options, events, signal);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, builds.length)) }, worker));
  return results;
}

export function defaultCacheDir(): string {
  return process.env.KILN_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'kiln');
}
