/**
 * Builds a kiln template through the library API, as an outside program does: kiln installed (or
 * linked) as a dependency, `import ... from 'kiln'`, everything passed in as options.
 *
 *   npm install kiln            # or: ln -s /path/to/kiln node_modules/kiln
 *   tsc && node build-tiny.js /path/to/kiln/examples/tiny.yaml ./out [cache-dir]
 *
 * Prints one line per step and a JSON summary (the build's result and `verify`'s answer) last; exits
 * 0 when the build and the verification succeeded. Ctrl-C aborts the build through its AbortSignal.
 */
import path from 'node:path';
import { build, loadTemplate, verify, type BuildEvent } from 'kiln';

const [templateFile, outputArg, cacheDir] = process.argv.slice(2);
if (!templateFile || !outputArg) {
  process.stderr.write('usage: node build-tiny.js <template.yaml> <output directory> [cache directory]\n');
  process.exit(2);
}
const outputDirectory = path.resolve(outputArg);

// The template's variables, as `kiln build --var` would set them: tiny.yaml builds into
// ${var.output_directory}.
const template = loadTemplate(templateFile, {
  vars: [`output_directory=${outputDirectory}`, 'marker=built-through-the-api'],
}, { cacheDir });

// The program owns the signals: Ctrl-C aborts the build, whose cleanups then run.
const controller = new AbortController();
process.once('SIGINT', () => controller.abort(new Error('interrupted')));

const onEvent = (e: BuildEvent & { time: string }): void => {
  if (e.type === 'step-end') process.stderr.write(`${e.build}: ${e.step} (${Math.round(e.ms)} ms)\n`);
  else if (e.type === 'step-error') process.stderr.write(`${e.build}: ${e.step} failed: ${e.error}\n`);
  else if (e.type === 'log' && e.level !== 'debug') process.stderr.write(`${e.build}: ${e.message}\n`);
};

const [result] = await build(template, { cacheDir, onEvent, signal: controller.signal });
if (!result?.ok) {
  process.stderr.write(`build failed${result?.failedStep ? ` at "${result.failedStep}"` : ''}: ${result?.error?.message ?? 'no build ran'}\n`);
  process.exit(1);
}
const checks = await verify(path.join(outputDirectory, 'manifest.json'));
process.stdout.write(JSON.stringify({
  build: result.build,
  outputDirectory: result.outputDirectory,
  artifacts: result.artifacts.map((a) => ({ name: a.name, path: a.path, format: a.format, size: a.size, sha256: a.sha256 })),
  verified: checks,
}) + '\n');
process.exit(checks.every((c) => c.ok) ? 0 : 1);
