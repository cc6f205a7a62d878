// SshSession stops what it runs when told to: an exec's remote command is killed, children included
// (closing the channel alone leaves it running), and a stalled SFTP transfer ends. The server is ssh2's,
// in process, running each command with the local /bin/sh the way the guests' servers do: as a session
// leader (OpenSSH), or as a child inside the group of a per-connection process (dropbear), a group that
// must survive the kill.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ssh2 from 'ssh2';
import { generateKeyPair } from '../../../src/communicator/keys.js';
import { connectOnce, type SshSession } from '../../../src/communicator/ssh.js';

type Style = 'openssh' | 'dropbear';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cancel-ssh-'));
const started: ChildProcess[] = [];

/** How the last dropbear-style connection process ended: by a signal only if kiln killed its group. */
let lastConnectionExit: Promise<NodeJS.Signals | null> | undefined;

/** Runs `command` as the guests' SSH servers do. */
function runLikeSshd(style: Style, command: string): ChildProcess {
  // dropbear: an outer shell leads the group and waits for the command's shell, as its per-connection process does.
  const child =
    style === 'openssh'
      ? spawn('/bin/sh', ['-c', command], { detached: true })
      : spawn('/bin/sh', ['-c', '/bin/sh -c "$1"; exit $?', 'connection', command], { detached: true });
  started.push(child);
  if (style === 'dropbear')
    lastConnectionExit = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  return child;
}

/** A process that is running (not gone, not a zombie waiting for a parent that does not reap). */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean, ms = 90_000): Promise<void> {
  for (const deadline = Date.now() + ms; !check(); await sleep(50))
    if (Date.now() > deadline) throw new Error(`waited ${ms} ms for ${what}`);
}

let server: ssh2.Server;
let port = 0;
const sessions: SshSession[] = [];

beforeAll(async () => {
  const hostKey = generateKeyPair('test-host-key').privateKey;
  let style: Style = 'openssh';
  server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on('authentication', (auth) => {
      style = auth.username as Style;
      auth.accept();
    });
    client.on('error', () => undefined);
    client.on('session', (accept) => {
      const session = accept();
      session.on('exec', (acceptExec, _reject, info) => {
        const stream = acceptExec();
        const child = runLikeSshd(style, info.command);
        stream.on('data', (d: Buffer) => child.stdin!.write(d));
        stream.on('end', () => child.stdin!.end());
        child.stdout!.pipe(stream, { end: false });
        child.stderr!.pipe(stream.stderr, { end: false });
        child.on('close', (code, signal) => {
          try {
            if (signal) stream.exit(signal.replace(/^SIG/, ''), false, '');
            else stream.exit(code ?? 0);
            stream.end();
          } catch {
            /* the client closed the channel already */
          }
        });
      });
      // An SFTP server that opens files and then never answers a read or a write: a stalled transfer.
      session.on('sftp', (acceptSftp) => {
        const sftp = acceptSftp();
        sftp.on('OPEN', (reqid) => sftp.handle(reqid, Buffer.from([1])));
        // Listened to, so that ssh2 does not answer them itself.
        for (const request of ['READ', 'WRITE'] as const) sftp.on(request, () => undefined);
        for (const request of ['CLOSE', 'FSETSTAT', 'SETSTAT'] as const)
          sftp.on(request, (reqid: number) => sftp.status(reqid, ssh2.utils.sftp.STATUS_CODE.OK));
        sftp.on('FSTAT', (reqid) =>
          sftp.attrs(reqid, { mode: 0o100644, uid: 0, gid: 0, size: 1 << 20, atime: 0, mtime: 0 }),
        );
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of sessions) s.close();
  for (const c of started) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

async function login(style: Style): Promise<SshSession> {
  const s = await connectOnce(
    { host: '127.0.0.1', port, username: style, password: 'x', trustOnFirstUse: true },
    60_000,
  );
  sessions.push(s);
  return s;
}

describe.each(['openssh', 'dropbear'] as const)('SshSession against a %s-style server', (style) => {
  it('exec passes the exit code, stderr and stdin through unchanged', async () => {
    const ssh = await login(style);
    // Nothing has run on a new connection (the warm base runs one command before it saves the guest).
    expect(ssh.commandHasRun).toBe(false);
    let err = '';
    const r = await ssh.exec('echo to-stderr >&2; exit 3', {
      stderr: (s) => {
        err += s;
      },
    });
    expect(r).toMatchObject({ exitCode: 3, disconnected: false });
    expect(ssh.commandHasRun).toBe(true);
    expect(err).toBe('to-stderr\n');
    let out = '';
    await ssh.exec('cat', {
      stdin: 'through stdin',
      stdout: (s) => {
        out += s;
      },
    });
    expect(out).toBe('through stdin');
  });

  for (const how of ['abort', 'timeout'] as const) {
    it(`exec stopped by ${how === 'abort' ? 'its signal' : 'its timeoutMs'}: the command and its children are killed, then the call rejects`, async () => {
      const ssh = await login(style);
      const pids = path.join(dir, `${style}-${how}.pids`);
      const stop = new AbortController();
      const reason = new Error('stopped by the test');
      const running = ssh.exec(
        `sleep 600 & echo "$$ $!" > ${pids}; wait`,
        how === 'abort' ? { signal: stop.signal } : { timeoutMs: 1500 },
      );
      running.catch(() => undefined);
      await until('the command to start', () => existsSync(pids) && readFileSync(pids, 'utf8').endsWith('\n'));
      const connectionExit = lastConnectionExit;
      const [shell, child] = readFileSync(pids, 'utf8').trim().split(' ').map(Number) as [number, number];
      expect(isRunning(child)).toBe(true);
      if (how === 'abort') stop.abort(reason);
      await expect(running).rejects.toThrow(how === 'abort' ? reason.message : /timed out after 1500 ms/);
      // Killed by the time the call rejects, not merely on its way out.
      expect({ shell: isRunning(shell), child: isRunning(child) }).toEqual({ shell: false, child: false });
      // dropbear's connection process was not in the killed group: it ended by itself, after the command.
      if (style === 'dropbear') expect(await connectionExit).toBeNull();
      expect(await ssh.run('echo still here')).toBe('still here\n');
    });
  }
});

describe('SFTP transfers stopped by their signal', () => {
  it("a stalled upload and a stalled download reject with the signal's reason; the download leaves no partial file", async () => {
    const ssh = await login('openssh');
    const reason = new Error('stopped by the test');

    const up = new AbortController();
    const upload = ssh.uploadContent(Buffer.alloc(1 << 20), '/remote/file', 0o644, up.signal);
    upload.catch(() => undefined);
    await sleep(300);
    up.abort(reason);
    await expect(upload).rejects.toBe(reason);

    const down = new AbortController();
    const local = path.join(dir, 'downloaded');
    const download = ssh.download('/remote/file', local, down.signal);
    download.catch(() => undefined);
    await sleep(300);
    down.abort(reason);
    await expect(download).rejects.toBe(reason);
    expect(readdirSync(dir).filter((n) => n.startsWith('downloaded'))).toEqual([]);
  });
});
