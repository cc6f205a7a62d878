/** A fake SSH session for step tests: records commands (and their stdin), answers from a script. */
import type { SshSession } from '../../src/communicator/ssh.js';

export interface FakeReply {
  exitCode: number | null;
  stdout?: string;
  stderr?: string;
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
      stdout?: (s: string) => void;
      stderr?: (s: string) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<{ exitCode: number | null }> {
    if (!this.connected) throw new Error('SSH connection is closed');
    this.commands.push({ command, stdin: io.stdin?.toString() });
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
