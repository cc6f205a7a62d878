/**
 * The SSH communicator: one connection per build reused for every command and transfer (Packer opens
 * several sessions per shell provisioner), host key checked against what kiln expects.
 */
import { createReadStream, createWriteStream, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import net from 'node:net';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2';
import { fingerprintOf } from './keys.js';
import { formatBytes } from '../template/units.js';

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  privateKey?: string;
  password?: string;
  /** Accept only this host key ("SHA256:..."); undefined with trustOnFirstUse accepts any. */
  hostKeyFingerprint?: string;
  trustOnFirstUse?: boolean;
}

export class HostKeyMismatchError extends Error {}

/** The SSH connection went away under a command or transfer (guest rebooted, powered off, sshd killed). */
export class ConnectionLostError extends Error {}

export interface ExecResult { exitCode: number | null; signal?: string; disconnected: boolean }

export class SshSession {
  private sftpHandle?: Promise<SFTPWrapper>;
  readonly closed: Promise<void>;
  private isClosed = false;

  constructor(private readonly client: ssh2.Client, readonly hostKey: string) {
    this.closed = new Promise((resolve) => client.once('close', () => { this.isClosed = true; resolve(); }));
    client.on('error', () => { /* surfaced through exec/sftp failures */ });
  }

  get connected(): boolean { return !this.isClosed; }

