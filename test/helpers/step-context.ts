/**
 * A build context for one step's unit test: a real template (written as JSON, which is YAML, and
 * loaded by kiln's loader, so every default is the real one), a fake driver, a private work
 * directory, and the logs and events the step emits, collected. The context itself comes from the
 * build's factory (src/build/context.ts), so it cannot drift from what a build gives its steps.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTemplate } from '../../src/template/load.js';
import { EventBus, type BuildEvent } from '../../src/ui/events.js';
import type { BuildContext, BuildOptions, BuildState } from '../../src/build/state.js';
import { createBuildContext } from '../../src/build/context.js';
import { FakeDriver } from './fake-driver.js';

export interface StepHarness {
  ctx: BuildContext;
  driver: FakeDriver;
  dir: string;
  logs: { level: string; message: string }[];
  events: BuildEvent[];
  abort: AbortController;
  /** Log lines at `level`. */
  said(level?: string): string[];
}

const roots: string[] = [];
/** Removes every directory the harness made (call in afterAll). */
export function removeStepDirs(): void {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
}

export function stepContext(
  o: {
    source?: Record<string, unknown>;
    build?: Record<string, unknown>;
    state?: Partial<BuildState>;
    options?: Partial<BuildOptions>;
    driver?: FakeDriver;
  } = {},
): StepHarness {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-step-'));
  roots.push(dir);
  const base = path.join(dir, 'base.qcow2');
  writeFileSync(base, 'not really a disk');
  // '$base' in the source stands for that file (an ISO build's `iso`, say).
  const source = Object.fromEntries(Object.entries(o.source ?? {}).map(([k, v]) => [k, v === '$base' ? base : v]));
  const file = path.join(dir, 'unit.yaml');
  writeFileSync(
    file,
    JSON.stringify({
      builds: [
        {
          name: 'unit',
          output_directory: path.join(dir, 'out', 'unit'),
          source: {
            base_image: base,
            checksum: 'none',
            cloud_init: false,
            communicator: { username: 'root', password: 'unit-secret', trust_on_first_use: true },
            ...source,
          },
          ...o.build,
        },
      ],
    }),
  );
  const template = loadTemplate(file, {}, { cacheDir: path.join(dir, 'cache') });
  const build = template.template.builds[0]!;
  const workDir = path.join(dir, 'work');
  mkdirSync(workDir, { mode: 0o700 });
  const driver = o.driver ?? new FakeDriver();
  const events = new EventBus();
  const logs: StepHarness['logs'] = [];
  const seen: BuildEvent[] = [];
  events.subscribe((e) => {
    seen.push(e);
    if (e.type === 'log') logs.push({ level: e.level, message: e.message });
  });
  const abort = new AbortController();
  const state: BuildState = { workDir, startedAt: new Date(), artifacts: [], timings: {}, ...o.state };
  // The build's own factory: the same ${build.*} values and log events as a real build.
  const ctx = createBuildContext({
    template,
    build,
    events,
    state,
    signal: abort.signal,
    options: {
      force: false,
      onError: 'cleanup',
      debug: false,
      cacheDir: path.join(dir, 'cache'),
      noCache: true,
      ...o.options,
      driver,
    },
  });
  return {
    ctx,
    driver,
    dir,
    logs,
    events: seen,
    abort,
    said: (level) => logs.filter((l) => !level || l.level === level).map((l) => l.message),
  };
}

/** A step's failure message (or undefined when it succeeded); its cleanup, if it left one. */
export async function runStep(
  step: { run: (ctx: BuildContext) => Promise<unknown> },
  ctx: BuildContext,
): Promise<{ error?: string; cleanup?: () => Promise<void> | void }> {
  try {
    const cleanup = await step.run(ctx);
    return { cleanup: typeof cleanup === 'function' ? (cleanup as () => Promise<void>) : undefined };
  } catch (e) {
    return { error: (e as Error).message };
  }
}
