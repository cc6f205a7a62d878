/**
 * The library's build: build(template, options) runs the selected builds (optionally in parallel),
 * each through its step list, and reports through events. src/index.ts exports it; the CLI is a thin
 * layer over it (argv, signals, prompts, rendering, environment variables, sweeping what a killed
 * kiln left in the temp directory).
 */
import { savedVmUnloadable, vmStateSetting, warmBaseUnusable } from './saved-vm-rules.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import { EventBus, type BuildEvent } from '../ui/events.js';
import { runSteps, type RunResult, type StepSource } from './runner.js';
import type { AirgapGuestNetwork, BuildContext, BuildOptions, BuildState, OnError } from './state.js';
import { buildSteps, finishingScripts, outputDirStep, outputSteps, planSteps } from './steps/index.js';
import { planBuild, type BuildPlan, type PlanOptions } from '../cache/plan.js';
import type { RemoteCache } from '../cache/remote/protocol.js';
import type { Step } from './step.js';
import { createBuildContext } from './context.js';
import { markOwned, ownedWorkDirs } from './stale.js';
import { isAlive } from '../util/pid.js';
import { defaultCacheDir } from '../util/cache-dir.js';
import { shellQuote } from '../qemu/argv.js';
import { globToRegExp, isGlob } from '../util/glob.js';
import { createDriver, type Driver, type DriverOptions } from '../qemu/driver.js';
import { fixOf } from '../util/errors.js';

export interface BuildResult {
  build: string;
  ok: boolean;
  error?: Error;
  failedStep?: string;
  outputDirectory?: string;
  /** It failed and the user kept it (--on-error=abort or "abort" at the prompt) until releasing it. */
  kept: boolean;
  artifacts: BuildState['artifacts'];
  timings: Record<string, number>;
  ms: number;
}

/** --only/--except: build names or Packer's globs (`qemu.*`, `*.debian`; src/util/glob.ts), each matching at least one build. */
export function selectBuilds(t: LoadedTemplate, only?: string[], except?: string[]): BuildConfig[] {
  const names = t.template.builds.map((b) => b.name);
  const matcher = (n: string): ((name: string) => boolean) => {
    if (!isGlob(n)) return (name) => name === n;
    let re: RegExp;
    try {
      re = globToRegExp(n);
    } catch (e) {
      throw new Error(
        `--only/--except: ${(e as Error).message} (a glob takes * ? [abc] [!abc] {a,b} and \\ to escape)`,
      );
    }
    return (name) => re.test(name);
  };
  const match = (list?: string[]) =>
    (list ?? []).map((n) => {
      const m = matcher(n);
      // A Packer template's builds that --only/--except left out while loading still count as matched.
      if (!names.some(m) && !(t.excluded ?? []).some(m))
        throw new Error(
          isGlob(n)
            ? `no build matches "${n}" in ${t.file} (builds: ${names.join(', ')})`
            : `no build named "${n}" in ${t.file} (builds: ${names.join(', ')})`,
        );
      return m;
    });
  const o = match(only);
  const x = match(except);
  return t.template.builds.filter((b) => (!o.length || o.some((m) => m(b.name))) && !x.some((m) => m(b.name)));
}

export async function runBuild(
  template: LoadedTemplate,
  build: BuildConfig,
  options: BuildOptions,
  events: EventBus,
  signal: AbortSignal,
  steps: StepSource = stepsFor,
): Promise<BuildResult> {
  const started = performance.now();
  // Sockets live here, so the path must stay well under the 108-byte unix socket limit.
  const workDir = mkdtempSync(path.join(options.tempDir ?? os.tmpdir(), `kiln-${build.name.slice(0, 24)}-`));
  markOwned(workDir);
  recordBuild(workDir, build.name, template.file);
  const state: BuildState = { workDir, startedAt: new Date(), artifacts: [], timings: {} };
  // build() made the driver once for all its builds, from options.qemu.
  const ctx = createBuildContext({ template, build, options, events, state, signal });
  let result: Omit<RunResult, 'cleanUp'> = { ok: false, kept: false };
  // build-end is the last word on a build, whatever happened: consumers wait for it.
  try {
    const run = await runSteps(steps, ctx);
    result = run;
    if (!run.kept || (await holdKeptBuild(ctx, run))) removeWorkDir(ctx);
  } catch (e) {
    result = { ok: false, kept: false, error: e as Error };
  } finally {
    // A build that ended before its QEMU took the memory it was promised gives the promise back.
    state.preallocTaken?.();
    const error = result.error;
    events.emit({
      type: 'build-end',
      build: build.name,
      ok: result.ok,
      ms: performance.now() - started,
      error: error ? (result.failedStep ? `${result.failedStep}: ${error.message}` : error.message) : undefined,
      fix: fixOf(error),
      outputDirectory: result.ok ? build.output_directory : undefined,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    });
  }
  return {
    build: build.name,
    ok: result.ok,
    error: result.error,
    failedStep: result.failedStep,
    ms: performance.now() - started,
    kept: result.kept,
    outputDirectory: result.ok ? build.output_directory : undefined,
    artifacts: state.artifacts,
    timings: state.timings,
  };
}

