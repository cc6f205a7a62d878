// Parallel SFTP transfers (src/communicator/sftp-parallel.ts) against an in-process ssh2 SFTP server
// that serves a real directory: bytes come back identical (odd sizes, empty files, a directory of
// many small files), progress adds up, and an abort stops an upload whose server has stopped answering.
// A hostile guest is played by the server: a link to /dev/zero, a file that grows while read, one
// that reports no size; a download stops at its limit and leaves the host as it was.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectOnce, type SshSession } from '../../../src/communicator/ssh.js';
import { generateKeyPair } from '../../../src/communicator/keys.js';
import { DownloadLimitError } from '../../../src/communicator/download-guard.js';
import { uploadRequestSize } from '../../../src/communicator/sftp-parallel.js';

const { STATUS_CODE, OPEN_MODE } = ssh2.utils.sftp;
/** OpenSSH's SFTP server, as Debian guests run it (package openssh-sftp-server, scripts/setup-test-servers.sh). */
const sftpServerBinary = '/usr/lib/openssh/sftp-server';
const dir = mkdtempSync(path.join(os.tmpdir(), 'sftp-parallel-'));
const served = path.join(dir, 'served');
mkdirSync(served);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Set by a test: write requests are held (never answered) while true. */
let holdWrites = false;
let writesSeen = 0;
/** The largest write and read requests the servers received. */
let largestWrite = 0;
let largestRead = 0;
let readsSeen = 0;

/**
 * The size the server reports: the truth, except for "grows-*" (half: the file grew since it was
 * looked at) and "nosize-*" (none, as /proc's files).
 */
function reportedSize(p: string, real: number): number {
  const name = path.basename(p);
  if (name.startsWith('grows-')) return Math.floor(real / 2);
  return name.startsWith('nosize-') ? 0 : real;
}