  /**
   * Runs a command; output is streamed to the callbacks as it arrives. A connection that drops
   * before an exit status (a reboot, a poweroff) resolves with disconnected: true.
   */
  exec(command: string, io: { stdout?: (s: string) => void; stderr?: (s: string) => void; stdin?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      if (this.isClosed) { reject(new ConnectionLostError('SSH connection is closed')); return; }
      let timer: NodeJS.Timeout | undefined;
      const onClientClose = () => finish({ exitCode: null, disconnected: true });
      let settled = false;
      const finish = (r: ExecResult | Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.client.off('close', onClientClose);
        if (r instanceof Error) reject(r); else resolve(r);
      };
      this.client.once('close', onClientClose);
      this.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
        if (err) { finish(err); return; }
        let exitCode: number | null = null;
        let signal: string | undefined;
        if (io.timeoutMs) timer = setTimeout(() => { stream.close(); finish(new Error(`command timed out after ${io.timeoutMs} ms`)); }, io.timeoutMs);
        stream.on('exit', (code: number | null, sig?: string) => { exitCode = code; signal = sig; });
        stream.on('data', (d: Buffer) => io.stdout?.(d.toString()));
        stream.stderr.on('data', (d: Buffer) => io.stderr?.(d.toString()));
        stream.on('close', () => finish({ exitCode, signal, disconnected: exitCode === null && signal === undefined }));
        if (io.stdin !== undefined) stream.end(io.stdin); else stream.end();
      });
    });
  }

  /** Runs a command and returns its stdout; non-zero exit is an error carrying stderr. */
  async run(command: string): Promise<string> {
    let out = '';
    let err = '';
    const r = await this.exec(command, { stdout: (s) => { out += s; }, stderr: (s) => { err += s; } });
    if (r.exitCode !== 0) throw new Error(`"${command}" exited ${r.exitCode ?? r.signal ?? 'without status'}: ${err.trim() || out.trim()}`);
    return out;
  }

  private sftp(): Promise<SFTPWrapper> {
    if (this.isClosed) return Promise.reject(new ConnectionLostError('SSH connection is closed'));
    this.sftpHandle ??= new Promise((resolve, reject) => this.client.sftp((err, s) => {
      if (err) { reject(err); return; }
      // A closed SFTP session (its server was killed) is not reused; the next transfer opens another.
      s.once('close', () => { this.sftpHandle = undefined; });
      resolve(s);
    }));
    return this.sftpHandle;
  }

  /**
   * Runs one SFTP transfer. ssh2's SFTP streams never settle when the session closes under them (a
   * killed sshd, a guest gone), so the transfer fails then, its streams destroyed. The error says
   * whether the connection was lost or the server refused.
   */
  private async transfer(what: string, progress: () => string, work: (sftp: SFTPWrapper, stream: <S extends Readable | Writable>(s: S) => S) => Promise<void>): Promise<void> {
    const sftp = await this.sftp();
    const streams: (Readable | Writable)[] = [];
    let onClose!: () => void;
    const closed = new Promise<never>((_, reject) => {
      onClose = () => {
        const lost = new ConnectionLostError('the SFTP session closed');
        for (const st of streams) st.destroy(lost);
        reject(lost);
      };
      sftp.once('close', onClose);
    });
    closed.catch(() => undefined); // only observed through the race below
    try {
      await Promise.race([work(sftp, (st) => { streams.push(st); return st; }), closed]);
    } catch (e) {
      throw await this.transferError(what, e as Error, progress());
    } finally {
      sftp.off('close', onClose);
    }
  }

  /**
   * Tells a lost connection from an error the server reported (those carry an SFTP status code); ssh2
   * fails a transfer a moment before it reports the connection closed.
   */
  private async transferError(what: string, e: Error, progress: string): Promise<Error> {
    if (typeof (e as Error & { code?: unknown }).code !== 'number') await Promise.race([this.closed, sleep(1000)]);
    if (!this.connected) return new ConnectionLostError(`${what} failed: the SSH connection was lost (${progress})`);
    return new Error(`${what} failed: ${e.message} (${progress})`);
  }

  async uploadFile(local: string, remote: string, mode?: number): Promise<void> {
    const total = statSync(local).size;
    let read = 0;
    await this.transfer(`uploading ${local} to ${remote}`, () => `${formatBytes(read)} of ${formatBytes(total)} sent`, (sftp, stream) =>
      pipeline(
        stream(createReadStream(local).on('data', (c) => { read += c.length; })),
        stream(sftp.createWriteStream(remote, mode ? { mode } : {})),
      ));
  }

  async uploadContent(content: string | Buffer, remote: string, mode = 0o644): Promise<void> {
    await this.transfer(`writing ${remote}`, () => formatBytes(Buffer.byteLength(content)), (sftp, stream) => new Promise<void>((resolve, reject) => {
      const ws = stream(sftp.createWriteStream(remote, { mode }));
      ws.on('error', reject);
      ws.on('close', () => resolve());
      ws.end(content);
    }));
  }

  /** Uploads a file, or a directory recursively (rsync semantics: "dir" copies the folder, "dir/" its contents). */
  async upload(local: string, remote: string): Promise<number> {
    const st = statSync(local);
    if (st.isFile()) { await this.uploadFile(local, remote, st.mode & 0o777); return 1; }
    const target = local.endsWith('/') ? remote : path.posix.join(remote, path.basename(local));
    const sftp = await this.sftp();
    let count = 0;
    const walk = async (dir: string, rdir: string) => {
      await new Promise<void>((resolve) => sftp.mkdir(rdir, () => resolve()));
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const l = path.join(dir, entry.name);
        const r = path.posix.join(rdir, entry.name);
        if (entry.isDirectory()) await walk(l, r);
        else if (entry.isFile()) { await this.uploadFile(l, r, statSync(l).mode & 0o777); count++; }
      }
    };
    await walk(local, target);
    return count;
  }

  /** Writes beside `local` and renames when complete, so a lost connection leaves no partial file. */
  async download(remote: string, local: string): Promise<void> {
    mkdirSync(path.dirname(local), { recursive: true });
    const partial = `${local}.kiln-partial-${process.pid}`;
    let received = 0;
    try {
      await this.transfer(`downloading ${remote} to ${local}`, () => `${formatBytes(received)} received`, (sftp, stream) =>
        pipeline(stream(sftp.createReadStream(remote).on('data', (c: Buffer) => { received += c.length; })), stream(createWriteStream(partial))));
      renameSync(partial, local);
    } finally {
      rmSync(partial, { force: true });
    }
  }

  close(): void { this.client.end(); }
}

