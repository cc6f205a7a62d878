// Many tiny builds: 4 at once in one kiln, then 8 back to back in one long-lived process, checking
// every artifact and that nothing accumulates: no QEMU, no work or staging directory, no unfinished
// cache file, no listening socket, no growing set of file descriptors or libuv handles.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot, tinySourceYaml } from '../helpers/guest.js';
import { kiln, spawnKiln } from '../helpers/kiln.js';
import {
  kilnWorkDirs,
  listeningSocketsOf,
  processesMentioning,
  stagingDirsBeside,
  unfinishedCacheFiles,
} from '../helpers/process-audit.js';

// Not "kiln-...": kiln's sweep of stale work directories only looks at its own kiln-* names.
const root = mkdtempSync(path.join(os.tmpdir(), 'e2e-stress-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
// A TMPDIR of our own: every kiln work directory and QEMU of this file lives under it, so what is
// left is ours to count, whatever else runs on the machine.
const tmp = path.join(root, 'tmp');
const cache = path.join(root, 'cache');
mkdirSync(tmp);
mkdirSync(cache);
const env = { TMPDIR: tmp, KILN_CACHE_DIR: cache };

type Event = Record<string, unknown>;

/** A port a build logged: "ssh on 127.0.0.1:PORT" (QEMU's forward) or "http server on 127.0.0.1:PORT". */
function portsOf(events: Event[], build: string): { ssh: number[]; http: number[] } {
  const logs = events.filter((e) => e.type === 'log' && e.build === build).map((e) => String(e.message));
  const grab = (re: RegExp) =>
    logs.flatMap((m) => {
      const x = re.exec(m);
      return x ? [Number(x[1])] : [];
    });
  return { ssh: grab(/ssh on 127\.0\.0\.1:(\d+)/), http: grab(/^http server on 127\.0\.0\.1:(\d+)/) };
}

/** Checks one finished output directory: exactly its files, checksums, manifest, qemu-img check, kiln verify. */
async function expectGoodOutput(dir: string, build: string): Promise<string> {
  const artifact = `${build}.qcow2`;
  expect(readdirSync(dir).sort(), dir).toEqual(
    [
      'SHA256SUMS',
      artifact,
      'manifest.json',
      `${build}.spdx.json`,
      `${build}.cdx.json`,
      `${build}.provenance.json`,
    ].sort(),
  );
  const sums = await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, reject: false });
  expect(sums.exitCode, `${dir}: ${sums.stdout}${sums.stderr}`).toBe(0);
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  expect(manifest.build).toBe(build);
  expect(manifest.artifacts).toHaveLength(1);
  expect(manifest.artifacts[0]).toMatchObject({ name: artifact, path: path.join(dir, artifact), format: 'qcow2' });
  expect(readFileSync(path.join(dir, 'SHA256SUMS'), 'utf8')).toContain(manifest.artifacts[0].sha256);
  const check = await execa('qemu-img', ['check', path.join(dir, artifact)], { reject: false });
  expect(check.exitCode, `${dir}: ${check.stdout}${check.stderr}`).toBe(0);
  const verify = await kiln(['verify', path.join(dir, 'manifest.json')], env);
  expect(verify.exitCode, `${dir}: ${verify.stdout}${verify.stderr}`).toBe(0);
  return manifest.artifacts[0].sha256 as string;
}

function expectNothingLeft(outputDirs: string[]): void {
  expect(processesMentioning(tmp), 'QEMU or qemu-img processes left').toEqual([]);
  expect(kilnWorkDirs(tmp), 'work directories left').toEqual([]);
  expect(outputDirs.flatMap(stagingDirsBeside), 'staging directories left').toEqual([]);
  expect(unfinishedCacheFiles(cache), 'unfinished files in the cache directory').toEqual([]);
}

/**
 * Calls the CLI's main() for `kiln build TEMPLATE --var n=I`, RUNS times in one process (the one
 * bin/kiln.js would be), reporting after each run its exit code, open descriptors, libuv handles and
 * signal listeners; then waits for a line on stdin so the test can look around while nothing runs.
 * Separate processes would hide a descriptor or handle that one build leaks.
 */