/**
 * The steps a build runs, chosen from the layer cache's plan (ctx.state.plan, set by the layer-cache
 * step; undefined before it and with --no-cache): every step for a fresh or resumed build; no guest
 * step when the final disk is cached (the outputs are converted from it, nothing boots); only the
 * steps that act on finished outputs (publish) when the build is up to date.
 */
export function stepsFor(ctx: Pick<BuildContext, 'state'>): Step[] {
  switch (ctx.state.plan?.resume.kind) {
    case 'upToDate':
      return [...planSteps, ...outputSteps.filter((s) => s.whenUpToDate)];
    case 'fromFinalLayer':
      return [...planSteps, outputDirStep, ...outputSteps];
    default:
      return buildSteps;
  }
}

/**
 * What building `build` would do with what the caches hold (src/cache/plan.ts), without booting:
 * `kiln plan` and the layer-cache step call it. It adds what only the build layer knows, the text of
 * the finishing steps' scripts (part of the final disk's key).
 */
export function planFor(build: BuildConfig, options: Omit<PlanOptions, 'finishingScripts'>): Promise<BuildPlan> {
  // As a build on this machine would decide (src/build/saved-vm-rules.ts); not for --record/--offline.
  const vmState = vmStateSetting(build) !== false && !savedVmUnloadable(build, false);
  const warmBase = !warmBaseUnusable(build, { airgap: false, sharesIntermediate: options.remoteIntermediate === true });
  return planBuild(build, { vmState, warmBase, ...options, finishingScripts: finishingScripts({ build }) });
}
export type { BuildPlan, PlanLayer, PlanOptions, Resume, RemoteLookup } from '../cache/plan.js';

/**
 * Retried: a process that had the directory open (QEMU, qemu-img) may still be writing into it for a
 * moment after it was told to stop, which fails a single attempt with ENOTEMPTY. A directory that still
 * will not go is left for the next kiln build's sweep (its owner, this process, will be gone by then).
 */
