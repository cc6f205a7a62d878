/** A fake SSH session for step tests: records commands (and their stdin), answers from a script. */
import type { SshSession } from '../../src/communicator/ssh.js';

export interface FakeReply {
  exitCode: number | null;
  stdout?: string;
  stderr?: string;
  /** With a stream for stdin: answer at once, leaving the stream unread (its shell went away: a reboot). */
  early?: boolean;
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
      /** A stream (a ready shell's script): recorded as stdin once it ends, and the reply given then. */
      input?: AsyncIterable<Buffer | string>;
      stdout?: (s: string) => void;
      stderr?: (s: string) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<{ exitCode: number | null }> {
    if (!this.connected) throw new Error('SSH connection is closed');
    let stdin = io.stdin?.toString();
    const early = io.input ? await this.reply(command) : undefined;
    if (early?.early) {
      this.commands.push({ command });
      return { exitCode: early.exitCode };
    }
    if (io.input) {
      stdin = '';
      for await (const chunk of io.input) stdin += chunk.toString();
    }
    this.commands.push({ command, stdin });
    const r = await this.reply(command);
    if (r.stdout) io.stdout?.(r.stdout);
    if (r.stderr) io.stderr?.(r.stderr);
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
