/**
 * The SSH communicator: one connection per build reused for every command and transfer (Packer opens
 * several sessions per shell provisioner), host key checked against what kiln expects.
 */
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import net from 'node:net';
import { createRequire } from 'node:module';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2';
import { fingerprintOf } from './keys.js';
import { inOwnProcessGroup, killProcessGroupCommand, ProcessGroupReport, type ExecOptions } from './remote-command.js';
import { formatBytes } from '../template/units.js';
import { filesInFlight, parallelGet, parallelPut, type TransferProgress } from './sftp-parallel.js';
import {
  archiveCommand,
  extractCommand,
  leafDirectories,
  maxCommandLength,
  parseProbe,
  probeCommand,
} from './stream-transfer.js';
import {
  defaultMaxDownloadBytes,
  DownloadLimitError,
  DownloadRefusedError,
  maxDownloadEntries,
} from './download-guard.js';
import { extractTo, packTree, settleInto, walkLocal } from './tar-io.js';

/** A channel's input and output as byte streams (transfers), beside ExecOptions' text callbacks. */
export type ChannelIo = ExecOptions & { input?: Readable; output?: Writable };

export type { TransferProgress } from './sftp-parallel.js';

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

type RemoteStat = {
  isDirectory(): boolean;
  isFile(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  size: number;
};

/** What a guest path that is neither a file nor a folder is, for an error message. */
function kindOf(st: RemoteStat): string {
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'of another kind';
}

/** The SSH connection went away under a command or transfer (guest rebooted, powered off, sshd killed). */
export class ConnectionLostError extends Error {}

export interface ExecResult {
  exitCode: number | null;
  signal?: string;
  disconnected: boolean;
}

export class SshSession {
  private sftpHandle?: Promise<SFTPWrapper>;
  readonly closed: Promise<void>;
  private isClosed = false;
  private ranCommand = false;

  constructor(
    private readonly client: ssh2.Client,
    readonly hostKey: string,
    /** The cipher negotiated from kiln to the guest (for the log). */
    readonly cipher?: string,
  ) {
    this.closed = new Promise((resolve) =>
      client.once('close', () => {
        this.isClosed = true;
        resolve();
      }),
    );
    client.on('error', () => {
      /* surfaced through exec/sftp failures */
    });
  }

  get connected(): boolean {
    return !this.isClosed;
  }

  /**
   * Whether a command has run to its exit on this connection: the guest has set up its side of the
   * login (on systemd guests the user's service manager starts with the first command, ~2 s under TCG).
   */
  get commandHasRun(): boolean {
    return this.ranCommand;
  }

  /**
   * Runs a command; output is streamed to the callbacks as it arrives. A connection that drops
   * before an exit status (a reboot, a poweroff) resolves with disconnected: true. On timeout or
   * abort the command is killed in the guest, children included, before the call rejects: closing
   * the channel alone would leave it running.
   */
  exec(command: string, io: ChannelIo = {}): Promise<ExecResult> {
    return this.runChannel(inOwnProcessGroup(command), io, (group) =>
      this.runChannel(killProcessGroupCommand(group), { timeoutMs: SshSession.killTimeoutMs }),
    );
  }

  /** How long killing a stopped command may take (its SIGTERM grace, then SIGKILL) before kiln gives up on it. */
  private static readonly killTimeoutMs = 10_000;
  /** How long a stop waits for a command that has not yet reported its process group (its first act). */
  private static readonly groupReportWaitMs = 2_000;

  /**
   * Runs `command` on a channel of its own. A timeout or abort stops it: through `killInGuest` with the
   * process group the command reported (see ProcessGroupReport), then by closing the channel.
   */
  private runChannel(
    command: string,
    io: ChannelIo,
    killInGuest?: (group: number) => Promise<unknown>,
  ): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      if (this.isClosed) {
        reject(new ConnectionLostError('SSH connection is closed'));
        return;
      }
      if (io.signal?.aborted) {
        reject(io.signal.reason as Error);
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      // Set when the command is being stopped: the call then rejects with it, once the stop is done.
      let stopReason: Error | undefined;
      let stopChannel: (() => void) | undefined;
      const stop = (reason: Error) => {
        if (stopReason || settled) return;
        stopReason = reason;
        stopChannel?.(); // else the channel is stopped as soon as it opens
      };
      const onAbort = () => stop(io.signal!.reason as Error);
      const onClientClose = () => {
        if (!stopReason) finish({ exitCode: null, disconnected: true });
      };
      let settled = false;
      const finish = (r: ExecResult | Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        io.signal?.removeEventListener('abort', onAbort);
        this.client.off('close', onClientClose);
        if (stopReason) reject(stopReason);
        else if (r instanceof Error) reject(r);
        else resolve(r);
      };
      this.client.once('close', onClientClose);
      io.signal?.addEventListener('abort', onAbort, { once: true });
      if (io.timeoutMs)
        timer = setTimeout(() => stop(new Error(`command timed out after ${io.timeoutMs} ms`)), io.timeoutMs);
      this.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
        if (err) {
          finish(err);
          return;
        }
        let exitCode: number | null = null;
        let signal: string | undefined;
        const report = new ProcessGroupReport();
        const channelClosed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
        stream.on('exit', (code: number | null, sig?: string) => {
          exitCode = code;
          signal = sig;
          if (code !== null) this.ranCommand = true;
        });
        if (io.output) {
          // The output's own failure (an unsafe tar entry) stops the command like an abort.
          io.output.once('error', (e: Error) => stop(e));
          stream.pipe(io.output);
        } else stream.on('data', (d: Buffer) => io.stdout?.(d.toString()));
        stream.stderr.on('data', (d: Buffer) => {
          const own = killInGuest ? report.take(d.toString()) : d.toString();
          if (own) io.stderr?.(own);
        });
        stream.on('close', () => {
          const held = report.rest();
          if (held && killInGuest) io.stderr?.(held);
          if (!stopReason) finish({ exitCode, signal, disconnected: exitCode === null && signal === undefined });
        });
        stopChannel = () =>
          void (async () => {
            if (killInGuest) {
              await Promise.race([
                report.known,
                channelClosed,
                sleep(SshSession.groupReportWaitMs, undefined, { ref: false }),
              ]);
              if (report.group !== undefined && this.connected) await killInGuest(report.group).catch(() => undefined);
            }
            io.input?.unpipe(stream);
            io.input?.destroy();
            stream.close();
            finish(stopReason!);
          })();
        if (io.input) {
          io.input.once('error', (e: Error) => stop(e));
          io.input.pipe(stream);
        } else if (io.stdin !== undefined) stream.end(io.stdin);
        else stream.end();
        if (stopReason) stopChannel();
      });
    });
  }

  /** Runs a command and returns its stdout; non-zero exit is an error carrying stderr. */
  async run(command: string, signal?: AbortSignal): Promise<string> {
    let out = '';
    let err = '';
    const r = await this.exec(command, {
      stdout: (s) => {
        out += s;
      },
      stderr: (s) => {
        err += s;
      },
      signal,
    });
    if (r.exitCode !== 0)
      throw new Error(`"${command}" exited ${r.exitCode ?? r.signal ?? 'without status'}: ${err.trim() || out.trim()}`);
    return out;
  }

  private sftp(): Promise<SFTPWrapper> {
    if (this.isClosed) return Promise.reject(new ConnectionLostError('SSH connection is closed'));
    this.sftpHandle ??= new Promise((resolve, reject) =>
      this.client.sftp((err, s) => {
        if (err) {
          reject(err);
          return;
        }
        // A closed SFTP session (its server was killed) is not reused; the next transfer opens another.
        s.once('close', () => {
          this.sftpHandle = undefined;
        });
        resolve(s);
      }),
    );
    return this.sftpHandle;
  }

  /**
   * Runs one SFTP transfer. ssh2's SFTP streams never settle when the session closes under them (a
   * killed sshd, a guest gone), so the transfer fails then, its streams destroyed and `halt` aborted
   * (parallel requests check it before each one); likewise when `signal` aborts, with its reason.
   * Otherwise the error says whether the connection was lost or the server refused.
   */
  private async transfer(
    what: string,
    progress: () => string,
    work: (sftp: SFTPWrapper, stream: <S extends Readable | Writable>(s: S) => S, halt: AbortSignal) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<void> {
    signal?.throwIfAborted();
    const sftp = await this.sftp();
    const streams: (Readable | Writable)[] = [];
    const halt = new AbortController();
    let onClose!: () => void;
    let onAbort!: () => void;
    const stopped = new Promise<never>((_, reject) => {
      const stop = (reason: Error) => {
        halt.abort(reason);
        for (const st of streams) st.destroy(reason);
        reject(reason);
      };
      onClose = () => stop(new ConnectionLostError('the SFTP session closed'));
      onAbort = () => stop(signal!.reason as Error);
      sftp.once('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    stopped.catch(() => undefined); // only observed through the race below
    const working = work(
      sftp,
      (st) => {
        streams.push(st);
        return st;
      },
      halt.signal,
    );
    try {
      signal?.throwIfAborted();
      await Promise.race([working, stopped]);
    } catch (e) {
      halt.abort(e);
      // Requests already sent finish (or fail) before the file handles close: wait for them, briefly.
      await Promise.race([working.catch(() => undefined), sleep(2000, undefined, { ref: false })]);
      if (signal?.aborted) throw signal.reason;
      throw await this.transferError(what, e as Error, progress());
    } finally {
      sftp.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Tells a lost connection from an error the server reported (those carry an SFTP status code); ssh2
   * fails a transfer a moment before it reports the connection closed. What kiln refused of a download
   * keeps its class (the provisioner names the setting that raises a limit).
   */
  private async transferError(what: string, e: Error, progress: string): Promise<Error> {
    if (e instanceof DownloadRefusedError) {
      e.message = `${what} failed: ${e.message}`;
      return e;
    }
    if (typeof (e as Error & { code?: unknown }).code !== 'number') await Promise.race([this.closed, sleep(1000)]);
    if (!this.connected) return new ConnectionLostError(`${what} failed: the SSH connection was lost (${progress})`);
    return new Error(`${what} failed: ${e.message} (${progress})`);
  }

  /**
   * How folders move: 'auto' as one tar stream over an exec channel when the guest can (see
   * stream-transfer.ts), by SFTP otherwise; 'sftp' always by SFTP (the bench compares the two). Single
   * files always go by SFTP: with many requests in flight it measured as fast as a stream through
   * `cat` or faster (Debian guest, load 1-2: 64 MiB up 5.7 s vs 7.0 s, down 8.0 s vs 8.7 s, 1 MiB
   * 0.3 s vs 1.3 s).
   */
  transferMode: 'auto' | 'sftp' = 'auto';
  /** How the last upload or download went (for logs, and for tests to see which path ran). */
  lastTransferVia?: 'tar stream' | 'SFTP';
  private streamable?: Promise<boolean>;

  /** Whether the guest takes exec-channel transfers: asked once per session; no exec, no tar: SFTP. */
  private canStream(): Promise<boolean> {
    if (this.transferMode === 'sftp') return Promise.resolve(false);
    this.streamable ??= (async () => {
      let out = '';
      const r = await this.exec(probeCommand, {
        stdout: (t) => {
          out += t;
        },
        timeoutMs: 30_000,
      }).catch(() => undefined);
      return r?.exitCode === 0 && parseProbe(out);
    })();
    return this.streamable;
  }

  /**
   * Runs one exec-channel transfer; the last lines of stderr become the error's message. Resolves with
   * the exit code for the caller to read (3: the guest's source is not a folder); a stop rejects with
   * the signal's reason, a dropped connection with ConnectionLostError, a failure of `output` (an
   * unsafe tar entry, a limit) with that failure.
   */
  private async streamTransfer(
    what: string,
    progress: () => string,
    command: string,
    io: { input?: Readable; output?: Writable },
    signal?: AbortSignal,
  ): Promise<number> {
    let err = '';
    let r: ExecResult;
    try {
      r = await this.exec(command, {
        ...io,
        stderr: (t) => {
          err += t;
        },
        signal,
      });
    } catch (e) {
      io.input?.destroy();
      if (signal?.aborted) throw signal.reason;
      throw await this.transferError(what, e as Error, progress());
    }
    if (r.disconnected) throw new ConnectionLostError(`${what} failed: the SSH connection was lost (${progress()})`);
    if (r.exitCode === 0 || r.exitCode === 3) return r.exitCode;
    const message = err
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .slice(-3)
      .join('; ');
    throw new Error(`${what} failed: ${message || `exit status ${r.exitCode ?? r.signal}`} (${progress()})`);
  }

  /** Uploads one file by SFTP with many write requests in flight (see parallelPut). */
  async uploadFile(
    local: string,
    remote: string,
    mode?: number,
    signal?: AbortSignal,
    onProgress?: TransferProgress,
  ): Promise<void> {
    const total = statSync(local).size;
    let sent = 0;
    const what = `uploading ${local} to ${remote}`;
    const progress = () => `${formatBytes(sent)} of ${formatBytes(total)} sent`;
    signal?.throwIfAborted();
    await this.transfer(
      what,
      progress,
      (sftp, _stream, halt) =>
        parallelPut(sftp, local, remote, total, mode, halt, (n) => {
          sent += n;
          onProgress?.(sent, total);
        }),
      signal,
    );
    this.lastTransferVia = 'SFTP';
  }

  async uploadContent(content: string | Buffer, remote: string, mode = 0o644, signal?: AbortSignal): Promise<void> {
    await this.transfer(
      `writing ${remote}`,
      () => formatBytes(Buffer.byteLength(content)),
      (sftp, stream) =>
        new Promise<void>((resolve, reject) => {
          const ws = stream(sftp.createWriteStream(remote, { mode }));
          ws.on('error', reject);
          ws.on('close', () => resolve());
          ws.end(content);
        }),
      signal,
    );
  }

  /**
   * Uploads a file, or a directory recursively (rsync semantics: "dir" copies the folder, "dir/" its
   * contents). A directory goes as one tar stream into `tar -x` in the guest when it can (its folders
   * made first with the guest's umask, files with their exact modes); otherwise by SFTP, folders first,
   * then files several at a time. `onProgress` counts bytes over all files.
   */
  async upload(local: string, remote: string, signal?: AbortSignal, onProgress?: TransferProgress): Promise<number> {
    const st = statSync(local);
    if (st.isFile()) {
      // "dir/" names a folder to put the file into, as Packer reads it.
      await this.uploadFile(
        local,
        remote.endsWith('/') ? remote + path.basename(local) : remote,
        st.mode & 0o777,
        signal,
        onProgress,
      );
      return 1;
    }
    const target = local.endsWith('/') ? remote : path.posix.join(remote, path.basename(local));
    const tree = walkLocal(local);
    let sent = 0;
    const what = `uploading ${local} to ${remote}`;
    const progress = () => `${formatBytes(sent)} of ${formatBytes(tree.total)} sent`;
    signal?.throwIfAborted();
    const command = extractCommand(target, leafDirectories(tree.dirs.filter((d) => d !== '')));
    if (command.length <= maxCommandLength && (await this.canStream())) {
      const input = packTree(tree, (n) => {
        sent += n;
        onProgress?.(sent, tree.total);
      });
      await this.streamTransfer(what, progress, command, { input }, signal);
      this.lastTransferVia = 'tar stream';
      return tree.files.length;
    }
    const dirs = tree.dirs.map((d) => (d ? path.posix.join(target, d) : target));
    const files = tree.files.map((f) => ({ ...f, remote: path.posix.join(target, f.rel) }));
    await this.transfer(
      what,
      progress,
      async (sftp, _stream, halt) => {
        // An existing folder is fine (rsync semantics); a real failure shows when its files are written.
        for (const d of dirs) {
          halt.throwIfAborted();
          await new Promise<void>((resolve) => sftp.mkdir(d, () => resolve()));
        }
        let next = 0;
        const worker = async () => {
          while (next < files.length) {
            halt.throwIfAborted();
            const f = files[next++]!;
            await parallelPut(sftp, f.local, f.remote, f.size, f.mode, halt, (n) => {
              sent += n;
              onProgress?.(sent, tree.total);
            });
          }
        };
        await Promise.all(Array.from({ length: Math.min(filesInFlight, files.length) }, worker));
      },
      signal,
    );
    this.lastTransferVia = 'SFTP';
    return files.length;
  }

  /** The remote path's attributes, or undefined when SFTP cannot say (the transfer then reports why). */
  private async remoteStat(remote: string): Promise<RemoteStat | undefined> {
    const sftp = await this.sftp().catch(() => undefined);
    if (!sftp) return undefined;
    return new Promise((resolve) => sftp.stat(remote, (err, attrs) => resolve(err ? undefined : attrs)));
  }

  /**
   * Downloads a file, or a directory (as upload: "dir" lands as `local`/dir, "dir/" fills `local`). A
   * `local` ending in "/" or naming an existing folder receives the file under its own name, the
   * folder made if missing (Packer's reading of a trailing slash). Writes beside the destination and
   * renames when complete, so a failure leaves nothing partial (nor the folders kiln made for it).
   * Directories come as a tar stream (`tar -c` in the guest), extracted without letting an entry out of
   * the destination; files by SFTP with many reads in flight (see parallelGet). At most `maxBytes` are
   * written, and no mode the guest should not choose (see download-guard.ts).
   */
  async download(
    remote: string,
    local: string,
    signal?: AbortSignal,
    onProgress?: TransferProgress,
    maxBytes = defaultMaxDownloadBytes,
  ): Promise<void> {
    signal?.throwIfAborted();
    const st = await this.remoteStat(remote);
    const intoFolder = local.endsWith('/') || statSync(local, { throwIfNoEntry: false })?.isDirectory() === true;
    if (st?.isDirectory()) {
      const target = remote.endsWith('/') ? local : path.join(local, path.posix.basename(remote));
      await this.downloadTree(remote, target, signal, onProgress, maxBytes);
      return;
    }
    const dest = intoFolder ? path.join(local, path.posix.basename(remote)) : local;
    const what = `downloading ${remote} to ${dest}`;
    if (st && !st.isFile())
      throw new Error(
        `${what} failed: it is ${kindOf(st)}, not a regular file or a folder, which are all kiln downloads (a device such as /dev/zero never ends)`,
      );
    if (st && st.size > maxBytes)
      throw new DownloadLimitError(
        `${what} failed: ${remote} is ${formatBytes(st.size)}, over the limit of ${formatBytes(maxBytes)}`,
        'bytes',
        maxBytes,
        st.size,
      );
    const made = mkdirSync(path.dirname(path.resolve(dest)), { recursive: true });
    const partial = `${dest}.kiln-partial-${process.pid}`;
    let received = 0;
    try {
      await this.transfer(
        what,
        () => `${formatBytes(received)} received`,
        (sftp, _stream, halt) =>
          parallelGet(
            sftp,
            remote,
            partial,
            halt,
            (n, total) => {
              received += n;
              onProgress?.(received, total);
            },
            maxBytes,
          ),
        signal,
      );
      renameSync(partial, dest);
      this.lastTransferVia = 'SFTP';
    } catch (e) {
      if (made) rmSync(made, { recursive: true, force: true });
      throw e;
    } finally {
      rmSync(partial, { force: true });
    }
  }

  /** A guest folder as one tar stream into `<target>.kiln-partial-<pid>`, then moved into `target`. */
  private async downloadTree(
    remote: string,
    target: string,
    signal: AbortSignal | undefined,
    onProgress: TransferProgress | undefined,
    maxBytes: number,
  ): Promise<void> {
    const what = `downloading ${remote} to ${target}`;
    if (!(await this.canStream()))
      throw new Error(`${what} failed: it is a directory, and the guest has no tar (or no shell) to send it with`);
    const made = mkdirSync(path.dirname(path.resolve(target)), { recursive: true });
    const partial = `${target}.kiln-partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial);
    let received = 0;
    try {
      const { output, folderModes } = extractTo(
        partial,
        (n) => {
          received += n;
          onProgress?.(received, undefined);
        },
        { maxBytes, maxEntries: maxDownloadEntries },
      );
      const extracted = new Promise<void>((resolve, reject) => {
        output.once('close', resolve);
        output.once('error', reject);
      });
      extracted.catch(() => undefined);
      const code = await this.streamTransfer(
        what,
        () => `${formatBytes(received)} received`,
        archiveCommand(remote, true),
        { output },
        signal,
      );
      if (code === 3) throw new Error(`${what} failed: ${remote} is no longer a folder`);
      await extracted;
      await settleInto(partial, target, folderModes);
      this.lastTransferVia = 'tar stream';
    } catch (e) {
      if (made) rmSync(made, { recursive: true, force: true });
      if (signal?.aborted) throw signal.reason;
      if (e instanceof Error && !e.message.startsWith(what)) e.message = `${what} failed: ${e.message}`;
      throw e;
    } finally {
      rmSync(partial, { recursive: true, force: true });
    }
  }

  close(): void {
    this.client.end();
  }
}

/**
 * Connects and waits until the server has sent something (its SSH banner), without consuming it.
 * slirp's port forward accepts a connection before anything in the guest listens, so a bare
 * connect proves nothing; the banner does. Rejects after `timeoutMs` or when the peer hangs up.
 */
export function waitForBanner(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host, port });
    const fail = (e: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
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

const chacha = 'chacha20-poly1305@openssh.com';

/**
 * The ciphers offered, in order: ssh2's defaults with ChaCha20-Poly1305 first when ssh2 has its native
 * binding (without it, ssh2's ChaCha is slow on kiln's side and its default order stands). The guest's
 * end is the slow one: a TCG guest's CPU has no AES-NI, and OpenSSL in the Debian guest under TCG did
 * 51 MB/s of chacha20-poly1305 against 26 MB/s of aes-128-gcm; a 64 MiB upload took 6.9 s against
 * 7.5-8.5 s. A KVM guest has AES-NI and either is far above the link's speed.
 */
export function preferredCiphers(defaults: readonly string[], bindingAvailable: boolean): string[] {
  if (!bindingAvailable || !defaults.includes(chacha)) return [...defaults];
  return [chacha, ...defaults.filter((c) => c !== chacha)];
}

/** ssh2's default cipher list and whether its native crypto binding loaded (undefined: keep ssh2's order). */
const cipherOrder: string[] | undefined = (() => {
  try {
    const require = createRequire(import.meta.url);
    const { DEFAULT_CIPHER } = require('ssh2/lib/protocol/constants.js') as { DEFAULT_CIPHER: string[] };
    const { bindingAvailable } = require('ssh2/lib/protocol/crypto.js') as { bindingAvailable: boolean };
    return preferredCiphers(DEFAULT_CIPHER, bindingAvailable);
  } catch {
    // Another ssh2 layout: its own order is sound, only slower for a TCG guest.
    return undefined;
  }
})();

/** One SSH login over a fresh connection, or over `sock` if one is already open. */
export function connectOnce(target: SshTarget, readyTimeoutMs: number, sock?: net.Socket): Promise<SshSession> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let hostKey = '';
    let mismatch: string | undefined;
    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.username,
      sock,
      privateKey: target.privateKey,
      password: target.password,
      readyTimeout: readyTimeoutMs,
      keepaliveInterval: 5000,
      keepaliveCountMax: 6,
      ...(cipherOrder
        ? { algorithms: { cipher: cipherOrder as NonNullable<ConnectConfig['algorithms']>['cipher'] } }
        : {}),
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
    let cipher: string | undefined;
    client.once('handshake', (negotiated: { cs?: { cipher?: string } }) => {
      cipher = negotiated.cs?.cipher;
    });
    client.once('ready', () => {
      settled = true;
      resolve(new SshSession(client, hostKey, cipher));
    });
    // ssh2 can emit more than one error for a failed attempt; keep a listener for the client's life.
    client.on('error', (e: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(mismatch ? new HostKeyMismatchError(mismatch) : e);
    });
    // A server that hangs up mid-handshake (a connection limit, sshd restarting) makes ssh2 close without
    // an error, and its ready timeout stops with the socket: without this the attempt would never end.
    client.once('close', () => {
      if (settled) return;
      settled = true;
      reject(
        Object.assign(new Error('the SSH server closed the connection during the handshake'), { level: 'handshake' }),
      );
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
  /** Called with each failed attempt's reason and how far it got (for --debug logs). */
  onAttempt?: (n: number, error: Error, outcome: AttemptOutcome) => void;
  /** Stops waiting early (e.g. QEMU exited); returns a reason. */
  abort?: () => string | undefined;
  /**
   * Asked after each refused login: whether anything in the guest may still create the user or
   * authorize the key. Unset, refusals are never taken as final and the wait runs to its timeout.
   */
  loginSetup?: () => LoginSetup;
  /** How long logins must go on being refused, with nothing left to change that, before the wait gives up [30 s]. */
  refusedLoginGraceMs?: number;
}

/**
 * Polls until SSH accepts the login. Host-key mismatches fail at once; refused logins fail once they
 * cannot change any more (see SshAttempts); anything else is retried until the deadline. The
 * SshWaitError it throws keeps every attempt's outcome, so the caller can name the real cause.
 */
export async function waitForSsh(target: SshTarget, opts: WaitOptions): Promise<SshSession> {
  const deadline = Date.now() + opts.timeoutMs;
  const attempts = new SshAttempts(opts.refusedLoginGraceMs ?? 30_000);
  const who = `SSH to ${target.username}@${target.host}:${target.port}`;
  while (Date.now() < deadline) {
    const reason = opts.abort?.();
    if (reason) throw new Error(reason);
    const remaining = deadline - Date.now();
    let bannerSeen = false;
    try {
      const sock = await waitForBanner(
        target.host,
        target.port,
        Math.max(200, Math.min(opts.bannerTimeoutMs ?? 1000, remaining)),
      );
      bannerSeen = true;
      return await connectOnce(
        target,
        Math.max(1000, Math.min(opts.attemptTimeoutMs ?? 30_000, deadline - Date.now())),
        sock,
      );
    } catch (e) {
      if (e instanceof HostKeyMismatchError) throw e;
      const outcome = classifyAttempt(bannerSeen, e as Error);
      const setup = outcome === 'login-refused' ? (opts.loginSetup?.() ?? 'cloud-init-running') : undefined;
      const final = attempts.record(outcome, e as Error, setup, Date.now());
      opts.onAttempt?.(attempts.total, e as Error, outcome);
      if (final) {
        throw new SshWaitError(
          `${who} was refused on every attempt for ${attempts.graceMs / 1000} s, with nothing left in the guest to change that (${attempts.summary()})`,
          attempts,
          'login-refused',
          setup,
        );
      }
    }
    await sleep(opts.retryDelayMs ?? 200);
  }
  throw new SshWaitError(
    `${who} did not succeed within ${Math.round(opts.timeoutMs / 1000)} s (${attempts.summary()})`,
    attempts,
    'timeout',
    opts.loginSetup?.(),
  );
}

/** How far one failed attempt got. A host key mismatch is not one of them: it fails the wait at once. */
export type AttemptOutcome =
  /** No TCP connection, or no SSH banner on it: the guest is not up, its SSH server not running, or the port wrong. */
  | 'no-banner'
  /** A banner, then the key exchange failed, timed out or the server hung up. */
  | 'handshake-failed'
  /** The server refused every credential kiln offered (ssh2 error level "client-authentication"). */
  | 'login-refused';

/** Whether something in the guest may still create the login user or authorize kiln's key. */
export type LoginSetup = 'no-cloud-init' | 'cloud-init-running' | 'cloud-init-finished' | 'installing';

export function classifyAttempt(bannerSeen: boolean, error: Error): AttemptOutcome {
  if (!bannerSeen) return 'no-banner';
  return (error as Error & { level?: string }).level === 'client-authentication' ? 'login-refused' : 'handshake-failed';
}

/**
 * Every failed attempt of one wait, by outcome. Refused logins become final once nothing in the guest
 * can change them (no cloud-init, or cloud-init has finished) and have gone on for `graceMs` since,
 * every attempt refused: an attempt that started just before cloud-init created the user may still
 * have been refused, and sshd may restart under cloud-init.
 */
export class SshAttempts {
  readonly counts: Record<AttemptOutcome, number> = { 'no-banner': 0, 'handshake-failed': 0, 'login-refused': 0 };
  readonly lastErrors: Partial<Record<AttemptOutcome, Error>> = {};
  last?: Error;
  /** When refusals became ones nothing will change; unset while something might, or after another outcome. */
  private finalSince?: number;

  constructor(readonly graceMs: number) {}

  get total(): number {
    return this.counts['no-banner'] + this.counts['handshake-failed'] + this.counts['login-refused'];
  }

  /** The furthest stage any attempt reached: what the failure is about. */
  get furthest(): AttemptOutcome | undefined {
    return (['login-refused', 'handshake-failed', 'no-banner'] as const).find((o) => this.counts[o] > 0);
  }

  /** Records one attempt; true when its refused login is now final. `setup` is asked only of refused logins. */
  record(outcome: AttemptOutcome, error: Error, setup: LoginSetup | undefined, now: number): boolean {
    this.counts[outcome]++;
    this.lastErrors[outcome] = error;
    this.last = error;
    if (outcome !== 'login-refused' || setup === 'cloud-init-running' || setup === 'installing') {
      this.finalSince = undefined;
      return false;
    }
    this.finalSince ??= now;
    return now - this.finalSince >= this.graceMs;
  }

  /** "37 attempts: 3 without an SSH banner, 34 refused login; last error: ..." */
  summary(): string {
    if (this.total === 0) return 'no attempt made';
    const parts = (
      [
        ['no-banner', 'without an SSH banner'],
        ['handshake-failed', 'failed in the SSH handshake'],
        ['login-refused', 'refused login'],
      ] as const
    )
      .filter(([o]) => this.counts[o] > 0)
      .map(([o, what]) => `${this.counts[o] === this.total && this.total > 1 ? 'all' : this.counts[o]} ${what}`);
    return `${this.total} attempt${this.total === 1 ? '' : 's'}: ${parts.join(', ')}; last error: ${this.last!.message}`;
  }
}

/** waitForSsh gave up: at its deadline, or because the guest refuses the login for good. */
export class SshWaitError extends Error {
  constructor(
    message: string,
    readonly attempts: SshAttempts,
    readonly gaveUp: 'timeout' | 'login-refused',
    /** What could still set the login up when the wait gave up (unset: the caller did not say). */
    readonly loginSetup: LoginSetup | undefined,
  ) {
    super(message);
  }
}