function removeWorkDir(ctx: BuildContext): void {
  try {
    rmSync(ctx.state.workDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  } catch (e) {
    ctx.log(
      `could not remove the work directory ${ctx.state.workDir}: ${(e as Error).message}; the next kiln build removes it`,
      'warn',
    );
  }
}

/**
 * A failed build the user chose to keep. QEMU runs under pdeathsig and dies with kiln, so kiln stays
 * with its VM instead of leaving an orphan: it prints how to reach the VM and waits until the user lets
 * it go (Ctrl-C, `kill <kiln pid>`, or the guest powering off), then runs the skipped cleanups. Returns
 * true when the work directory can go; false when no VM was running, so the files stay for inspection
 * (the next kiln build removes them, their owner being gone by then).
 */
async function holdKeptBuild(ctx: BuildContext, result: RunResult): Promise<boolean> {
  const { state, build } = ctx;
  const vm = state.qemu && !state.qemu.hasExited ? state.qemu : undefined;
  const stopped = `build stopped at "${result.failedStep}" and everything is kept`;
  if (!vm) {
    ctx.log(
      `${stopped}; the VM is not running.\n  work dir: ${state.workDir} (serial.log, disk)\n  the next kiln build removes it`,
      'warn',
    );
    return false;
  }
  const comm = build.source.communicator;
  let ssh = 'none (communicator: none)';
  if (comm.type === 'ssh' && state.sshHostPort) {
    // A generated key lives only in kiln's memory, and ssh refuses a key file others can read (a
    // private_key_file checked out by git is 0644): write a 0600 copy where the printed command uses it.
    let keyFile: string | undefined;
    if (state.buildKey) {
      keyFile = path.join(state.workDir, 'ssh_key');
      writeFileSync(keyFile, state.buildKey.privateKey, { mode: 0o600 });
    }
    // kiln gave a cloud-init guest its host key, so the command can verify it as kiln did.
    let knownHostsFile: string | undefined;
    if (state.hostKey) {
      knownHostsFile = path.join(state.workDir, 'known_hosts');
      writeFileSync(knownHostsFile, `[127.0.0.1]:${state.sshHostPort} ${state.hostKey.publicKey}\n`);
    }
    ssh = sshCommand({ username: comm.username, port: state.sshHostPort, keyFile, knownHostsFile });
    if (!keyFile) ssh += '   (password: communicator.password)';
    if (!knownHostsFile && state.ssh?.hostKey)
      ssh += `\n                  (host key not checked by this command; kiln saw ${state.ssh.hostKey})`;
  }
  ctx.log(
    [
      `${stopped}: the VM is still running (QEMU pid ${vm.pid}).`,
      `  ssh:            ${ssh}`,
      `  serial console: kiln console ${build.name}   (Ctrl-] detaches)`,
      `  work dir:       ${state.workDir}`,
      ...(ctx.options.keptBuildRelease ?? [
        '  kiln waits with the VM until the build is aborted (its AbortSignal) or the guest powers off;',
        '  it then stops the VM, removes the work dir and reports the build failed.',
      ]),
    ].join('\n'),
    'warn',
  );
  const reason = await new Promise<string>((resolve) => {
    const onAbort = () => resolve('stopping the kept VM');
    if (ctx.signal.aborted) {
      onAbort();
      return;
    }
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    void vm.exited.then(() => {
      ctx.signal.removeEventListener('abort', onAbort);
      resolve('the kept VM exited');
    });
  });
  ctx.log(`${reason}; cleaning up`);
  await result.cleanUp();
  return true;
}

/** The ssh command line that reaches a build's VM: its key, and its host key when kiln knows it. */
export function sshCommand(o: { username: string; port: number; keyFile?: string; knownHostsFile?: string }): string {
  const argv = ['ssh', '-p', String(o.port)];
  // IdentitiesOnly: agent keys tried first could use up the server's allowed authentication attempts.
  if (o.keyFile) argv.push('-i', o.keyFile, '-o', 'IdentitiesOnly=yes');
  argv.push(
    ...(o.knownHostsFile
      ? ['-o', `UserKnownHostsFile=${o.knownHostsFile}`, '-o', 'StrictHostKeyChecking=yes']
      : ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null']),
  );
  argv.push(`${o.username}@127.0.0.1`);
  return shellQuote(argv);
}

/** Beside the owner marker: which build a work directory belongs to, for `kiln console`. */
export const buildRecordFile = 'kiln-build.json';

export interface RunningBuild {
  build: string;
  template: string;
  pid: number;
  startedAt: string;
  workDir: string;
}

function recordBuild(workDir: string, build: string, template: string): void {
  const record: Omit<RunningBuild, 'workDir'> = {
    build,
    template,
    pid: process.pid,
    startedAt: new Date().toISOString(),
  };
  writeFileSync(path.join(workDir, buildRecordFile), JSON.stringify(record) + '\n');
}

/** Builds whose kiln process is still alive, found by the records in their work directories. */
export function listRunningBuilds(tmp = os.tmpdir()): RunningBuild[] {
  const running: RunningBuild[] = [];
  for (const { dir: workDir } of ownedWorkDirs(tmp)) {
    try {
      const record = JSON.parse(readFileSync(path.join(workDir, buildRecordFile), 'utf8')) as Omit<
        RunningBuild,
        'workDir'
      >;
      if (isAlive(record.pid)) running.push({ ...record, workDir });
    } catch {
      /* no record (an older kiln), or being written or removed right now */
    }
  }
  return running.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
}

/** Runs builds with at most `parallel` at once. */
export async function runBuilds(
  template: LoadedTemplate,
  builds: BuildConfig[],
  options: BuildOptions,
  events: EventBus,
  signal: AbortSignal,
  parallel = 1,
): Promise<BuildResult[]> {
  const results: BuildResult[] = new Array(builds.length);
  let next = 0;
  const worker = async () => {
    // After an interrupt the running builds clean up; the queued ones never start.
    while (next < builds.length && !signal.aborted) {
      const i = next++;
      results[i] = await runBuild(template, builds[i]!, options, events, signal);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, builds.length)) }, worker));
  return results.filter((r) => r !== undefined);
}

