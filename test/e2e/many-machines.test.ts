// Builds as Slurm jobs sharing a remote layer cache, on a real two-node Slurm cluster (munged,
// slurmctld, two slurmd; builder2 in its own network namespace, reaching the controller and the S3
// store only through a veth address) and s3rver. The tiny guest. What is checked comes from events
// and files (a boot is a 'launch QEMU' step; a reused build has none), never from timing; the times
// are printed for the record.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { awsEnvFor, startS3, type RunningServer } from '../helpers/servers/index.js';
import { startSlurm, type SlurmCluster } from '../helpers/servers/slurm.js';
import { checkPlan, type KilnPlan } from '../../src/scale/plan-shape.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-many-'));
const template = path.join(dir, 'tiny.yaml');
writeFileSync(
  template,
  `
variables:
  out: { default: ${path.join(dir, 'out-default')} }
  marker: { default: built-on-slurm }
builds:
  - name: tiny
    output_directory: \${var.out}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo \${var.marker} > /root/marker']
    outputs:
      - format: qcow2
`,
);
/** In the submitter's environment only: it must reach no job and nothing slurmctld keeps. */
const SECRET = `kiln-e2e-secret-${process.pid}-do-not-store`;

let s3: RunningServer & { accessKeyId: string; secretAccessKey: string };
let slurm: SlurmCluster;

