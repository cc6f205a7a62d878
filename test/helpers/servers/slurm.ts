/**
 * A real Slurm cluster for the many-machines tests, everything in one temp directory and nothing in
 * /etc: munged, slurmctld and one slurmd per node, all run in the foreground as this process's
 * children (the settings are those docs/../shared notes measured to work here: auth over munge's
 * socket path, linuxproc, no accounting). A node may live in its own network namespace, a separate
 * "host" whose only way out is a veth pair the helper makes (addresses 10.77.<n>.1/.2 on interfaces it
 * created, nothing else touched): that node reaches the controller and any store through the host
 * end's address (`hostAddress`), and `expose(port)` forwards a loopback server there.
 * stop() cancels every job, waits until Slurm has none, stops the daemons, removes the namespace and
 * the directory, and kills a job step Slurm left behind (only ours: found by this cluster's SLURM_CONF).
 */
import { execa, type ResultPromise } from 'execa';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../../src/qemu/ports.js';

export interface SlurmNode {
  name: string;
  netns?: boolean;
}

export interface SlurmCluster {
  dir: string;
  /** SLURM_CONF for sbatch, squeue, scancel, sinfo. */
  env: { SLURM_CONF: string };
  /** slurmctld's StateSaveLocation (where --export=ALL would write a job's environment). */
  stateDir: string;
  /** The controller's address as every node reaches it (the veth's host end when a node is in a namespace). */
  hostAddress: string;
  /** Forwards a TCP port on loopback to hostAddress (the same port number there). */
  expose(port: number): Promise<string>;
  /** Runs a command (argv) inside a node's network namespace, or on the host for a node without one. */
  onNode(node: string, argv: string[]): ResultPromise;
  log(): string;
  stop(): Promise<void>;
}

const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Slurm test cluster: ${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
};

/** A daemon run in the foreground: its output is kept, stop() ends it (SIGTERM, then SIGKILL after 10 s). */
function daemon(
  argv: string[],
  env: Record<string, string>,
  output: string[],
): { child: ResultPromise; stop(): Promise<void> } {
  const child = execa(argv[0]!, argv.slice(1), { reject: false, buffer: false, env, stdin: 'ignore' });
  child.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  return {
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await child.catch(() => undefined);
      clearTimeout(t);
    },
  };
}

