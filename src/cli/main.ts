/**
 * The kiln CLI: argv, signals, prompts, rendering and environment variables over the library API
 * (src/index.ts): yargs maps flags to options and calls it; nothing else lives here.
 */
import readline from 'node:readline';
import yargs from 'yargs';
import {
  build,
  BuildInterrupted,
  loadTemplate,
  TemplateError,
  VariableError,
  verify,
  version as kilnVersion,
  type LoadedTemplate,
  type OnError,
  type VariableInputs,
} from '../index.js';
import { selectBuilds } from '../build/build.js';
import { removeStaleWorkDirs } from '../build/stale.js';
import { cacheDirFromEnv, qemuOptionsFromEnv, tarBinaryFromEnv } from './env.js';
import { maskSecrets, type EventSink } from '../ui/events.js';
import { humanRenderer, jsonRenderer, type ProgressMode } from '../ui/render.js';
import { inspectTemplate } from './inspect.js';
import { schemaText } from './schema.js';
import { consoleCommand } from './console.js';
import { cacheCommand, type CacheArgs } from './cache.js';
import { openRemoteCache, remoteCacheOptions, type RemoteCacheArgs } from './remote-cache.js';
import { importTemplate } from './import.js';
import { publishCommand } from './publish.js';
import { bundleCommand, prepareAirgap, type AirgapBuildArgs, type BundleArgs } from './bundle.js';
import { listOf, namesOf } from './flag-lists.js';
import { planCommand } from './plan.js';
import { slurmCommand, type SlurmArgs } from './slurm.js';
import { summaryLine } from '../scale/follow.js';
import { KilnError } from '../util/errors.js';

class UsageError extends Error {}

interface Common {
  template: string;
  var?: string | string[];
  'var-file'?: string | string[];
}

/** Packer's single-dash spellings of long flags (-var, -var-file=f, -force, -only=a,b, -on-error=abort). */
const packerFlags = new Set([
  'var',
  'var-file',
  'force',
  'only',
  'except',
  'on-error',
  'debug',
  'timestamps',
  'parallel-builds',
  'events',
  'progress',
  'json',
  'output',
]);
export function normalizePackerFlags(args: string[]): string[] {
  const out: string[] = [];
  for (const [i, a] of args.entries()) {
    // After "--" everything is an operand.
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const m = /^-([a-z][a-z-]+)(=.*)?$/.exec(a);
    out.push(m && packerFlags.has(m[1]!) ? `-${a}` : a);
  }
  return out;
}

/** --only/--except: which of the template's builds a command acts on, each repeatable or comma-separated. */
const buildSelection = (only: string, except: string) =>
  ({
    only: { type: 'string', requiresArg: true, describe: only },
    except: { type: 'string', requiresArg: true, describe: except },
  }) as const;

function load(argv: Common, only?: string[], except?: string[]): LoadedTemplate {
  const inputs: VariableInputs = { vars: listOf(argv.var), varFiles: listOf(argv['var-file']), env: process.env };
  const t = loadTemplate(argv.template, inputs, { only, except, cacheDir: cacheDirFromEnv() });
  for (const note of t.notes ?? []) process.stderr.write(`warning: ${note}\n`);
  return t;
}

/** validate's and inspect's builds: loaded with -only/-except, then selected as build selects them. */
function loadSelected(argv: { only?: unknown; except?: unknown }): {
  t: LoadedTemplate;
  builds: ReturnType<typeof selectBuilds>;
} {
  const only = namesOf(argv.only as string | string[] | undefined);
  const except = namesOf(argv.except as string | string[] | undefined);
  const t = load(argv as unknown as Common, only, except);
  return { t, builds: selectBuilds(t, only, except) };
}

function reportError(e: unknown): number {
  if (e instanceof TemplateError || e instanceof VariableError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 1;
  }
  process.stderr.write(`error: ${(e as Error).message ?? String(e)}\n`);
  return 1;
}

