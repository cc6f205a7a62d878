/** The kiln CLI: yargs maps flags to options and calls the library; nothing else lives here. */
import readline from 'node:readline';
import yargs from 'yargs';
import { kilnVersion } from '../version.js';
import { loadTemplate, type LoadedTemplate } from '../template/load.js';
import { TemplateError } from '../template/errors.js';
import { VariableError, type VariableInputs } from '../template/variables.js';
import { defaultCacheDir, runBuilds, selectBuilds } from '../build/build.js';
import { BuildInterrupted } from '../build/runner.js';
import type { OnError } from '../build/state.js';
import { EventBus } from '../ui/events.js';
import { humanRenderer, jsonRenderer, type ProgressMode } from '../ui/render.js';
import { inspectTemplate } from './inspect.js';
import { verifyManifest } from '../artifacts/verify.js';

class UsageError extends Error {}

interface Common { template: string; var?: string[]; 'var-file'?: string[] }

function load(argv: Common): LoadedTemplate {
  const inputs: VariableInputs = { vars: argv.var ?? [], varFiles: argv['var-file'] ?? [], env: process.env };
  return loadTemplate(argv.template, inputs);
}

function reportError(e: unknown): number {
  if (e instanceof TemplateError || e instanceof VariableError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 1;
  }
  process.stderr.write(`error: ${(e as Error).message ?? String(e)}\n`);
  return 1;
}

function terminalPrompt(): ((q: string) => Promise<string>) | undefined {
  if (!process.stdin.isTTY) return undefined;
  return (question) => new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    rl.question(question, (answer) => { rl.close(); resolve(answer); });
  });
}

async function buildCommand(argv: Common & {
  force: boolean; only?: string[]; except?: string[]; 'on-error': OnError; 'parallel-builds': number;
  debug: boolean; timestamps: boolean; events?: string; progress: ProgressMode;
}): Promise<number> {
  const t = load(argv);
  const builds = selectBuilds(t, argv.only, argv.except);
  const bus = new EventBus([...t.variables.secrets]);
  if (argv.events === 'json') bus.subscribe(jsonRenderer(process.stdout));
  bus.subscribe(humanRenderer({ timestamps: argv.timestamps, debug: argv.debug, progress: argv.progress }));

  const controller = new AbortController();
  let interrupted: string | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) {
      // A second interrupt: stop now. QEMU dies with kiln (pdeathsig).
      process.stderr.write(`kiln: ${sig} again, exiting without cleanup\n`);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    interrupted = sig;
    process.stderr.write(`kiln: ${sig} received, cleaning up (again to exit at once)\n`);
    controller.abort(new BuildInterrupted(sig));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const prompt = terminalPrompt();
    if (argv['on-error'] === 'ask' && !prompt) process.stderr.write('kiln: --on-error=ask needs a terminal; using cleanup\n');
    const results = await runBuilds(t, builds, {
      force: argv.force, onError: argv['on-error'] === 'ask' && !prompt ? 'cleanup' : argv['on-error'],
      debug: argv.debug, cacheDir: defaultCacheDir(), prompt,
    }, bus, controller.signal, argv['parallel-builds']);
    if (interrupted) return interrupted === 'SIGINT' ? 130 : 143;
    const failed = results.filter((r) => !r.ok);
    if (builds.length > 1) {
      process.stderr.write(`${results.length - failed.length} of ${results.length} builds succeeded${failed.length ? `; failed: ${failed.map((r) => r.build).join(', ')}` : ''}\n`);
    }
    return failed.length ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export async function main(args: string[]): Promise<number> {
  let code = 0;
  const withTemplate = (y: ReturnType<typeof yargs>) => y
    .positional('template', { type: 'string', describe: 'template file (YAML or JSON)', demandOption: true })
    .option('var', { type: 'string', array: true, describe: 'set a variable: name=value (repeatable)' })
    .option('var-file', { type: 'string', array: true, describe: 'YAML/JSON file of variable values (repeatable)' });
  const parser = yargs(args)
    .scriptName('kiln')
    .usage('kiln — build VM images with QEMU\n\nUsage: $0 <command> [options]')
    .command('build <template>', 'build the images a template describes', (y) => withTemplate(y as never)
      .option('force', { type: 'boolean', default: false, describe: 'replace existing output directories' })
      .option('only', { type: 'string', array: true, describe: 'run only these builds' })
      .option('except', { type: 'string', array: true, describe: 'skip these builds' })
      .option('on-error', { choices: ['cleanup', 'abort', 'ask'] as const, default: 'cleanup' as OnError, describe: 'on failure: clean up, keep everything (abort), or ask' })
      .option('parallel-builds', { type: 'number', default: 1, describe: 'how many builds run at once' })
      .option('debug', { type: 'boolean', default: false, describe: 'verbose logs; pause between steps on a terminal' })
      .option('timestamps', { type: 'boolean', default: false, describe: 'prefix log lines with the time' })
      .option('events', { choices: ['json'] as const, describe: 'write a JSON-lines event stream to stdout' })
      .option('progress', { choices: ['auto', 'always', 'never'] as const, default: 'auto' as ProgressMode, describe: 'progress bars: on a terminal (auto), always, or never' }),
    async (argv) => { code = await buildCommand(argv as never).catch(reportError); })
    .command('validate <template>', 'check a template and report every problem', (y) => withTemplate(y as never),
      (argv) => {
        try {
          const t = load(argv as unknown as Common);
          process.stdout.write(`${argv.template}: valid (${t.template.builds.length} build${t.template.builds.length === 1 ? '' : 's'}: ${t.template.builds.map((b) => b.name).join(', ')})\n`);
        } catch (e) { code = reportError(e); }
      })
    .command('inspect <template>', 'show what a build will do, variables resolved (sensitive ones masked)', (y) => withTemplate(y as never)
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
    (argv) => {
      try { process.stdout.write(inspectTemplate(load(argv as unknown as Common), Boolean(argv.json))); } catch (e) { code = reportError(e); }
    })
    .command('verify <manifest>', 're-check the artifacts a manifest.json lists (sizes, digests, qemu-img check)', (y) => y
      .positional('manifest', { type: 'string', demandOption: true, describe: 'a manifest.json written by kiln build' }),
    async (argv) => {
      try {
        const results = await verifyManifest(String(argv.manifest));
        for (const r of results) process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.problems.length ? `: ${r.problems.join('; ')}` : ''}\n`);
        code = results.every((r) => r.ok) ? 0 : 1;
      } catch (e) { code = reportError(e); }
    })
    .demandCommand(1, 'give a command: build, validate, inspect or verify')
    .strict()
    .version(kilnVersion)
    .alias('h', 'help')
    .alias('v', 'version')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      if (err) throw err;
      // Throwing stops yargs from running the command after a usage error.
      throw new UsageError(msg);
    });
  try {
    await parser.parseAsync();
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`error: ${e.message}\nrun "kiln --help" for usage\n`);
    return 2;
  }
  return code;
}