export async function startSlurm(nodes: SlurmNode[]): Promise<SlurmCluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-slurm-'));
  const conf = path.join(dir, 'slurm.conf');
  const env = { ...process.env, SLURM_CONF: conf } as Record<string, string>;
  const output: string[] = [];
  const daemons: { stop(): Promise<void> }[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];
  const tag = `k${process.pid.toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const subnet = 77 + (process.pid % 100);
  const netns = `kiln-${tag}`;
  const hostEnd = `${tag}h`; // interface names: at most 15 characters
  const nsEnd = `${tag}n`;
  const needsNs = nodes.some((n) => n.netns);
  const hostAddress = needsNs ? `10.${subnet}.0.1` : '127.0.0.1';
  const nsAddress = `10.${subnet}.0.2`;

  let controller = false;
  const stop = async () => {
    // Jobs first: a slurmd stopped under a running job leaves its slurmstepd and the job's processes.
    if (controller) await execa('scancel', ['--full', '--quiet', '-u', os.userInfo().username], { env, reject: false });
    if (controller)
      await until(
        'every job ended',
        async () => {
          const r = await execa('squeue', ['-h', '-o', '%A'], { env, reject: false });
          return r.exitCode !== 0 || String(r.stdout).trim() === '';
        },
        60_000,
      ).catch(() => undefined);
    for (const d of daemons.reverse()) await d.stop();
    // A job step Slurm left behind (KillWait passed with the daemons gone): ours carry our SLURM_CONF.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (
          readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('slurmstepd') &&
          readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`SLURM_CONF=${conf}`)
        )
          process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone, or not ours to read */
      }
    }
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // munge: a key and a socket in the directory; every daemon and client authenticates through that path.
    // munged wants every directory above its socket searchable by all.
    chmodSync(dir, 0o755);
    mkdirSync(path.join(dir, 'munge'), { mode: 0o755 });
    const sock = path.join(dir, 'munge/munge.sock');
    await execa('mungekey', ['--create', `--keyfile=${path.join(dir, 'munge/munge.key')}`]);
    daemons.push(
      daemon(
        [
          'munged',
          '--foreground',
          `--socket=${sock}`,
          `--key-file=${path.join(dir, 'munge/munge.key')}`,
          `--pid-file=${path.join(dir, 'munge/munged.pid')}`,
          `--seed-file=${path.join(dir, 'munge/munged.seed')}`,
          `--log-file=${path.join(dir, 'munge/munged.log')}`,
        ],
        env,
        output,
      ),
    );
    await until('munged listening', async () => existsSync(sock));

    if (needsNs) {
      const ip = (...args: string[]) => execa('ip', args);
      await ip('netns', 'add', netns);
      cleanups.push(() => execa('ip', ['netns', 'del', netns], { reject: false }));
      await ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', nsEnd);
      cleanups.push(() => execa('ip', ['link', 'del', hostEnd], { reject: false }));
      await ip('link', 'set', nsEnd, 'netns', netns);
      await ip('addr', 'add', `${hostAddress}/30`, 'dev', hostEnd);
      await ip('link', 'set', hostEnd, 'up');
      await ip('-n', netns, 'addr', 'add', `${nsAddress}/30`, 'dev', nsEnd);
      await ip('-n', netns, 'link', 'set', nsEnd, 'up');
      await ip('-n', netns, 'link', 'set', 'lo', 'up');
    }

    const ctlPort = await freePort();
    const nodePorts = await Promise.all(nodes.map(() => freePort()));
    const spool = path.join(dir, 'spool-%n');
    writeFileSync(
      conf,
      [
        'ClusterName=kilntest',
        `SlurmctldHost=${os.hostname().split('.')[0]}(${hostAddress})`,
        `SlurmctldPort=${ctlPort}`,
        'AuthType=auth/munge',
        'CredType=cred/munge',
        `AuthInfo=socket=${sock}`,
        `StateSaveLocation=${path.join(dir, 'state')}`,
        `SlurmdSpoolDir=${spool}`,
        `SlurmctldPidFile=${path.join(dir, 'slurmctld.pid')}`,
        `SlurmdPidFile=${path.join(dir, 'slurmd-%n.pid')}`,
        `SlurmctldLogFile=${path.join(dir, 'slurmctld.log')}`,
        `SlurmdLogFile=${path.join(dir, 'slurmd-%n.log')}`,
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU',
        'ReturnToService=2',
        'SlurmUser=root',
        'SlurmdUser=root',
        'MpiDefault=none',
        'SwitchType=switch/none',
        'KillWait=30',
        'InactiveLimit=0',
        'MinJobAge=600',
        ...nodes.map(
          (n, i) =>
            `NodeName=${n.name} NodeAddr=${n.netns ? nsAddress : '127.0.0.1'} Port=${nodePorts[i]} CPUs=2 State=UNKNOWN`,
        ),
        `PartitionName=build Nodes=${nodes.map((n) => n.name).join(',')} Default=YES MaxTime=INFINITE State=UP`,
        '',
      ].join('\n'),
    );
    mkdirSync(path.join(dir, 'state'));
    for (const n of nodes) mkdirSync(path.join(dir, `spool-${n.name}`));

    daemons.push(daemon(['slurmctld', '-D', '-f', conf], env, output));
    controller = true;
    await until(
      'slurmctld answering',
      async () => (await execa('sinfo', ['-h'], { env, reject: false })).exitCode === 0,
    );
    for (const n of nodes) {
      const argv = ['slurmd', '-D', '-f', conf, '-N', n.name];
      // nsenter, not `ip netns exec`: that remounts /sys, and slurmd then finds no cgroup file system.
      daemons.push(daemon(n.netns ? ['nsenter', `--net=/var/run/netns/${netns}`, ...argv] : argv, env, output));
    }
    await until('every node idle', async () => {
      const r = await execa('sinfo', ['-h', '-N', '-o', '%N %t'], { env, reject: false });
      const states = String(r.stdout)
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/));
      return nodes.every((n) => states.some(([name, state]) => name === n.name && state === 'idle'));
    });
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${output.join('')}`);
  }

  return {
    dir,
    env: { SLURM_CONF: conf },
    stateDir: path.join(dir, 'state'),
    hostAddress,
    async expose(port) {
      if (hostAddress === '127.0.0.1') return `127.0.0.1:${port}`;
      const fwd = daemon(
        ['socat', `TCP-LISTEN:${port},bind=${hostAddress},fork,reuseaddr`, `TCP:127.0.0.1:${port}`],
        env,
        output,
      );
      daemons.push(fwd);
      await until(
        `the forward to port ${port}`,
        async () =>
          (await execa('bash', ['-c', `exec 3<>/dev/tcp/${hostAddress}/${port}`], { reject: false })).exitCode === 0,
      );
      return `${hostAddress}:${port}`;
    },
    onNode(node, argv) {
      const n = nodes.find((x) => x.name === node);
      return n?.netns
        ? execa('nsenter', [`--net=/var/run/netns/${netns}`, ...argv], { reject: false, env })
        : execa(argv[0]!, argv.slice(1), { reject: false, env });
    },
    log: () =>
      output.join('') +
      ['slurmctld.log', ...nodes.map((n) => `slurmd-${n.name}.log`)]
        .map((f) => {
          try {
            return `--- ${f}\n${readFileSync(path.join(dir, f), 'utf8')}`;
          } catch {
            return '';
          }
        })
        .join('\n'),
    stop,
  };
}
