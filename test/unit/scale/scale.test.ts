// kiln plan's shape, the CI matrices and the Slurm job script (src/scale/): pure functions, plus one
// run of the compiled CLI for `kiln plan --json` and `--emit slurm` on a template with two builds.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkPlan, groupBuilds, PLAN_SCHEMA, type BuildPlan, type KilnPlan } from '../../../src/scale/plan-shape.js';
import { githubMatrix, gitlabMatrix } from '../../../src/scale/matrix.js';
import { jobScript, submissions, type SlurmJobOptions } from '../../../src/scale/sbatch.js';
import { followRun, LineTail, parseEventLine, summaryLine, worstCode } from '../../../src/scale/follow.js';
import { kiln } from '../../helpers/kiln.js';
import { taskBuildArgs, type SlurmArgs } from '../../../src/cli/slurm.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

/** A fresh folder in the system temp dir, removed after the file's tests. */
const tempDir = tempDirMaker();

const k = (c: string) => c.repeat(64);
function build(name: string, root: string, keys: (string | null)[], over: Partial<BuildPlan> = {}): BuildPlan {
  return {
    name,
    output_directory: `/out/${name}`,
    root_key: root,
    layers: keys.map((key, index) => ({ index, description: `shell ${index}`, key, local: false, remote: null })),
    final_key: null,
    final_cached: { local: false, remote: null },
    artifact_key: null,
    resume: 'fresh',
    resume_at: 0,
    resume_source: null,
    up_to_date: false,
    notes: [],
    ...over,
  };
}
function plan(builds: BuildPlan[], cacheRemote: string | null = null): KilnPlan {
  return {
    schema: PLAN_SCHEMA,
    template: '/t/site.yaml',
    cache_remote: cacheRemote,
    builds,
    groups: groupBuilds(builds),
  };
}

describe('plan shape', () => {
  it('groups builds by their shared key prefix; every build in exactly one group', () => {
    const builds = [
      build('web', k('a'), [k('b'), k('c')]),
      build('db', k('a'), [k('b'), k('d')]),
      build('lone', k('e'), [k('f')]),
      build('same', k('a'), [k('b'), null]),
    ];
    expect(groupBuilds(builds)).toEqual([
      { key: k('b'), shared: 2, builds: ['web', 'db', 'same'] },
      { key: k('f'), shared: 2, builds: ['lone'] },
    ]);
    expect(groupBuilds([build('x', null as never, [], { unknown: 'base not downloaded' })])).toEqual([
      { key: null, shared: 0, builds: ['x'] },
    ]);
  });

  it("checkPlan accepts kiln's plans and names the field of a wrong one", () => {
    const good = plan([build('web', k('a'), [k('b')], { resume: 'resume', resume_at: 1, resume_source: 'remote' })]);
    expect(checkPlan(JSON.parse(JSON.stringify(good)))).toEqual([]);
    const bad = JSON.parse(JSON.stringify(good));
    bad.schema = 2;
    bad.builds[0].resume_at = 5;
    bad.builds[0].layers[0].key = 'not-hex';
    bad.builds[0].resume = 'later';
    bad.groups[0].builds.push('ghost');
    const problems = checkPlan(bad);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^schema: must be 1/),
        expect.stringMatching(/^builds\[0\]\.resume_at: must be an integer from 0 to 1/),
        expect.stringMatching(/^builds\[0\]\.layers\[0\]\.key: must be a hex key/),
        expect.stringMatching(/^builds\[0\]\.resume: must be/),
        expect.stringMatching(/^groups\[0\]\.builds: "ghost" is not a build/),
      ]),
    );
    expect(checkPlan([])).toEqual(['(top level): must be an object']);
    // --cache-remote-intermediate is recorded only beside a remote cache.
    expect(
      checkPlan({ ...JSON.parse(JSON.stringify(good)), cache_remote: 's3://c/k', cache_remote_intermediate: true }),
    ).toEqual([]);
    expect(checkPlan({ ...JSON.parse(JSON.stringify(good)), cache_remote_intermediate: true })).toEqual([
      'cache_remote_intermediate: must be true, with cache_remote set, or absent',
    ]);
  });
});