/** What build() takes besides the template; every field is optional. */
export interface KilnBuildOptions {
  /** Run only these builds (names); by default all the template's builds. */
  only?: string[];
  /** Skip these builds. */
  except?: string[];
  /** Replace existing output directories (that kiln wrote). */
  force?: boolean;
  /** On a failure: clean up (default), keep the VM running until `signal` aborts ('abort'), or ask through `prompt`. */
  onError?: OnError;
  /** Verbose log events, and a prompt between steps when `prompt` is given. */
  debug?: boolean;
  /** Where downloads, provisioner layers and digests are cached (default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln). */
  cacheDir?: string;
  /** Neither use nor fill the layer cache. */
  noCache?: boolean;
  /**
   * A shared layer cache (src/cache/remote's RemoteCache, e.g. on S3): final disks are pulled from it
   * instead of booting, and the final disks built here are shared to it (unless it is read-only).
   */
  remoteCache?: RemoteCache;
  /** Where each build's private work directory is made (default: os.tmpdir()); keep it short (unix sockets live there). */
  tempDir?: string;
  /** How many builds run at once (default 1). */
  parallel?: number;
  /** Receives every event (secrets already masked), in order. */
  onEvent?: (event: BuildEvent & { time: string }) => void;
  /** Aborting it stops the builds: the running steps are interrupted, cleanups run, queued builds never start. */
  signal?: AbortSignal;
  /** Asks the user a question (breakpoint provisioners, --debug pauses, onError 'ask'); without it nothing is asked. */
  prompt?: (question: string) => Promise<string>;
  /** Lines shown to the user on how to release a build kept by onError 'abort' (the CLI names Ctrl-C and its pid). */
  keptBuildRelease?: string[];
  /**
   * QEMU and qemu-img: their paths, an accelerator standing in for a template's `auto`, where the
   * accelerator probe remembers its answers, pinned SSH forward ports (DriverOptions; default: qemu-system-x86_64
   * and qemu-img on PATH, the accelerator probed).
   */
  qemu?: DriverOptions;
  /** A ready driver instead (e.g. a fake one in tests, or one shared between calls); `qemu` is then unused. */
  driver?: Driver;
  /** The GNU tar that writes GCE tarballs (default: tar on PATH). */
  tarBinary?: string;
  /** Air-gapped builds (src/airgap): the guest's package proxy and, offline, a network cut off but for kiln. */
  airgap?: AirgapGuestNetwork;
}

/**
 * Builds a loaded template's images: the selected builds, each through its steps, reporting through
 * `onEvent`. Resolves with one result per build that ran (a build that fails does not reject: its
 * result says ok: false, with the error and the step); rejects only on bad options (an unknown build).
 */
export async function build(template: LoadedTemplate, options: KilnBuildOptions = {}): Promise<BuildResult[]> {
  const builds = selectBuilds(template, options.only, options.except);
  const events = new EventBus([...template.variables.secrets]);
  if (options.onEvent) events.subscribe(options.onEvent);
  const onError = options.onError ?? 'cleanup';
  if (onError === 'ask' && !options.prompt) throw new Error('onError "ask" needs a prompt callback (options.prompt)');
  return runBuilds(
    template,
    builds,
    {
      force: options.force ?? false,
      onError,
      debug: options.debug ?? false,
      cacheDir: options.cacheDir ?? defaultCacheDir(),
      noCache: options.noCache,
      remoteCache: options.remoteCache,
      prompt: options.prompt,
      tempDir: options.tempDir,
      keptBuildRelease: options.keptBuildRelease,
      driver: options.driver ?? createDriver(options.qemu),
      tarBinary: options.tarBinary,
      airgap: options.airgap,
    },
    events,
    options.signal ?? new AbortController().signal,
    options.parallel ?? 1,
  );
}
