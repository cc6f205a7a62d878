// Interrupting a tiny build at every step boundary. The signal is sent when the JSON event stream says
// a step starts (never after a sleep); the steps come from the build's own build-start event, so steps
// added later (the layer cache, say) are covered without editing this file. After SIGINT/SIGTERM kiln
// must have run its cleanups and left nothing; after SIGKILL QEMU must die with kiln, and the next run
// must report and remove what the killed one left.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, it, type ExpectStatic } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, spawnKiln, type KilnProcessEnd } from '../helpers/kiln.js';
import {
  kilnWorkDirs,
  processesMentioning,
  stagingDirsBeside,
  unfinishedCacheFiles,
  waitForNoProcessesMentioning,
  workDirOwner,
  type ProcessInfo,
} from '../helpers/process-audit.js';

// Not "kiln-...": kiln's stale-directory sweep only looks at kiln-* names, and this is not one of its own.
const root = mkdtempSync(path.join(os.tmpdir(), 'e2e-interrupts-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Event = Record<string, unknown>;

/**
 * One sequence of builds with its own TMPDIR (so kiln's work directories, and its sweep of stale
 * ones, only ever see this sequence's), its own cache directory and output. Its directory is also
 * the marker every process it starts carries in its command line.
 */
interface Series {
  build: string;
  dir: string;
  tmp: string;
  cache: string;
  output: string;
  template: string;
  env: Record<string, string>;
}

function makeSeries(build: string): Series {
  const dir = path.join(root, build);
  const tmp = path.join(dir, 'tmp');
  const cache = path.join(dir, 'cache');
  const http = path.join(dir, 'http');
  for (const d of [tmp, cache, http]) mkdirSync(d, { recursive: true });
  writeFileSync(path.join(http, 'hello.txt'), 'served by kiln\n');
  const output = path.join(dir, 'out', build);
  const template = path.join(dir, `${build}.yaml`);
  // One shell provisioner fetching from the HTTP server: most steps of a build are active. The nonce
  // makes every run's provisioner new, so no run is satisfied from a cache. disk_size is a variable so
  // that a recovery run can be made to stop early (see the SIGKILL series).
  writeFileSync(
    template,
    `
variables:
  nonce: { default: none }
  disk_size: { default: 512M }
builds:
  - name: ${build}
    output_directory: ${output}
${tinySourceYaml()}
      http_directory: ${http}
      disk_size: \${var.disk_size}
      shutdown_timeout: 2m
    provisioners:
      - type: shell
        inline:
          - wget -qO- http://\${build.http_ip}:\${build.http_port}/hello.txt
          - echo "run \${var.nonce}" > /root/nonce
    outputs:
      - format: qcow2
`,
  );
  return { build, dir, tmp, cache, output, template, env: { TMPDIR: tmp, KILN_CACHE_DIR: cache } };
}

const nonce = () => randomBytes(6).toString('hex');

/** Runs a build of the series and sends `signal` once `boundary` matches an event; returns what happened. */
async function buildAndSignal(
  s: Series,
  signal: NodeJS.Signals,
  boundary: (e: Event) => boolean,
  extraArgs: string[] = [],
) {
  let sentAt: Event | undefined;
  const child = spawnKiln(['build', s.template, '--events=json', '--var', `nonce=${nonce()}`, ...extraArgs], {
    env: s.env,
    timeoutMs: 300_000,
    onEvent: (e, pid) => {
      if (sentAt || !boundary(e)) return;
      sentAt = e;
      process.kill(pid, signal);
    },
  });
  const run = await child.done;
  return { run, sentAt, pid: child.pid };
}

const stepStartOf = (name: string) => (e: Event) => e.type === 'step-start' && e.step === name;
const eventsOf = (run: KilnProcessEnd, type: string) => run.events.filter((e) => e.type === type);
const stepsOf = (run: KilnProcessEnd) => (run.events.find((e) => e.type === 'build-start')?.steps ?? []) as string[];

/** Everything an interrupted (SIGINT/SIGTERM) build must not leave: processes, files, partial output. */
function expectNothingLeft(expect: ExpectStatic, s: Series, what: string): void {
  expect.soft(processesMentioning(s.dir), `${what}: processes left`).toEqual([]);
  expect.soft(kilnWorkDirs(s.tmp), `${what}: work directories left`).toEqual([]);
  expect.soft(existsSync(s.output), `${what}: output directory exists`).toBe(false);
  expect.soft(stagingDirsBeside(s.output), `${what}: staging directories left`).toEqual([]);
  expect.soft(unfinishedCacheFiles(s.cache), `${what}: unfinished files in the cache directory`).toEqual([]);
}

/** After a failed check, start the next boundary from a clean slate, so one failure does not cascade. */
async function sweep(s: Series): Promise<void> {
  for (const p of processesMentioning(s.dir)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await waitForNoProcessesMentioning(s.dir, 30_000);
  for (const d of [...kilnWorkDirs(s.tmp), ...stagingDirsBeside(s.output), s.output])
    rmSync(d, { recursive: true, force: true });
}

/** Checks one SIGINT/SIGTERM run; `cleanupSteps` are the steps whose cleanups a full build runs. */
function expectCleanInterrupt(
  expect: ExpectStatic,
  s: Series,
  r: Awaited<ReturnType<typeof buildAndSignal>>,
  signal: 'SIGINT' | 'SIGTERM',
  cleanupSteps: Set<string>,
  what: string,
): void {
  const { run } = r;
  expect.soft(r.sentAt, `${what}: the boundary never came`).toBeDefined();
  expect
    .soft(run.exitCode, `${what}: exit code; stderr:\n${run.stderr.slice(-2000)}`)
    .toBe(signal === 'SIGINT' ? 130 : 143);
  expect.soft(run.stderr, what).toContain(`${signal} received, cleaning up`);
  const end = run.events.findIndex((e) => e.type === 'build-end');
  expect.soft(run.events[end], `${what}: no failed build-end event`).toMatchObject({ type: 'build-end', ok: false });
  // Anything after build-end comes from work still going on after kiln said the build was over.
  expect.soft(end < 0 ? [] : run.events.slice(end + 1), `${what}: events after build-end`).toEqual([]);
  // Which cleanups must have run: those of every step that finished. Which may have: also the step
  // that was running when the signal came (it can finish before kiln sees the signal).
  const ended = new Set(eventsOf(run, 'step-end').map((e) => String(e.step)));
  const started = new Set(eventsOf(run, 'step-start').map((e) => String(e.step)));
  const cleaned = eventsOf(run, 'cleanup');
  expect
    .soft(
      cleaned.filter((e) => e.error),
      `${what}: failed cleanups`,
    )
    .toEqual([]);
  const cleanedSteps = cleaned.map((e) => String(e.step));
  expect
    .soft(
      cleanedSteps.filter((st) => !started.has(st) || !cleanupSteps.has(st)),
      `${what}: cleanups of steps that never ran`,
    )
    .toEqual([]);
  expect
    .soft(
      [...ended].filter((st) => cleanupSteps.has(st) && !cleanedSteps.includes(st)),
      `${what}: cleanups that did not run`,
    )
    .toEqual([]);
  // Reverse order of the steps.
  const order = stepsOf(run);
  const indexes = cleanedSteps.map((st) => order.indexOf(st));
  expect.soft(indexes, `${what}: cleanup order`).toEqual([...indexes].sort((a, b) => b - a));
  expectNothingLeft(expect, s, what);
}

/**
 * A full build, once, shared by the SIGINT tests: it must work, and it says which steps a build has
 * and which of them have cleanups.
 */
let reference:
  | Promise<{ run: KilnProcessEnd; steps: string[]; cleanupSteps: Set<string>; processesLeft: ProcessInfo[] }>
  | undefined;
function referenceBuild() {
  reference ??= (async () => {
    const s = makeSeries('intr-ref');
    const { run } = await buildAndSignal(s, 'SIGINT', () => false);
    const processesLeft = processesMentioning(s.dir);
    rmSync(s.output, { recursive: true, force: true });
    return {
      run,
      steps: stepsOf(run),
      cleanupSteps: new Set(eventsOf(run, 'cleanup').map((e) => String(e.step))),
      processesLeft,
    };
  })();
  return reference;
}

describe.concurrent('interrupting a tiny build at every step boundary', () => {
  // The steps are split between two series that run at once (alternate steps, so both get early
  // and late ones): the whole list one after the other was the longest test of the file.
  for (const half of [0, 1]) {
    const which = half === 0 ? 'each odd-numbered step' : 'each even-numbered step (and SIGTERM once)';
    it(`SIGINT at the start of ${which}: exit 130 (143), cleanups ran, nothing left behind`, async ({ expect }) => {
      const full = await referenceBuild();
      expect(full.run.exitCode, full.run.stderr.slice(-3000)).toBe(0);
      const { steps, cleanupSteps } = full;
      expect(steps.length).toBeGreaterThan(5);
      expect(full.processesLeft).toEqual([]);

      const s = makeSeries(`intr-int${half}`);
      for (const step of steps.filter((_, i) => i % 2 === half)) {
        const what = `SIGINT at the start of "${step}"`;
        const r = await buildAndSignal(s, 'SIGINT', stepStartOf(step));
        expect.soft(stepsOf(r.run), `${what}: the step list changed between runs`).toEqual(steps);
        expectCleanInterrupt(expect, s, r, 'SIGINT', cleanupSteps, what);
        await sweep(s);
      }
      if (half === 0) return;

      // SIGTERM takes the same path; once, at the first step to start after QEMU is up (found from
      // the stream, not from a step name).
      let qemuUp = false;
      const term = await buildAndSignal(s, 'SIGTERM', (e) => {
        // Booted, or restored from the warm base an earlier run of this series saved.
        if (e.type === 'log' && /QEMU started|warm base: restored/.test(String(e.message))) qemuUp = true;
        return qemuUp && e.type === 'step-start';
      });
      expectCleanInterrupt(
        expect,
        s,
        term,
        'SIGTERM',
        cleanupSteps,
        `SIGTERM at the start of "${String(term.sentAt?.step)}"`,
      );
    }, 1_800_000);
  }

  it('a provisioner that times out is killed in the guest before its retry; SIGINT during `sleep 600` stops at once', async ({
    expect,
  }) => {
    const s = makeSeries('intr-stop');
    const attempts = path.join(s.dir, 'attempts.txt');
    // Attempt 1 records itself and sleeps past its timeout (20 s: time for the attempt to get going on
    // a loaded machine; at 5 s an SSH exec under heavy load was cut before it wrote its record); attempt 2 records whether attempt 1's shell
    // still runs (a zombie does not count), then ends. The file provisioner brings the record home.
    const template = path.join(s.dir, 'stop.yaml');
    writeFileSync(
      template,
      `
variables:
  nonce: { default: none }
builds:
  - name: intr-stop
    output_directory: ${s.output}
${tinySourceYaml()}
    provisioners:
      - type: shell
        timeout: 20s
        max_retries: 1
        inline:
          - 'p=$(cat /root/attempt.pid 2>/dev/null || true); state=$(cut -d" " -f3 /proc/$p/stat 2>/dev/null || true)'
          - 'if [ -n "$p" ] && [ -n "$state" ] && [ "$state" != Z ]; then echo "overlap with $p" >> /root/attempts; fi'
          - 'echo $$ > /root/attempt.pid; echo start >> /root/attempts'
          - '[ "$(grep -c start /root/attempts)" -ge 2 ] || sleep 600'
      - type: file
        direction: download
        source: /root/attempts
        destination: ${attempts}
      - type: shell
        inline: ['echo sleeping', 'sleep 600']
    outputs:
      - format: qcow2
`,
    );
    const r = await buildAndSignal(
      { ...s, template },
      'SIGINT',
      (e) => e.type === 'output' && e.source === 'provisioner 3' && e.line === 'sleeping',
    );
    expect.soft(r.sentAt, `the third provisioner never printed; stderr:\n${r.run.stderr.slice(-3000)}`).toBeDefined();
    expect.soft(r.run.exitCode, r.run.stderr.slice(-2000)).toBe(130);
    // Every step honoured the interrupt: none was left to run on past the grace period.
    const logs = [r.run.stderr, ...eventsOf(r.run, 'log').map((e) => String(e.message))].join('\n');
    expect.soft(logs).not.toMatch(/did not stop within/);
    expect.soft(logs).toMatch(/provisioner 1 failed \(provisioner 1 timed out after 20s\); retry 1 of 1/);
    expect
      .soft(existsSync(attempts) ? readFileSync(attempts, 'utf8') : 'no record', 'the attempts')
      .toBe('start\nstart\n');
    expectNothingLeft(expect, s, 'SIGINT during sleep 600');
  }, 600_000);

  it('SIGKILL at each step start: QEMU dies with kiln, the next run removes the work dir and partial output', async ({
    expect,
  }) => {
    const s = makeSeries('intr-kill');
    let steps: string[] | undefined;
    const outlivedKiln: { step: string; processes: ProcessInfo[] }[] = [];
    const killedPids: number[] = [];
    for (let i = 0; steps === undefined || i < steps.length; i++) {
      const step = steps?.[i];
      const what = `SIGKILL at the start of "${step ?? '(first step)'}"`;
      // The first run's own build-start names the steps; it is killed at the first of them.
      const r = await buildAndSignal(s, 'SIGKILL', (e) => (step ? stepStartOf(step)(e) : e.type === 'step-start'));
      if (!steps) {
        steps = stepsOf(r.run);
        expect(steps.length).toBeGreaterThan(5);
      }
      expect.soft(r.sentAt, `${what}: the boundary never came`).toBeDefined();
      expect.soft(r.run.signal, `${what}: kiln was not killed; stderr:\n${r.run.stderr.slice(-2000)}`).toBe('SIGKILL');

      // The kernel kills QEMU when kiln dies (pdeathsig), a moment later. Whatever is still there is
      // stopped: SIGKILL from pdeathsig ends a stopped process all the same, while an orphan without
      // it (a qemu-img that would otherwise run to its end) stays, and is caught. Then poll, with a
      // generous ceiling.
      const outliving = processesMentioning(s.dir);
      for (const p of outliving) {
        try {
          process.kill(p.pid, 'SIGSTOP');
        } catch {
          /* gone meanwhile */
        }
      }
      if (outliving.length) outlivedKiln.push({ step: step ?? steps[0]!, processes: outliving });
      const orphans = await waitForNoProcessesMentioning(s.dir, 30_000);
      expect.soft(orphans, `${what}: processes that outlived kiln (no pdeathsig)`).toEqual([]);
      for (const p of orphans) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await waitForNoProcessesMentioning(s.dir, 30_000);

      // What the killed kiln left: its work directory (marked with its pid) and maybe a staging
      // directory; never an output directory that looks finished but is not.
      const workDirs = kilnWorkDirs(s.tmp);
      expect.soft(workDirs.map(workDirOwner), `${what}: work directories left`).toEqual([r.pid]);
      const staging = stagingDirsBeside(s.output);
      expect
        .soft(
          staging.filter((d) => !d.endsWith(`.kiln-partial-${r.pid}`) && !d.endsWith(`.kiln-partial-${r.pid}.old`)),
          `${what}: foreign staging dirs`,
        )
        .toEqual([]);
      if (existsSync(s.output)) {
        // Only possible when kiln died right after its final rename: then the output must be whole.
        const verify = await kiln(['verify', path.join(s.output, 'manifest.json')]);
        expect
          .soft(
            verify.exitCode,
            `${what}: an output directory exists and does not verify: ${verify.stdout}${verify.stderr}`,
          )
          .toBe(0);
        rmSync(s.output, { recursive: true, force: true });
      }

      // The next kiln build of the same template reports and removes both. Except after the last
      // boundary it is made to fail right after claiming the output directory (disk_size smaller
      // than the base): the sweeps run before that, and no VM has to boot for them.
      const last = i === steps.length - 1;
      const next = await kiln(
        ['build', s.template, '--events=json', '--var', `nonce=${nonce()}`, ...(last ? [] : ['--var', 'disk_size=1M'])],
        s.env,
      );
      if (last) {
        expect.soft(next.exitCode, `${what}: the next (full) build failed:\n${next.stderr.slice(-3000)}`).toBe(0);
        const verify = await kiln(['verify', path.join(s.output, 'manifest.json')]);
        expect
          .soft(verify.exitCode, `${what}: kiln verify after the next build: ${verify.stdout}${verify.stderr}`)
          .toBe(0);
      } else {
        expect.soft(next.exitCode, what).toBe(1);
        expect
          .soft(next.stderr, `${what}: the next build failed for another reason than the one meant`)
          .toMatch(/disk_size .* is smaller than the base image/);
      }
      for (const d of workDirs)
        expect.soft(next.stderr, what).toContain(`removed ${d}, left by a kiln process that no longer exists`);
      for (const d of staging)
        expect
          .soft(next.stderr, what)
          .toContain(`removed ${d}, a partial output left by a kiln process that no longer exists`);
      expect.soft(kilnWorkDirs(s.tmp), `${what}: work directories after the next run`).toEqual([]);
      expect.soft(stagingDirsBeside(s.output), `${what}: staging directories after the next run`).toEqual([]);
      expect.soft(processesMentioning(s.dir), `${what}: processes after the next run`).toEqual([]);
      // Files a killed kiln was writing into the cache may stay (named by its pid or holding it, never
      // read as entries); none may be left by a run that ended by itself.
      killedPids.push(r.pid);
      expect
        .soft(unfinishedCacheFiles(s.cache, killedPids), `${what}: unfinished cache files not of a killed kiln`)
        .toEqual([]);
      await sweep(s);
    }
    if (outlivedKiln.length)
      console.log(
        'processes seen alive right after kiln was SIGKILLed (all gone later):',
        JSON.stringify(outlivedKiln, null, 2),
      );
  }, 1_800_000);
});