describe('CI matrices', () => {
  const p = plan(
    [build('web', k('a'), [k('b')]), build('db it', k('a'), [k('b')], { up_to_date: true })],
    's3://cache/kiln',
  );
  it('GitHub: one include row per build, on one line, with its group', () => {
    const text = githubMatrix(p);
    expect(text.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(text)).toEqual({
      include: [
        { build: 'web', group: `kiln-${'b'.repeat(16)}`, up_to_date: false },
        { build: 'db it', group: `kiln-${'b'.repeat(16)}`, up_to_date: true },
      ],
    });
  });
  it('GitLab: a parallel:matrix job whose script runs kiln build --only for each build', () => {
    const text = gitlabMatrix(p, 'site.yaml');
    expect(text).toContain('kiln-build:\n  parallel:\n    matrix:\n');
    expect(text).toContain('      - KILN_BUILD: "db it"\n');
    expect(text).toContain(`        KILN_GROUP: "kiln-${'b'.repeat(16)}"\n`);
    expect(text).toContain(`    - "kiln build --only \\"$KILN_BUILD\\" --cache-remote s3://cache/kiln site.yaml"\n`);
    // A plan made with --cache-remote-intermediate: each job pulls the intermediate layers too.
    expect(gitlabMatrix({ ...p, cache_remote_intermediate: true }, 'site.yaml')).toContain(
      `--cache-remote s3://cache/kiln --cache-remote-intermediate site.yaml"\n`,
    );
  });
});