/** `ident` as an SSH server names itself ("OpenSSH_9.2p1": ssh2 then sends writes as large as OpenSSH takes). */
function startServer(hostKey: string, ident?: string): Promise<ssh2.Server> {
  const server = new ssh2.Server({ hostKeys: [hostKey], ...(ident ? { ident } : {}) }, (client) => {
    client.on('error', () => undefined);
    client.on('authentication', (auth) => auth.accept());
    client.on('ready', () =>
      client.on('session', (accept) => {
        const session = accept();
        session.on('sftp', (acceptSftp) => {
          const sftp = acceptSftp();
          const handles = new Map<number, number>();
          const names = new Map<number, string>();
          let next = 0;
          const fd = (h: Buffer) => handles.get(h.readUInt32BE(0));
          const handleOf = (f: number) => {
            const h = Buffer.alloc(4);
            h.writeUInt32BE(next);
            handles.set(next++, f);
            return h;
          };
          const local = (p: string) => path.join(served, p);
          sftp.on('OPEN', (id, file, flags) => {
            try {
              const mode = flags & OPEN_MODE.WRITE ? (flags & OPEN_MODE.TRUNC ? 'w' : 'r+') : 'r';
              names.set(next, file);
              sftp.handle(id, handleOf(openSync(local(file), mode)));
            } catch {
              sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
            }
          });
          sftp.on('WRITE', (id, h, offset, data) => {
            writesSeen++;
            largestWrite = Math.max(largestWrite, data.length);
            if (holdWrites) return;
            writeSync(fd(h)!, data, 0, data.length, offset);
            sftp.status(id, STATUS_CODE.OK);
          });
          sftp.on('READ', (id, h, offset, length) => {
            readsSeen++;
            largestRead = Math.max(largestRead, length);
            const buf = Buffer.alloc(length);
            const n = readSync(fd(h)!, buf, 0, length, offset);
            if (n === 0) sftp.status(id, STATUS_CODE.EOF);
            else sftp.data(id, buf.subarray(0, n));
          });
          sftp.on('FSTAT', (id, h) =>
            sftp.attrs(id, {
              mode: 0o100644,
              uid: 0,
              gid: 0,
              size: reportedSize(names.get(h.readUInt32BE(0))!, fstatSync(fd(h)!).size),
              atime: 0,
              mtime: 0,
            }),
          );
          sftp.on('STAT', (id, p) => {
            try {
              const st = statSync(local(p));
              sftp.attrs(id, { mode: st.mode, uid: 0, gid: 0, size: reportedSize(p, st.size), atime: 0, mtime: 0 });
            } catch {
              sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
            }
          });
          sftp.on('FSETSTAT', (id) => sftp.status(id, STATUS_CODE.OK));
          sftp.on('MKDIR', (id, p) => {
            try {
              mkdirSync(local(p));
              sftp.status(id, STATUS_CODE.OK);
            } catch {
              sftp.status(id, STATUS_CODE.FAILURE);
            }
          });
          sftp.on('CLOSE', (id, h) => {
            const f = fd(h);
            if (f !== undefined) closeSync(f);
            sftp.status(id, STATUS_CODE.OK);
          });
        });
      }),
    );
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** A session with a test server on loopback (any user and password are let in). */
const connectTo = (server: ssh2.Server, hostKeyFingerprint: string) =>
  connectOnce(
    {
      host: '127.0.0.1',
      port: (server.address() as AddressInfo).port,
      username: 'u',
      password: 'p',
      hostKeyFingerprint,
    },
    5000,
  );

describe('parallel SFTP transfers', () => {
  let server: ssh2.Server;
  let ssh: SshSession;
  beforeAll(async () => {
    const hostKey = generateKeyPair('test-host');
    server = await startServer(hostKey.privateKey);
    ssh = await connectTo(server, hostKey.fingerprint);
  });
  afterAll(() => {
    ssh?.close();
    server?.close();
  });

  it('uploads and downloads files of odd and empty sizes byte for byte, with progress up to the size', async () => {
    for (const size of [0, 1, 32 * 1024 - 1, 3 * 2 ** 20 + 12345]) {
      const src = path.join(dir, `src-${size}`);
      writeFileSync(src, randomBytes(size));
      const seen: number[] = [];
      await ssh.uploadFile(src, `/up-${size}`, 0o640, undefined, (done) => seen.push(done));
      expect(readFileSync(path.join(served, `up-${size}`)).equals(readFileSync(src))).toBe(true);
      if (size) expect(seen.at(-1)).toBe(size);
      const back = path.join(dir, `back-${size}`);
      let received = 0;
      await ssh.download(`/up-${size}`, back, undefined, (done) => {
        received = done;
      });
      expect(readFileSync(back).equals(readFileSync(src))).toBe(true);
      expect(received).toBe(size);
      expect(readdirSync(dir).filter((n) => n.includes('kiln-partial'))).toEqual([]);
    }
  });

  it("writes and reads as much a request as the server takes, up to 128 KiB, never split in two (ssh2 alone: 31952 bytes; OpenSSH's name without its limits: 128 KiB writes, 32 KiB reads)", async () => {
    const size = 2 ** 20 + 4321;
    const src = path.join(dir, 'src-writes');
    writeFileSync(src, randomBytes(size));
    const upload = async (session: SshSession, remote: string) => {
      largestWrite = 0;
      writesSeen = 0;
      await session.uploadFile(src, remote);
      expect(readFileSync(path.join(served, remote)).equals(readFileSync(src))).toBe(true);
      expect(writesSeen).toBe(Math.ceil(size / largestWrite));
      return largestWrite;
    };
    const download = async (session: SshSession, remote: string) => {
      largestRead = 0;
      readsSeen = 0;
      const back = path.join(dir, `back${remote}`);
      await session.download(remote, back);
      expect(readFileSync(back).equals(readFileSync(src))).toBe(true);
      // Every piece asked for once, then the one read that finds the end.
      expect(readsSeen).toBe(Math.ceil(size / largestRead) + 1);
      return largestRead;
    };
    // ssh2's limit for a server that is not OpenSSH: 34000 bytes a packet, less the request's own fields.
    expect(await upload(ssh, '/writes-small')).toBe(31952);
    expect(await download(ssh, '/writes-small')).toBe(31952);

    const hostKey = generateKeyPair('test-host-openssh');
    const openssh = await startServer(hostKey.privateKey, 'OpenSSH_9.2p1');
    const session = await connectTo(openssh, hostKey.fingerprint);
    try {
      expect(await upload(session, '/writes-large')).toBe(uploadRequestSize);
      // No limits@openssh.com (ssh2's server states none): an sftp-server before OpenSSH 8.6 answers
      // at most 64 KiB a read, so reads stay at 32 KiB, whole.
      expect(await download(session, '/writes-large')).toBe(32 * 1024);
    } finally {
      session.close();
      openssh.close();
    }
  });

  it("reads and writes 128 KiB a request against OpenSSH's own sftp-server, which states its limits", async () => {
    // The guest's side for real: ssh2 carries the session, OpenSSH's sftp-server (what Debian guests
    // run) serves the subsystem and logs every request it is sent.
    if (!existsSync(sftpServerBinary))
      throw new Error(`${sftpServerBinary} is missing: run make setup-test (it installs openssh-sftp-server)`);
    const hostKey = generateKeyPair('test-host-sftp-server');
    const log: string[] = [];
    const real = new ssh2.Server({ hostKeys: [hostKey.privateKey], ident: 'OpenSSH_9.2p1' }, (client) => {
      client.on('error', () => undefined);
      client.on('authentication', (auth) => auth.accept());
      client.on('ready', () =>
        client.on('session', (accept) => {
          accept().on('subsystem', (acceptSubsystem, reject, info) => {
            if (info.name !== 'sftp') return reject();
            const channel = acceptSubsystem();
            const child = spawn(sftpServerBinary, ['-e', '-l', 'DEBUG1'], { stdio: ['pipe', 'pipe', 'pipe'] });
            channel.pipe(child.stdin);
            child.stdout.pipe(channel);
            child.stderr.on('data', (d: Buffer) => log.push(...d.toString().split('\n')));
            child.on('exit', () => channel.end());
            channel.on('close', () => child.kill());
          });
        }),
      );
    });
    await new Promise<void>((resolve) => real.listen(0, '127.0.0.1', resolve));
    const session = await connectTo(real, hostKey.fingerprint);
    const sizes = (what: 'read' | 'write') =>
      log.flatMap((l) => {
        const m = new RegExp(`request \\d+: ${what} ".*" \\(handle \\d+\\) off \\d+ len (\\d+)`).exec(l);
        return m ? [Number(m[1])] : [];
      });
    try {
      const size = 2 ** 20 + 4321;
      const src = path.join(dir, 'src-real');
      writeFileSync(src, randomBytes(size));
      const remote = path.join(served, 'real.bin');
      await session.uploadFile(src, remote);
      expect(readFileSync(remote).equals(readFileSync(src))).toBe(true);
      const back = path.join(dir, 'back-real');
      await session.download(remote, back);
      expect(readFileSync(back).equals(readFileSync(src))).toBe(true);
      const whole = Math.floor(size / uploadRequestSize);
      // Every piece once at 128 KiB and the last one's rest; a read also asks once past the end.
      expect(sizes('write')).toEqual(expect.arrayContaining(Array(whole).fill(uploadRequestSize)));
      expect(sizes('write')).toHaveLength(whole + 1);
      expect(Math.max(...sizes('read'))).toBe(uploadRequestSize);
      expect(sizes('read')).toHaveLength(whole + 2);
    } finally {
      session.close();
      real.close();
    }
  });

  it('uploads a directory of many small files (and a nested folder) whole', async () => {
    const tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'sub'), { recursive: true });
    for (let i = 0; i < 60; i++) writeFileSync(path.join(tree, i % 3 ? `f${i}` : `sub/f${i}`), `file ${i}\n`.repeat(i));
    mkdirSync(path.join(served, 'dst'));
    const n = await ssh.upload(tree, '/dst');
    expect(n).toBe(60);
    for (let i = 0; i < 60; i++) {
      const rel = i % 3 ? `f${i}` : `sub/f${i}`;
      expect(readFileSync(path.join(served, 'dst/tree', rel), 'utf8')).toBe(`file ${i}\n`.repeat(i));
    }
  });

  it('an upload to "dir/" lands under the file\'s own name, as Packer reads it', async () => {
    const src = path.join(dir, 'named.txt');
    writeFileSync(src, 'named\n');
    mkdirSync(path.join(served, 'into'));
    await ssh.upload(src, '/into/');
    expect(readFileSync(path.join(served, 'into', 'named.txt'), 'utf8')).toBe('named\n');
  });

  it('an abort stops an upload the server no longer answers, with the abort reason', async () => {
    const src = path.join(dir, 'big');
    writeFileSync(src, randomBytes(8 * 2 ** 20));
    holdWrites = true;
    writesSeen = 0;
    try {
      const stop = new AbortController();
      const reason = new Error('stopped by the test');
      const upload = ssh.uploadFile(src, '/held', undefined, stop.signal);
      upload.catch(() => undefined);
      for (let i = 0; i < 200 && writesSeen === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(writesSeen).toBeGreaterThan(1); // many requests in flight, not one
      stop.abort(reason);
      await expect(upload).rejects.toBe(reason);
      expect(statSync(path.join(served, 'held')).size).toBe(0);
    } finally {
      holdWrites = false;
    }
  });

  describe('downloads from a guest that misbehaves', () => {
    const partials = (root: string) => readdirSync(root).filter((n) => n.includes('kiln-partial'));

    it('a link to /dev/zero is refused before a byte is read', async () => {
      symlinkSync('/dev/zero', path.join(served, 'zero'));
      const dest = path.join(dir, 'zero-back');
      await expect(ssh.download('/zero', dest, undefined, undefined, 2 ** 20)).rejects.toThrow(
        /downloading \/zero to .* failed: it is a character device, not a regular file or a folder/,
      );
      expect(existsSync(dest)).toBe(false);
      expect(partials(dir)).toEqual([]);
    });

    it('a file that grew while read fails naming it, and the previous destination is kept', async () => {
      writeFileSync(path.join(served, 'grows-log'), randomBytes(200 * 1024));
      const dest = path.join(dir, 'kept-log');
      writeFileSync(dest, 'mine');
      await expect(ssh.download('/grows-log', dest)).rejects.toThrow(
        /\/grows-log grew while it was read: it had 102400 bytes when opened/,
      );
      expect(readFileSync(dest, 'utf8')).toBe('mine');
      expect(partials(dir)).toEqual([]);
    });

    it('a file that reports no size (as /proc) comes whole, up to the limit and not past it', async () => {
      const content = randomBytes(100 * 1024 + 7);
      writeFileSync(path.join(served, 'nosize-status'), content);
      const dest = path.join(dir, 'status');
      await ssh.download('/nosize-status', dest, undefined, undefined, 2 ** 20);
      expect(readFileSync(dest).equals(content)).toBe(true);
      const small = path.join(dir, 'status-small');
      const failure = await ssh
        .download('/nosize-status', small, undefined, undefined, 64 * 1024)
        .catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(DownloadLimitError);
      expect((failure as Error).message).toMatch(
        /\/nosize-status reports no size and goes on past the limit of 64\.0 KiB/,
      );
      expect(existsSync(small)).toBe(false);
      expect(partials(dir)).toEqual([]);
    });

    it('a file over the limit fails before it is read, naming its size and the limit', async () => {
      writeFileSync(path.join(served, 'big-file'), randomBytes(3 * 2 ** 20));
      const dest = path.join(dir, 'fresh', 'deeper', 'big-file');
      const failure = await ssh.download('/big-file', dest, undefined, undefined, 2 ** 20).catch((e: unknown) => e);
      expect(failure).toMatchObject({ kind: 'bytes', limit: 2 ** 20, atLeast: 3 * 2 ** 20 });
      expect((failure as Error).message).toContain('/big-file is 3.0 MiB, over the limit of 1.0 MiB');
      expect(existsSync(path.join(dir, 'fresh'))).toBe(false);
    });

    it('a destination ending in "/" or naming a folder receives the file under its name; kiln removes only the folders it made', async () => {
      writeFileSync(path.join(served, 'plain'), 'plain\n');
      await ssh.download('/plain', path.join(dir, 'new-dir') + '/');
      expect(readFileSync(path.join(dir, 'new-dir', 'plain'), 'utf8')).toBe('plain\n');
      await ssh.download('/plain', path.join(dir, 'new-dir', 'nested') + '/');
      expect(readFileSync(path.join(dir, 'new-dir', 'nested', 'plain'), 'utf8')).toBe('plain\n');
      mkdirSync(path.join(dir, 'existing'));
      await ssh.download('/plain', path.join(dir, 'existing'));
      expect(readFileSync(path.join(dir, 'existing', 'plain'), 'utf8')).toBe('plain\n');
      // A failed download into a folder kiln made removes that folder, and only it.
      await expect(ssh.download('/grows-log', path.join(dir, 'new-dir', 'made', 'here') + '/')).rejects.toThrow(/grew/);
      expect(existsSync(path.join(dir, 'new-dir', 'made'))).toBe(false);
      expect(readdirSync(path.join(dir, 'new-dir')).sort()).toEqual(['nested', 'plain']);
    });

    it("a setuid, world-writable file lands with the host umask's ordinary mode", async () => {
      writeFileSync(path.join(served, 'suid'), '#!/bin/sh\n');
      chmodSync(path.join(served, 'suid'), 0o4777);
      await ssh.download('/suid', path.join(dir, 'suid'));
      expect(statSync(path.join(dir, 'suid')).mode & 0o7777).toBe(0o666 & ~process.umask() & 0o775);
    });
  });
});