/**
 * Connects and waits until the server has sent something (its SSH banner), without consuming it.
 * slirp's port forward accepts a connection before anything in the guest listens, so a bare
 * connect proves nothing; the banner does. Rejects after `timeoutMs` or when the peer hangs up.
 */
export function waitForBanner(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host, port });
    const fail = (e: Error) => { clearTimeout(timer); sock.destroy(); reject(e); };
    const timer = setTimeout(() => fail(new Error(`no SSH banner within ${timeoutMs} ms`)), timeoutMs);
    sock.once('error', fail);
    sock.once('end', () => fail(new Error('connection closed before the SSH banner')));
    sock.once('data', (chunk: Buffer) => {
      // Hand the bytes back: the SSH client reads the banner itself when it resumes the socket.
      sock.pause();
      sock.unshift(chunk);
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.removeAllListeners('end');
      resolve(sock);
    });
  });
}

/** One SSH login over a fresh connection, or over `sock` if one is already open. */
export function connectOnce(target: SshTarget, readyTimeoutMs: number, sock?: net.Socket): Promise<SshSession> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let hostKey = '';
    let mismatch: string | undefined;
    const config: ConnectConfig = {
      host: target.host, port: target.port, username: target.username, sock,
      privateKey: target.privateKey, password: target.password,
      readyTimeout: readyTimeoutMs, keepaliveInterval: 5000, keepaliveCountMax: 6,
      tryKeyboard: false,
      hostVerifier: (key: Buffer) => {
        hostKey = fingerprintOf(key);
        if (target.hostKeyFingerprint && hostKey !== target.hostKeyFingerprint) {
          mismatch = `guest host key ${hostKey} is not the expected ${target.hostKeyFingerprint}`;
          return false;
        }
        return Boolean(target.hostKeyFingerprint) || Boolean(target.trustOnFirstUse);
      },
    };
    let settled = false;
    client.once('ready', () => { settled = true; resolve(new SshSession(client, hostKey)); });
    // ssh2 can emit more than one error for a failed attempt; keep a listener for the client's life.
    client.on('error', (e: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(mismatch ? new HostKeyMismatchError(mismatch) : e);
    });
    client.connect(config);
  });
}

export interface WaitOptions {
  timeoutMs: number;
  /** How long one attempt waits for the banner; short, because slirp accepts TCP before the guest listens. */
  bannerTimeoutMs?: number;
  /** Handshake and login deadline once the banner has arrived (the server is alive: be patient). */
  attemptTimeoutMs?: number;
  retryDelayMs?: number;
  /** Called with each failed attempt's reason (for --debug logs). */
  onAttempt?: (n: number, error: Error) => void;
  /** Stops waiting early (e.g. QEMU exited); returns a reason. */
  abort?: () => string | undefined;
}

/** Polls until SSH accepts the login, or the deadline passes. Host-key mismatches fail at once. */
export async function waitForSsh(target: SshTarget, opts: WaitOptions): Promise<SshSession> {
  const deadline = Date.now() + opts.timeoutMs;
  let attempt = 0;
  let last: Error = new Error('no attempt made');
  while (Date.now() < deadline) {
    const reason = opts.abort?.();
    if (reason) throw new Error(reason);
    attempt++;
    const remaining = deadline - Date.now();
    try {
      const sock = await waitForBanner(target.host, target.port, Math.max(200, Math.min(opts.bannerTimeoutMs ?? 1000, remaining)));
      return await connectOnce(target, Math.max(1000, Math.min(opts.attemptTimeoutMs ?? 30_000, deadline - Date.now())), sock);
    } catch (e) {
      if (e instanceof HostKeyMismatchError) throw e;
      last = e as Error;
      opts.onAttempt?.(attempt, last);
    }
    await sleep(opts.retryDelayMs ?? 200);
  }
  throw new Error(`SSH to ${target.username}@${target.host}:${target.port} did not succeed within ${Math.round(opts.timeoutMs / 1000)} s (${attempt} attempts; last error: ${last.message})`);
}