describe('Slurm job script', () => {
  const p = plan([build('web', k('a'), [k('b')]), build("o'brien", k('c'), [k('d')])], 's3://cache/kiln');
  const o: SlurmJobOptions = {
    runDir: '/shared/run',
    template: '/shared/site.yaml',
    cwd: '/shared',
    node: '/usr/bin/node',
    kiln: '/opt/kiln/bin/kiln.js',
    throttle: 2,
    env: { PATH: '/usr/bin:/bin', KILN_CACHE_DIR: '/var/cache/kiln' },
    nodeEnv: '/etc/kiln/{node}.env',
    buildArgs: ['--cache-remote', 's3://cache/kiln', '--var-file', '/shared/site vars.yaml'],
  };
  const script = jobScript(p, o);

  it('is an array over the builds with a throttle, no exported environment, and per-task files in the run directory', () => {
    expect(script).toMatch(/^#!\/bin\/sh\n/);
    expect(script).toContain('#SBATCH --array=0-1%2\n');
    expect(script).toContain('#SBATCH --export=NONE\n');
    expect(script).toContain('#SBATCH --output=/shared/run/tasks/%a.events.jsonl\n');
    expect(script).toContain("  1) build='o'\\''brien' ;;\n");
    expect(script).toContain(
      '/usr/bin/node /opt/kiln/bin/kiln.js build --only "$build" --cache-remote s3://cache/kiln --var-file \'/shared/site vars.yaml\' --events=json --progress=never /shared/site.yaml\n',
    );
    expect(script).toContain('node_env=/etc/kiln/"$SLURMD_NODENAME".env\n');
    expect(script).toContain('echo "$rc" > /shared/run/tasks/"$SLURM_ARRAY_TASK_ID".rc\n');
    // Only the explicit list is exported (sorted), nothing else.
    expect(script.split('\n').filter((l) => l.startsWith('export '))).toEqual([
      'export KILN_CACHE_DIR=/var/cache/kiln',
      'export PATH=/usr/bin:/bin',
    ]);
  });

  it('is valid sh that runs the chosen build and records its exit code; a SIGTERM reaches kiln and its code is still recorded', () => {
    const dir = tempDir('kiln-sbatch-');
    const fakeKiln = path.join(dir, 'fake-kiln.sh');
    // Stands in for kiln: prints its argv, then exits 7 (or 143 on SIGTERM, as kiln after cleaning up).
    writeFileSync(
      fakeKiln,
      `trap 'kill $p; echo cleaned >&2; exit 143' TERM\necho "$@"\nif [ "$3" = "web" ]; then sleep 60 & p=$!; touch ${dir}/started; wait $p; fi\nexit 7\n`,
    );
    const s = jobScript(p, {
      ...o,
      runDir: dir,
      node: '/bin/sh',
      kiln: fakeKiln,
      nodeEnv: path.join(dir, '{node}.env'),
    });
    writeFileSync(path.join(dir, 'job.sbatch'), s);
    writeFileSync(path.join(dir, 'n1.env'), 'KILN_CACHE_DIR=/node/cache\n');
    execFileSync('mkdir', ['-p', path.join(dir, 'tasks')]);
    const run = (task: string) =>
      execFileSync('/bin/sh', ['-c', `sh ${dir}/job.sbatch 2>&1; echo "exit=$?"`], {
        env: { SLURM_ARRAY_TASK_ID: task, SLURMD_NODENAME: 'n1', PATH: '/usr/bin:/bin' },
        encoding: 'utf8',
      });
    expect(run('1')).toMatch(/^build --only o'brien --cache-remote .* \/shared\/site\.yaml\nexit=7\n$/);
    expect(readFileSync(path.join(dir, 'tasks/1.rc'), 'utf8')).toBe('7\n');
    // SIGTERM to the task's processes (as scancel does): kiln's code (143) is recorded once it has cleaned up.
    const out = execFileSync(
      '/bin/sh',
      [
        '-c',
        `sh ${dir}/job.sbatch 2>&1 & until [ -e ${dir}/started ]; do sleep 0.05; done; pkill -TERM -P $!; kill -TERM $!; wait $!; echo "exit=$?"`,
      ],
      { env: { SLURM_ARRAY_TASK_ID: '0', SLURMD_NODENAME: 'n1', PATH: '/usr/bin:/bin' }, encoding: 'utf8' },
    );
    expect(out).toContain('cleaned');
    expect(readFileSync(path.join(dir, 'tasks/0.rc'), 'utf8')).toBe('143\n');
    expect(run('5')).toMatch(/no build at array index 5[\s\S]*exit=2/);
  });

  it('submits one array, or with singleton one array per shared prefix, named after it', () => {
    expect(
      submissions(p, '/shared/run/job.sbatch', {
        throttle: 3,
        singleton: false,
        sbatchArgs: ['--partition=build'],
      }).map((s) => s.argv),
    ).toEqual([['sbatch', '--parsable', '--array=0-1%3', '--partition=build', '/shared/run/job.sbatch']]);
    const single = submissions(p, '/shared/run/job.sbatch', {
      throttle: 3,
      singleton: true,
      sbatchArgs: ['--dependency=afterok:41'],
    });
    expect(single.map((s) => s.argv)).toEqual([
      [
        'sbatch',
        '--parsable',
        '--array=0%1',
        `--job-name=kiln-${'b'.repeat(16)}`,
        '--dependency=singleton,afterok:41',
        '/shared/run/job.sbatch',
      ],
      [
        'sbatch',
        '--parsable',
        '--array=1%1',
        `--job-name=kiln-${'d'.repeat(16)}`,
        '--dependency=singleton,afterok:41',
        '/shared/run/job.sbatch',
      ],
    ]);
  });
});

describe('following tasks', () => {
  it('reads appended lines only once, keeps a partial line, skips what is not an event', () => {
    const f = path.join(tempDir('kiln-tail-'), 'e.jsonl');
    const tail = new LineTail(f);
    expect(tail.read()).toEqual([]);
    writeFileSync(
      f,
      '{"type":"log","build":"a","level":"info","message":"x","time":"t"}\nslurmstepd: error\n{"type":"build-',
    );
    expect(tail.read().map(parseEventLine)).toEqual([
      { type: 'log', build: 'a', level: 'info', message: 'x', time: 't' },
      undefined,
    ]);
    writeFileSync(
      f,
      '{"type":"log","build":"a","level":"info","message":"x","time":"t"}\nslurmstepd: error\n{"type":"build-end","build":"a","ok":true,"ms":1,"peakRssBytes":1,"time":"t"}\n',
    );
    expect(tail.read().map((l) => parseEventLine(l)?.type)).toEqual(['build-end']);
  });
  it("hands on each task's events and ends with their codes; a task Slurm ended without a code failed", async () => {
    const run = tempDir('kiln-follow-');
    mkdirSync(path.join(run, 'tasks'));
    writeFileSync(
      path.join(run, 'tasks/0.events.jsonl'),
      '{"type":"build-end","build":"a","ok":true,"ms":5,"peakRssBytes":1,"time":"t"}\n',
    );
    writeFileSync(path.join(run, 'tasks/0.rc'), '0\n');
    const seen: string[] = [];
    // Job 424242 is unknown to squeue (no cluster here): nothing is running, so b, without a code, is lost.
    const results = await followRun({
      runDir: run,
      builds: ['a', 'b'],
      jobIds: ['424242'],
      onEvent: (e) => seen.push(`${e.build}:${e.type}`),
      pollMs: 10,
    });
    expect(seen).toEqual(['a:build-end']);
    expect(results[0]).toEqual({ build: 'a', code: 0 });
    expect(results[1]).toMatchObject({
      build: 'b',
      code: 1,
      note: expect.stringMatching(/ended without an exit code.*tasks\/1\.log/),
    });
  });
  it('summarises as a local run and exits with the worst code', () => {
    expect(
      summaryLine([
        { build: 'a', ok: true },
        { build: 'b', ok: false },
      ]),
    ).toBe('1 of 2 builds succeeded; failed: b\n');
    expect(
      worstCode([
        { build: 'a', code: 0 },
        { build: 'b', code: 143 },
        { build: 'c', code: 1 },
      ]),
    ).toBe(143);
    expect(worstCode([{ build: 'a', code: 0 }])).toBe(0);
  });
});

describe('kiln plan and --emit slurm (the compiled CLI)', { timeout: 60_000 }, () => {
  const dir = tempDir('kiln-plan-');
  writeFileSync(path.join(dir, 'base.qcow2'), 'not really a disk');
  writeFileSync(
    path.join(dir, 't.yaml'),
    `
variables:
  token: { default: s3cr3t-token-value, sensitive: true }
builds:
  - name: a
    source: { base_image: base.qcow2, checksum: none, communicator: { username: root } }
    provisioners: [{ type: shell, inline: ['echo a'] }]
  - name: b
    source: { base_image: base.qcow2, checksum: none, communicator: { username: root } }
    provisioners: [{ type: shell, inline: ['echo b'] }, { type: shell-local, inline: ['true'] }]
`,
  );
  it('kiln plan --json prints a plan in its schema', async () => {
    const r = await kiln(['plan', '--json', path.join(dir, 't.yaml')]);
    expect(r.exitCode, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout) as KilnPlan;
    expect(checkPlan(p)).toEqual([]);
    expect(p.builds.map((b) => [b.name, b.resume, b.layers.map((l) => l.key !== null)])).toEqual([
      ['a', 'fresh', [true]],
      ['b', 'fresh', [true, false]],
    ]);
    expect(p.builds[1]!.layers[1]!.uncacheable).toMatch(/shell-local/);
  });
  it("each Slurm task's kiln build gets the remote cache flags it was submitted with", () => {
    const args = taskBuildArgs(
      {
        'slurm-node-env': '/etc/kiln/node.env',
        force: false,
        cache: true,
        'cache-remote': 's3://cache/kiln',
        'cache-remote-readonly': true,
        'cache-remote-intermediate': true,
        'cache-remote-secret-file': '/etc/kiln/s3.secret',
      } as SlurmArgs,
      { variables: { secrets: [] } } as never,
    );
    expect(args).toEqual([
      '--cache-remote',
      's3://cache/kiln',
      '--cache-remote-readonly',
      '--cache-remote-intermediate',
      '--cache-remote-secret-file',
      '/etc/kiln/s3.secret',
    ]);
  });
  it('--emit slurm DIR writes plan.json, job.sbatch and submit.sh; a sensitive --var is refused', async () => {
    const run = path.join(dir, 'run');
    const r = await kiln(['build', '--emit', 'slurm', run, '--slurm-throttle', '1', path.join(dir, 't.yaml')], {
      AWS_SECRET_ACCESS_KEY: 'never-in-a-job',
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(readdirSync(run).sort()).toEqual(['job.sbatch', 'plan.json', 'submit.sh', 'tasks']);
    expect(checkPlan(JSON.parse(readFileSync(path.join(run, 'plan.json'), 'utf8')))).toEqual([]);
    const script = readFileSync(path.join(run, 'job.sbatch'), 'utf8');
    expect(script).toContain('#SBATCH --array=0-1%1');
    expect(script).not.toContain('never-in-a-job');
    expect(r.stderr).toMatch(/AWS_SECRET_ACCESS_KEY in this environment are not passed to the Slurm jobs/);
    const again = await kiln(['build', '--emit', 'slurm', run, path.join(dir, 't.yaml')]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toMatch(/is not empty/);
    const secret = await kiln([
      'build',
      '--emit',
      'slurm',
      path.join(dir, 'run2'),
      '--var',
      'token=s3cr3t-token-value',
      path.join(dir, 't.yaml'),
    ]);
    expect(secret.exitCode).toBe(1);
    expect(secret.stderr).toMatch(/sets a sensitive variable/);
    expect(existsSync(path.join(dir, 'run2'))).toBe(false);
  });
});