beforeAll(async () => {
  const t0 = Date.now();
  [s3, slurm] = await Promise.all([
    startS3('kiln-cache'),
    startSlurm([{ name: 'builder1' }, { name: 'builder2', netns: true }]).then((c) => {
      console.log(
        `[many-machines] Slurm (munged, slurmctld, 2 slurmd, a network namespace) up and idle in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
      return c;
    }),
  ]);
  const port = new URL(s3.url).port;
  const exposed = await slurm.expose(Number(port));
  // Node-local files: each node's own cache, the store as that node reaches it, credentials in a file.
  const creds = path.join(dir, 'aws-credentials');
  writeFileSync(
    creds,
    `[default]\naws_access_key_id = ${s3.accessKeyId}\naws_secret_access_key = ${s3.secretAccessKey}\n`,
    { mode: 0o600 },
  );
  for (const [node, endpoint] of [
    ['builder1', s3.url],
    ['builder2', `http://${exposed}`],
  ] as const) {
    mkdirSync(path.join(dir, `cache-${node}`));
    writeFileSync(
      path.join(dir, `${node}.env`),
      [
        `KILN_CACHE_DIR=${path.join(dir, `cache-${node}`)}`,
        `AWS_ENDPOINT_URL=${endpoint}`,
        'AWS_REGION=us-east-1',
        `AWS_SHARED_CREDENTIALS_FILE=${creds}`,
        '',
      ].join('\n'),
    );
  }
}, 120_000);

afterAll(async () => {
  await slurm?.stop();
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

interface Submitted {
  jobId: Promise<string>;
  done: Promise<{ code: number; stderr: string }>;
}

/** `kiln build --on slurm` from a submitter with a secret in its environment; the job id as soon as it is printed. */
function submit(name: string, args: string[]): Submitted {
  const child = execa(
    process.execPath,
    [
      path.join(repoRoot, 'bin/kiln.js'),
      'build',
      '--on',
      'slurm',
      '--slurm-dir',
      path.join(dir, `run-${name}`),
      '--slurm-node-env',
      path.join(dir, '{node}.env'),
      '--progress',
      'never',
      ...args,
      template,
    ],
    {
      reject: false,
      cwd: dir,
      stdin: 'ignore',
      timeout: 400_000,
      env: {
        ...slurm.env,
        KILN_CACHE_DIR: path.join(dir, `submitter-${name}`),
        AWS_SECRET_ACCESS_KEY: SECRET,
        KILN_E2E_TOKEN: SECRET,
      },
    },
  );
  let stderr = '';
  const jobId = new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /submitted Slurm jobs? (\d+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    void child.then(() => reject(new Error(`kiln exited before submitting:\n${stderr}`)));
  });
  jobId.catch(() => undefined);
  return { jobId, done: child.then((r) => ({ code: r.exitCode ?? -1, stderr })) };
}

/** The events every task of a run wrote (its tasks/<i>.events.jsonl). */
function taskEvents(name: string): Record<string, unknown>[] {
  const tasks = path.join(dir, `run-${name}`, 'tasks');
  if (!existsSync(tasks)) return [];
  return readdirSync(tasks)
    .filter((f) => f.endsWith('.events.jsonl'))
    .flatMap((f) => readFileSync(path.join(tasks, f), 'utf8').split('\n'))
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
const boots = (events: Record<string, unknown>[]) =>
  events.filter((e) => e.type === 'step-start' && e.step === 'launch QEMU').length;
const buildMs = (events: Record<string, unknown>[]) => events.find((e) => e.type === 'build-end')?.ms as number;
const explain = (name: string, r: { stderr: string }) =>
  `${r.stderr}\n--- task log\n${readdirSync(path.join(dir, `run-${name}`, 'tasks'))
    .filter((f) => f.endsWith('.log'))
    .map((f) => readFileSync(path.join(dir, `run-${name}`, 'tasks', f), 'utf8'))
    .join('\n')}\n${slurm.log().slice(-3000)}`;

async function until(check: () => boolean, timeoutMs = 240_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('the task did not get there in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function objectSizes(prefix: string): Promise<{ key: string; size: number }[]> {
  const client = new S3Client({
    endpoint: s3.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  const r = await client.send(new ListObjectsV2Command({ Bucket: 'kiln-cache', Prefix: prefix }));
  return (r.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0 }));
}

describe('many machines: Slurm jobs and a remote layer cache', () => {
  it('builder 1 builds cold and uploads; builder 2 (other node, empty cache, other output, afterok) reuses it without booting', async () => {
    const remote = ['--cache-remote', 's3://kiln-cache/seq'];
    const one = submit('one', [
      ...remote,
      '--var',
      `out=${path.join(dir, 'out-one')}`,
      '--sbatch-arg=--nodelist=builder1',
    ]);
    const id = await one.jobId;
    const two = submit('two', [
      ...remote,
      '--var',
      `out=${path.join(dir, 'out-two')}`,
      '--sbatch-arg=--nodelist=builder2',
      `--sbatch-arg=--dependency=afterok:${id}`,
    ]);
    const [r1, r2] = await Promise.all([one.done, two.done]);
    expect(r1.code, explain('one', r1)).toBe(0);
    expect(r2.code, explain('two', r2)).toBe(0);
    // The follower printed the tasks' events and the same summary line as a local run.
    expect(r2.stderr).toMatch(/1 of 1 builds succeeded/);
    const e1 = taskEvents('one');
    const e2 = taskEvents('two');
    expect(boots(e1)).toBe(1);
    expect(boots(e2)).toBe(0);
    const verify = await kiln(['verify', path.join(dir, 'out-two', 'manifest.json')]);
    expect(verify.exitCode, verify.stdout + verify.stderr).toBe(0);
    expect(readdirSync(path.join(dir, 'cache-builder2'))).not.toHaveLength(0);
    // kiln plan on a third machine (an empty cache) sees the final disk in the remote cache: nothing would boot.
    const planned = await kiln(
      [
        'plan',
        '--json',
        '--cache-remote',
        's3://kiln-cache/seq',
        '--var',
        `out=${path.join(dir, 'out-three')}`,
        template,
      ],
      awsEnvFor(s3),
    );
    expect(planned.exitCode, planned.stderr).toBe(0);
    const p = JSON.parse(planned.stdout) as KilnPlan;
    expect(checkPlan(p)).toEqual([]);
    expect(p.builds[0]).toMatchObject({
      resume: 'from-final-layer',
      resume_source: 'remote',
      up_to_date: true,
      final_cached: { local: false, remote: true },
    });
    const uploaded = await objectSizes('seq/');
    expect(uploaded.length).toBeGreaterThan(0);
    console.log(
      `[many-machines] builder 1 (cold, builds and uploads): ${(buildMs(e1) / 1000).toFixed(1)} s; builder 2 (other node, pulls): ${(buildMs(e2) / 1000).toFixed(1)} s`,
    );
    for (const o of uploaded) console.log(`[many-machines] uploaded ${o.key}: ${o.size} bytes`);
  }, 400_000);

  it('two nodes building the same template at once both succeed; with singleton exactly one boots', async () => {
    // Another marker: keys no node has built yet.
    const common = ['--cache-remote', 's3://kiln-cache/together', '--slurm-singleton', '--var', 'marker=together'];
    const a = submit('a', [...common, '--var', `out=${path.join(dir, 'out-a')}`, '--sbatch-arg=--nodelist=builder1']);
    const b = submit('b', [...common, '--var', `out=${path.join(dir, 'out-b')}`, '--sbatch-arg=--nodelist=builder2']);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra.code, explain('a', ra)).toBe(0);
    expect(rb.code, explain('b', rb)).toBe(0);
    expect(boots(taskEvents('a')) + boots(taskEvents('b'))).toBe(1);
    // The one that waited pulled the other's final disk: its artifact checks out (sizes, digests, qemu-img check).
    const puller = boots(taskEvents('a')) === 0 ? 'a' : 'b';
    const verify = await kiln(['verify', path.join(dir, `out-${puller}`, 'manifest.json')]);
    expect(verify.exitCode, verify.stdout + verify.stderr).toBe(0);
  }, 400_000);

  it('scancel of a running task is a SIGTERM to its kiln, which cleans up as on any SIGTERM', async () => {
    const run = submit('cancel', [
      '--var',
      'marker=cancelled',
      '--var',
      `out=${path.join(dir, 'out-cancel')}`,
      '--sbatch-arg=--nodelist=builder1',
    ]);
    const id = await run.jobId;
    // Cancelled once the guest runs (its SSH wait started): QEMU, the work dir and the output claim exist then.
    await until(() => taskEvents('cancel').some((e) => e.type === 'step-start' && e.step === 'wait for SSH'));
    await execa('scancel', [id], { env: slurm.env });
    const r = await run.done;
    const tasks = path.join(dir, 'run-cancel', 'tasks');
    expect(readFileSync(path.join(tasks, '0.rc'), 'utf8').trim(), explain('cancel', r)).toBe('143');
    expect(readFileSync(path.join(tasks, '0.log'), 'utf8')).toMatch(/SIGTERM received, cleaning up/);
    const end = taskEvents('cancel').find((e) => e.type === 'build-end');
    expect(end?.ok).toBe(false);
    expect(existsSync(path.join(dir, 'out-cancel'))).toBe(false);
    expect(r.code).toBe(143);
    expect(r.stderr).toMatch(/0 of 1 builds succeeded; failed: tiny/);
  }, 300_000);

  it("a secret in the submitter's environment is nowhere in slurmctld's state directory", () => {
    const files: string[] = [];
    const walk = (d: string) => {
      for (const f of readdirSync(d)) {
        const p = path.join(d, f);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    walk(slurm.stateDir);
    // The jobs' scripts are there (MinJobAge keeps them): the search looks where --export=ALL would have written.
    expect(files.some((f) => f.endsWith('/script'))).toBe(true);
    const holding = files.filter((f) => readFileSync(f).includes(SECRET));
    expect(holding).toEqual([]);
  });
});
