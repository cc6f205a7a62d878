/** A fake SSH session for step tests: records commands (and their stdin), answers from a script. */
import type { Readable } from 'node:stream';
import type { SshSession } from '../../src/communicator/ssh.js';

export interface FakeReply {
  exitCode: number | null;
  stdout?: string;
  stderr?: string;
  /**
   * A command fed through `input` (a shell reading its commands) that stays open: stdout and stderr
   * above come once its first input arrived, then it waits for the input's end and answers this.
   */
  untilInputEnds?: FakeReply;
}

export class FakeSsh {
  commands: { command: string; stdin?: string }[] = [];
  connected = true;
  private closeIt!: () => void;
  readonly closed = new Promise<void>((resolve) => {
    this.closeIt = resolve;
  });
  readonly hostKey = 'ssh-ed25519 SHA256:fake';

  constructor(private readonly reply: (command: string) => FakeReply | Promise<FakeReply> = () => ({ exitCode: 0 })) {}

  async exec(
    command: string,
    io: {
      stdin?: string | Buffer;
      input?: Readable;
      stdout?: (s: string) => void;
      stderr?: (s: string) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<{ exitCode: number | null }> {
    if (!this.connected) throw new Error('SSH connection is closed');
    const record: { command: string; stdin?: string } = { command, stdin: io.stdin?.toString() };
    this.commands.push(record);
    let inputEnded: Promise<void> | undefined;
    if (io.input) {
      const input = io.input;
      record.stdin = '';
      inputEnded = new Promise((resolve) => input.once('end', () => resolve()));
      const first = new Promise<void>((resolve) => input.once('data', () => resolve()));
      input.on('data', (d: Buffer) => {
        record.stdin += d.toString();
      });
      await first;
    }
    const r = await this.reply(command);
    if (r.stdout) io.stdout?.(r.stdout);
    if (r.stderr) io.stderr?.(r.stderr);
    if (r.untilInputEnds && inputEnded) {
      await inputEnded;
      const last = r.untilInputEnds;
      if (last.stdout) io.stdout?.(last.stdout);
      if (last.stderr) io.stderr?.(last.stderr);
      return { exitCode: last.exitCode };
    }
    return { exitCode: r.exitCode };
  }

  async run(command: string): Promise<string> {
    let out = '';
    const r = await this.exec(command, {
      stdout: (s) => {
        out += s;
      },
    });
    if (r.exitCode !== 0) throw new Error(`${command} exited with ${r.exitCode}`);
    return out;
  }

  close(): void {
    this.connected = false;
    this.closeIt();
  }

  /** As the state's SshSession (the steps use exec, run, close, connected, closed). */
  get session(): SshSession {
    return this as unknown as SshSession;
  }
}