const driverSource = `
import { main } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist/cli/main.js')).href)};
import { readdirSync, readlinkSync } from 'node:fs';
import readline from 'node:readline';
const [template, runs] = process.argv.slice(1);
const acks = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const descriptors = () => readdirSync('/proc/self/fd').flatMap((fd) => { try { return [fd + ' -> ' + readlinkSync('/proc/self/fd/' + fd)]; } catch { return []; } });
const handles = () => process.getActiveResourcesInfo().sort().join();
// A child that has just exited may still hold a pipe for a moment: sample until the handles stay the
// same for 0.5 s (at most 5 s), so what is compared is what stays, not what is closing.
const settle = async () => {
  let last = handles(); let stableSince = performance.now(); const deadline = performance.now() + 5000;
  while (performance.now() - stableSince < 500 && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    const now = handles();
    if (now !== last) { last = now; stableSince = performance.now(); }
  }
};
const report = async (o) => { await settle(); process.stdout.write(JSON.stringify({ type: 'driver', ...o, descriptors: descriptors(),
  handles: process.getActiveResourcesInfo().sort(), signalListeners: process.listenerCount('SIGINT') + process.listenerCount('SIGTERM') }) + '\\n'); };
for (let i = 1; i <= Number(runs); i++) {
  const started = performance.now();
  const exitCode = await main(['build', template, '--events=json', '--var', 'n=' + i]);
  await report({ run: i, exitCode, ms: performance.now() - started });
  await acks.next();
}
process.stdin.destroy();
`;