/**
 * Questions on the terminal. readline reads in raw mode, so Ctrl-C at a prompt is not a signal: it is
 * passed on as one, and an interrupted build's open prompt closes (answering "") so kiln can exit.
 */
function terminalPrompt(signal: AbortSignal): ((q: string) => Promise<string>) | undefined {
  if (!process.stdin.isTTY) return undefined;
  return (question) =>
    new Promise((resolve) => {
      const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
      const done = (answer: string) => {
        signal.removeEventListener('abort', onAbort);
        rl.close();
        resolve(answer);
      };
      const onAbort = () => {
        process.stderr.write('\n');
        done('');
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      rl.on('SIGINT', () => {
        process.kill(process.pid, 'SIGINT');
      });
      rl.question(question, done);
    });
}

/**
 * What a kiln that was killed (SIGKILL, power loss) left in the temp directory and beside output
 * directories, removed before building: their owner is gone. The CLI's job, not the library's.
 */
function sweepLeftovers(build: string, render: EventSink, secrets: readonly string[]): void {
  for (const { path: leftover, kind } of removeStaleWorkDirs()) {
    const what =
      kind === 'staging directory'
        ? 'a partial output left'
        : kind === 'output claim'
          ? 'the claim on an output directory left'
          : 'left';
    render({
      type: 'log',
      build,
      level: 'warn',
      message: maskSecrets(`removed ${leftover}, ${what} by a kiln process that no longer exists`, secrets),
      time: new Date().toISOString(),
    });
  }
}

async function buildCommand(
  argv: Common & {
    force: boolean;
    only?: string | string[];
    except?: string | string[];
    'on-error': OnError;
    'parallel-builds': number;
    debug: boolean;
    timestamps: boolean;
    events?: string;
    progress: ProgressMode;
    cache: boolean;
  } & AirgapBuildArgs &
    SlurmArgs &
    RemoteCacheArgs,
): Promise<number> {
  // --record / --bundle / --offline (src/cli/bundle.ts): a bundle is verified, unpacked and its template loaded before anything else.
  const airgap = await prepareAirgap(argv, cacheDirFromEnv());
  if (!airgap?.template && !argv.template) throw new Error('give a template file to build (or --bundle FILE)');
  const t = airgap?.template ?? load(argv, namesOf(argv.only), namesOf(argv.except));
  const builds = selectBuilds(t, namesOf(argv.only), namesOf(argv.except));
  const sinks: EventSink[] = [];
  if (argv.events === 'json') sinks.push(jsonRenderer(process.stdout));
  sinks.push(humanRenderer({ timestamps: argv.timestamps, debug: argv.debug, progress: argv.progress }));
  const render: EventSink = (e) => {
    for (const sink of sinks) sink(e);
  };
  if (argv.on === 'slurm' || argv.emit !== undefined) return await slurmBuild(argv, t, builds, render);
  sweepLeftovers(builds[0]?.name ?? 'kiln', render, t.variables.secrets);

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
    const prompt = terminalPrompt(controller.signal);
    if (argv['on-error'] === 'ask' && !prompt)
      process.stderr.write('kiln: --on-error=ask needs a terminal; using cleanup\n');
    const results = await build(t, {
      only: namesOf(argv.only),
      except: namesOf(argv.except),
      force: argv.force,
      onError: argv['on-error'] === 'ask' && !prompt ? 'cleanup' : argv['on-error'],
      debug: argv.debug,
      cacheDir: cacheDirFromEnv(),
      noCache: !argv.cache,
      prompt,
      remoteCache: argv.cache ? await openRemoteCache(argv) : undefined,
      qemu: qemuOptionsFromEnv(),
      tarBinary: tarBinaryFromEnv(),
      parallel: argv['parallel-builds'],
      onEvent: render,
      signal: controller.signal,
      ...airgap?.options,
      keptBuildRelease: [
        `  kiln waits with the VM. To stop it: Ctrl-C here, or kill ${process.pid} (the guest powering off does too);`,
        '  kiln then stops the VM, removes the work dir and exits 1.',
      ],
    });
    const failed = results.filter((r) => !r.ok);
    // Ctrl-C is also how a user lets go of a build kept by --on-error=abort: that build had failed already.
    const onlyReleased = failed.length > 0 && failed.every((r) => r.kept);
    if (interrupted && !onlyReleased) return interrupted === 'SIGINT' ? 130 : 143;
    if (builds.length > 1) process.stderr.write(summaryLine(results.map((r) => ({ build: r.build, ok: r.ok }))));
    return failed.length ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The builds as Slurm jobs (src/cli/slurm.ts): Ctrl-C or SIGTERM cancels them, and kiln follows them until they are gone. */
async function slurmBuild(
  argv: SlurmArgs,
  t: LoadedTemplate,
  builds: ReturnType<typeof selectBuilds>,
  render: EventSink,
): Promise<number> {
  const emit = argv.emit === undefined ? undefined : listOf(argv.emit as string | string[]);
  if (emit && (emit[0] !== 'slurm' || !emit[1]))
    throw new KilnError(`--emit ${emit.join(' ')}: kiln build writes "--emit slurm DIR" (a Slurm run directory)`, {
      fix: `kiln build --emit slurm ./run TEMPLATE (kiln plan --emit github-matrix|gitlab-matrix writes CI matrices)`,
    });
  const controller = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(sig === 'SIGINT' ? 130 : 143);
    interrupted = sig;
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const code = await slurmCommand({ ...argv, emit: emit?.[1] }, t, builds, { render, signal: controller.signal });
    return interrupted ? (interrupted === 'SIGINT' ? 130 : 143) : code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export async function main(args: string[]): Promise<number> {
  let code = 0;
  const withTemplate = (y: ReturnType<typeof yargs>) =>
    y
      .positional('template', { type: 'string', describe: 'template file (YAML or JSON)', demandOption: true })
      // Not array options: an array option would swallow the template after it (--var x=y template.yaml).
      .option('var', {
        type: 'string',
        requiresArg: true,
        describe: 'set a variable: name=value (repeatable; -var works too)',
      })
      .option('var-file', {
        type: 'string',
        requiresArg: true,
        describe: 'YAML/JSON (or Packer .pkrvars.hcl) file of variable values (repeatable)',
      });
  const parser = yargs(normalizePackerFlags(args))
    .scriptName('kiln')
    .usage('kiln — build VM images with QEMU\n\nUsage: $0 <command> [options]')
    .command(
      'build [template]',
      'build the images a template describes',
      (y) =>
        withTemplate(y as never)
          .positional('template', {
            type: 'string',
            demandOption: false,
            describe: 'template file (YAML or JSON); not with --bundle',
          })
          .option('record', {
            type: 'boolean',
            default: false,
            describe:
              "air-gapped builds: the guest downloads through kiln's proxy, which keeps every file for kiln bundle",
          })
          .option('bundle', {
            type: 'string',
            requiresArg: true,
            describe:
              "build from a bundle (kiln bundle): verified, unpacked into the cache; the guest's downloads come from its recording",
          })
          .option('offline', {
            type: 'boolean',
            default: false,
            describe:
              'the guest reaches nothing but kiln (QEMU restrict=on); a download not in the bundle fails the build at once',
          })
          .option('recording', {
            type: 'string',
            requiresArg: true,
            describe: 'with --record: the recording directory (default: in the cache, per template)',
          })
          .option('sha256', {
            type: 'string',
            requiresArg: true,
            describe:
              "with --bundle: the bundle's SHA-256 as kiln bundle printed it; a different bundle is refused before anything in it is read",
          })
          .option('force', { type: 'boolean', default: false, describe: 'replace existing output directories' })
          .options(
            buildSelection(
              'run only these builds (repeatable, or comma-separated as in Packer)',
              'skip these builds (repeatable, or comma-separated)',
            ),
          )
          .option('on-error', {
            choices: ['cleanup', 'abort', 'ask'] as const,
            default: 'cleanup' as OnError,
            describe:
              'on failure: clean up, keep the VM running to inspect it (abort; kiln waits until Ctrl-C), or ask (retry, clean up, abort)',
          })
          .option('cache', {
            type: 'boolean',
            default: true,
            describe: 'use and fill the build cache; --no-cache neither reads nor writes it',
          })
          .options(remoteCacheOptions)
          .option('parallel-builds', { type: 'number', default: 1, describe: 'how many builds run at once' })
          .option('debug', {
            type: 'boolean',
            default: false,
            describe: 'verbose logs; pause between steps on a terminal',
          })
          .option('timestamps', { type: 'boolean', default: false, describe: 'prefix log lines with the time' })
          .option('events', { choices: ['json'] as const, describe: 'write a JSON-lines event stream to stdout' })
          .option('progress', {
            choices: ['auto', 'always', 'never'] as const,
            default: 'auto' as ProgressMode,
            describe: 'progress bars: on a terminal (auto), always, or never',
          })
          .option('on', {
            choices: ['slurm'] as const,
            describe:
              "run the builds as a Slurm array job (one task per build), follow it and exit with the worst task's code",
          })
          .option('emit', {
            type: 'string',
            nargs: 2,
            describe:
              'slurm DIR: only write the Slurm run directory DIR (plan.json, job.sbatch, submit.sh); submit nothing',
          })
          .option('slurm-dir', {
            type: 'string',
            requiresArg: true,
            describe:
              'the Slurm run directory, on a file system every node sees at the same path (default: ./kiln-slurm-<time>)',
          })
          .option('slurm-throttle', {
            type: 'number',
            default: 4,
            describe: "at most this many Slurm tasks at once (the array's %N)",
          })
          .option('slurm-singleton', {
            type: 'boolean',
            default: false,
            describe:
              'one job per shared key prefix with --dependency=singleton: a key is built once, whoever submits it',
          })
          .option('slurm-node-env', {
            type: 'string',
            requiresArg: true,
            default: '/etc/kiln/node.env',
            describe:
              "node-local VAR=value file each task reads (cache dir, AWS_ENDPOINT_URL, AWS_SHARED_CREDENTIALS_FILE); {node} is the node's name",
          })
          .option('sbatch-arg', {
            type: 'string',
            requiresArg: true,
            describe: 'an extra sbatch option for every submission, e.g. --sbatch-arg=--partition=build (repeatable)',
          }),
      async (argv) => {
        code = await buildCommand(argv as never).catch(reportError);
      },
    )
    .command(
      'plan <template>',
      'show what each build would reuse from the cache and what it would build, without booting',
      (y) =>
        withTemplate(y as never)
          .option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' })
          .option('emit', {
            choices: ['github-matrix', 'gitlab-matrix'] as const,
            describe: 'print a CI matrix: one job per build (GitHub Actions JSON, or a GitLab child pipeline)',
          })
          .options(remoteCacheOptions)
          .options(
            buildSelection('plan only these builds (repeatable, or comma-separated)', 'plan all builds but these'),
          ),
      async (argv) => {
        try {
          const { t, builds } = loadSelected(argv);
          // With --cache-remote, the remote cache is asked about the keys the local store lacks.
          const remote = await openRemoteCache(argv as RemoteCacheArgs, (m, level) => {
            if (level === 'warn') process.stderr.write(`warning: ${m}\n`);
          });
          process.stdout.write(
            await planCommand(t, builds, String(argv.template), {
              json: Boolean(argv.json),
              emit: argv.emit,
              cacheRemote: (argv as RemoteCacheArgs)['cache-remote'],
              remoteIntermediate: (argv as RemoteCacheArgs)['cache-remote-intermediate'] === true,
              remote,
            }),
          );
        } catch (e) {
          code = reportError(e);
        }
      },
    )
    .command(
      'bundle <template>',
      "write one tar holding a build's template, every input, its recorded downloads (kiln build --record) and optionally kiln",
      (y) =>
        withTemplate(y as never)
          .option('output', {
            alias: 'o',
            type: 'string',
            requiresArg: true,
            demandOption: true,
            describe: 'the bundle to write (e.g. site.kiln.tar)',
          })
          .option('with-kiln', {
            type: 'boolean',
            default: false,
            describe:
              'add kiln.tgz: kiln and its dependencies, installable with npm install -g ./kiln.tgz and no network',
          })
          .option('recording', {
            type: 'string',
            requiresArg: true,
            describe: "the recording to carry (default: the template's, in the cache)",
          })
          .option('allow-expired', {
            type: 'boolean',
            default: false,
            describe:
              'bundle a recording past its apt mirror\'s Valid-Until (only for guests set to Acquire::Check-Valid-Until "false")',
          })
          .option('force', { type: 'boolean', default: false, describe: 'replace an existing bundle' }),
      async (argv) => {
        code = await bundleCommand(argv as unknown as BundleArgs).catch(reportError);
      },
    )
    .command(
      'validate <template>',
      'check a template and report every problem',
      (y) =>
        withTemplate(y as never).options(
          buildSelection(
            "check only these builds (a Packer template's other builders are then not refused)",
            'check all builds but these (repeatable, or comma-separated)',
          ),
        ),
      (argv) => {
        try {
          // The builds as build selects them: a name or glob that matches none fails here too.
          const { builds } = loadSelected(argv);
          process.stdout.write(
            `${argv.template}: valid (${builds.length} build${builds.length === 1 ? '' : 's'}: ${builds.map((b) => b.name).join(', ')})\n`,
          );
        } catch (e) {
          code = reportError(e);
        }
      },
    )
    .command(
      'inspect <template>',
      'show what a build will do, variables resolved (sensitive ones masked)',
      (y) =>
        withTemplate(y as never)
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
          .options(
            buildSelection(
              "the builds to show (a Packer template's other builders are then not refused)",
              'show all builds but these',
            ),
          ),
      (argv) => {
        try {
          const { t, builds } = loadSelected(argv);
          process.stdout.write(inspectTemplate({ ...t, template: { ...t.template, builds } }, Boolean(argv.json)));
        } catch (e) {
          code = reportError(e);
        }
      },
    )
    .command(
      'schema',
      'print the template JSON Schema (for editors), or with --markdown the template reference',
      (y) =>
        y.option('markdown', {
          type: 'boolean',
          default: false,
          describe: 'print the template reference (docs/template-reference.md) instead',
        }),
      (argv) => {
        process.stdout.write(schemaText(Boolean(argv.markdown)));
      },
    )
    .command(
      'import <template>',
      'write a Packer template (HCL or legacy JSON) as the equivalent kiln YAML',
      (y) =>
        withTemplate(y as never)
          .option('output', {
            alias: 'o',
            type: 'string',
            requiresArg: true,
            describe: 'the YAML file to write (default: print it)',
          })
          .option('force', { type: 'boolean', default: false, describe: 'replace an existing output file' })
          .options(
            buildSelection(
              "the builds to import (Packer's globs over full build names; repeatable, or comma-separated)",
              'the builds to leave out (globs, as -only)',
            ),
          ),
      (argv) => {
        try {
          const a = argv as unknown as Common & {
            output?: string;
            force: boolean;
            only?: string | string[];
            except?: string | string[];
          };
          const r = importTemplate({
            template: a.template,
            output: a.output,
            force: a.force,
            only: namesOf(a.only),
            except: namesOf(a.except),
            inputs: { vars: listOf(a.var), varFiles: listOf(a['var-file']), env: process.env },
          });
          for (const note of r.notes) process.stderr.write(`warning: ${note}\n`);
          if (r.written) process.stderr.write(`wrote ${r.written}\n`);
          else process.stdout.write(r.yaml);
        } catch (e) {
          code = reportError(e);
        }
      },
    )
    .command(
      'verify <manifest>',
      're-check the artifacts a manifest.json lists (sizes, digests, qemu-img check), its SBOMs and provenance, and with --trusted-keys its signatures',
      (y) =>
        y
          .positional('manifest', {
            type: 'string',
            demandOption: true,
            describe: 'a manifest.json written by kiln build',
          })
          .option('trusted-keys', {
            type: 'string',
            describe: "an allowed_signers file: the build's signatures must be by a key it lists",
          }),
      async (argv) => {
        try {
          const results = await verify(String(argv.manifest), {
            qemu: qemuOptionsFromEnv(),
            trustedKeys: argv['trusted-keys'],
          });
          for (const r of results)
            process.stdout.write(
              `${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.problems.length ? `: ${r.problems.join('; ')}` : ''}\n`,
            );
          code = results.every((r) => r.ok) ? 0 : 1;
        } catch (e) {
          code = reportError(e);
        }
      },
    )
    .command(
      'publish <manifest>',
      'upload a finished build to the publish targets its manifest.json records',
      (y) =>
        y
          .positional('manifest', {
            type: 'string',
            demandOption: true,
            describe: 'a manifest.json written by kiln build',
          })
          .option('only', { type: 'string', describe: 'only these targets (names, comma-separated)' })
          .option('progress', { choices: ['auto', 'always', 'never'] as const, default: 'auto' as const })
          .option('allow-host', {
            type: 'string',
            describe:
              'send credentials to this host[:port] the manifest names (a manifest can be edited; repeat or comma-separate)',
          })
          .option('events', {
            choices: ['json'] as const,
            describe: 'write a JSON-lines event stream to stdout (as kiln build does)',
          }),
      async (argv) => {
        code = await publishCommand({
          manifest: String(argv.manifest),
          only: argv.only,
          progress: argv.progress,
          allowHost: argv['allow-host'],
          events: argv.events,
        });
      },
    )
    .command(
      'console <build>',
      'attach this terminal to the serial console of a running build (Ctrl-] detaches)',
      (y) =>
        y.positional('build', { type: 'string', demandOption: true, describe: "the build's name" }).option('pid', {
          type: 'number',
          describe: 'the kiln process running it, when several builds have that name',
        }),
      async (argv) => {
        code = await consoleCommand({ build: String(argv.build), pid: argv.pid }).catch(reportError);
      },
    )
    .command(
      'cache <action> [key]',
      'list, prune or remove build cache entries',
      (y) =>
        y
          .positional('action', {
            choices: ['ls', 'prune', 'rm', 'flush'] as const,
            demandOption: true,
            describe:
              "ls: list, prune: trim to --keep-size (or the --remote cache), rm: remove one entry, flush: bump the --remote cache's epoch",
          })
          .positional('key', { type: 'string', describe: 'the entry to remove (rm)' })
          .option('keep-size', { type: 'string', describe: 'prune: the most the cache may keep, e.g. 20G' })
          .option('remote', {
            type: 'string',
            requiresArg: true,
            describe: 'prune/flush the remote layer cache s3://bucket/prefix instead of the local one',
          })
          .option('older-than', {
            type: 'string',
            requiresArg: true,
            describe: 'prune --remote: also remove records older than this, e.g. 30d',
          })
          .option('grace', {
            type: 'string',
            requiresArg: true,
            default: '1h',
            describe:
              'prune --remote: blobs and unfinished uploads younger than this stay (a builder may be writing them)',
          })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
      async (argv) => {
        const args: CacheArgs = {
          action: argv.action as CacheArgs['action'],
          key: argv.key,
          'keep-size': argv['keep-size'],
          json: argv.json,
          remote: argv.remote,
          'older-than': argv['older-than'],
          grace: argv.grace,
        };
        code = await cacheCommand(args).catch(reportError);
      },
    )
    .demandCommand(
      1,
      'give a command: build, plan, bundle, validate, inspect, schema, import, verify, publish, console or cache',
    )
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