describe('stress: many tiny builds', () => {
  it('4 builds at once (--parallel-builds 4): distinct ports, work and output directories; good artifacts; nothing left', async () => {
    const started = performance.now();
    const names = ['par-a', 'par-b', 'par-c', 'par-d'];
    const outputOf = (n: string) => path.join(root, 'par', n);
    const file = path.join(root, 'par.yaml');
    writeFileSync(
      file,
      `builds:\n${names
        .map(
          (n) => `
  - name: ${n}
    output_directory: ${outputOf(n)}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo ${n} > /root/name']
    outputs:
      - format: qcow2
`,
        )
        .join('')}`,
    );
    const run = await spawnKiln(['build', file, '--parallel-builds', '4', '--events=json'], { env }).done;
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    expect(run.stderr).toContain('4 of 4 builds succeeded');

    // All four were running at once: every build started before the first one ended.
    const firstEnd = run.events.findIndex((e) => e.type === 'build-end');
    expect(
      run.events
        .slice(0, firstEnd)
        .filter((e) => e.type === 'build-start')
        .map((e) => e.build)
        .sort(),
    ).toEqual(names);

    // No collisions: each build had its own SSH forward, HTTP server and work directory.
    const ports = names.map((n) => portsOf(run.events, n));
    for (const [i, p] of ports.entries()) {
      expect(p.ssh, names[i]).toHaveLength(1);
      expect(p.http, names[i]).toHaveLength(1);
    }
    const all = ports.flatMap((p) => [...p.ssh, ...p.http]);
    expect(new Set(all).size, `ports: ${JSON.stringify(ports)}`).toBe(all.length);
    const workDirsSeen = names.map((n) => {
      const qemuLine = run.events.find(
        (e) => e.type === 'log' && e.build === n && String(e.message).startsWith('qemu: '),
      );
      return [...new Set([...String(qemuLine?.message).matchAll(/\/(kiln-[^/ ,]+)\//g)].map((m) => m[1]!))];
    });
    for (const [i, dirs] of workDirsSeen.entries()) {
      expect(dirs, `${names[i]}'s QEMU uses exactly its own work directory`).toHaveLength(1);
      expect(dirs[0]!.startsWith(`kiln-${names[i]}-`)).toBe(true);
    }

    // Separate, complete outputs; four different images (each provisioner wrote its own name).
    const digests = await Promise.all(names.map((n) => expectGoodOutput(outputOf(n), n)));
    expect(new Set(digests).size).toBe(4);
    expectNothingLeft(names.map(outputOf));
    console.log(`stress: 4 parallel tiny builds took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 600_000);

  it('8 builds back to back in one kiln process: every artifact good; no process, directory, socket, descriptor or handle accumulates', async () => {
    // Enough runs for a per-build leak to show as growth between the first and the last report.
    const runs = 8;
    const started = performance.now();
    const file = path.join(root, 'seq.yaml');
    const outputOf = (i: number) => path.join(root, 'seq', `run-${i}`);
    writeFileSync(
      file,
      `
variables:
  n: { default: 0 }
builds:
  - name: seq
    output_directory: ${path.join(root, 'seq', 'run-${var.n}')}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo \${var.n} > /root/run']
    outputs:
      - format: qcow2
`,
    );
    // Reports arrive as events; each is handled while the driver waits, then acknowledged.
    const reports: Event[] = [];
    const waiting: ((e: Event) => void)[] = [];
    const driver = spawnKiln([file, String(runs)], {
      env,
      script: driverSource,
      timeoutMs: 1_200_000,
      onEvent: (e) => {
        if (e.type !== 'driver') return;
        const w = waiting.shift();
        if (w) w(e);
        else reports.push(e);
      },
    });
    const nextReport = () =>
      Promise.race([
        reports.length ? Promise.resolve(reports.shift()!) : new Promise<Event>((resolve) => waiting.push(resolve)),
        driver.done.then((d) => {
          throw new Error(`the driver exited (${d.exitCode}) before reporting:\n${d.stderr.slice(-3000)}`);
        }),
      ]);

    const reported: Event[] = [];
    const outputChecks: Promise<string>[] = [];
    for (let i = 1; i <= runs; i++) {
      const r = await nextReport();
      reported.push(r);
      expect(r.run).toBe(i);
      expect(r.exitCode, `run ${i}`).toBe(0);
      // Looked at while nothing runs: the run left no process, directory or socket behind.
      expectNothingLeft([outputOf(i)]);
      expect(await listeningSocketsOf(driver.pid), `run ${i}: sockets still listening in the kiln process`).toEqual([]);
      expect(r.signalListeners, `run ${i}: signal handlers left installed`).toBe(0);
      // The artifact checks read files only: they may overlap the next build.
      const outputCheck = expectGoodOutput(outputOf(i), 'seq');
      outputCheck.catch(() => undefined); // reported by the Promise.all below, not as unhandled
      outputChecks.push(outputCheck);
      driver.send('next');
    }
    const end = await driver.done;
    expect(end.exitCode, end.stderr.slice(-3000)).toBe(0);
    expect(new Set(await Promise.all(outputChecks)).size, 'every run wrote its own image').toBe(runs);

    // The first run may set up things that stay for good (module state, the accelerator answer);
    // after that, nothing may grow from one build to the next.
    const first = reported[0]!;
    const last = reported.at(-1)!;
    const firstFds = first.descriptors as string[];
    const lastFds = last.descriptors as string[];
    expect(
      lastFds.length,
      `descriptors after run 1:\n${firstFds.join('\n')}\nafter run ${runs}:\n${lastFds.join('\n')}`,
    ).toBeLessThanOrEqual(firstFds.length);
    // Handles per type (child pipes close lazily, so counts may also shrink): none may grow.
    const countByType = (handles: unknown) =>
      (handles as string[]).reduce<Record<string, number>>((m, h) => ({ ...m, [h]: (m[h] ?? 0) + 1 }), {});
    const firstHandles = countByType(first.handles);
    const grown = Object.entries(countByType(last.handles)).filter(([type, n]) => n > (firstHandles[type] ?? 0));
    expect(
      grown,
      `libuv handles after run 1: ${JSON.stringify(first.handles)}, after run ${runs}: ${JSON.stringify(last.handles)}`,
    ).toEqual([]);
    expect(processesMentioning(root)).toEqual([]);
    const per = reported.map((r) => Number(r.ms) / 1000);
    console.log(
      `stress: ${runs} sequential tiny builds took ${((performance.now() - started) / 1000).toFixed(1)} s ` +
        `(per build min ${Math.min(...per).toFixed(1)} s, max ${Math.max(...per).toFixed(1)} s); descriptors ${firstFds.length} -> ${lastFds.length}`,
    );
  }, 1_200_000);
});
