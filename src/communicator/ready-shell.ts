/**
 * A guest shell started before the command it will run is known. Every command over SSH pays for its
 * channel, the guest's session set-up (sshd's fork, PAM) and its shells' start before it does anything:
 * 0.3-0.4 s in a guest under TCG, more than a `sync` itself. A ready shell pays that while other work
 * runs (a provisioner, say) and runs its one command at once when given it.
 */
import { PassThrough } from 'node:stream';
import { commandFailed, type ExecResult, type SshSession } from './ssh.js';

/** What a ready shell's channel runs: the login shell, reading the command from stdin. */
export const readyShellCommand = 'exec "${SHELL:-/bin/sh}" -s';

export class ReadyShell {
  private readonly input = new PassThrough();
  private readonly result: Promise<ExecResult | Error>;
  private stdout = '';
  private stderr = '';
  private given = false;
  private settled = false;

  /** Starts the login shell reading its script from stdin; `signal` stops it (killed in the guest) and fails run(). */
  constructor(
    private readonly session: SshSession,
    signal?: AbortSignal,
  ) {
    this.result = session
      .exec(readyShellCommand, {
        input: this.input,
        stdout: (s) => {
          this.stdout += s;
        },
        stderr: (s) => {
          this.stderr += s;
        },
        signal,
      })
      .catch((e: Error) => e)
      .finally(() => {
        this.settled = true;
      });
  }

  /**
   * Whether run() can still use it: not given a command yet, its shell still waiting and its connection
   * open (a provisioner that rebooted the guest took both with it; the caller then runs its command anew).
   */
  get usable(): boolean {
    return !this.given && !this.settled && this.session.connected;
  }

  /** Runs `command` (no stdin: it reads end of file) and returns its stdout; a non-zero exit is an error carrying stderr. */
  async run(command: string): Promise<string> {
    if (this.given) throw new Error('internal: a ready shell runs one command');
    this.given = true;
    this.input.end(`${command}\n`);
    const r = await this.result;
    if (r instanceof Error) throw r;
    if (r.exitCode !== 0) throw commandFailed(command, r, this.stdout, this.stderr);
    return this.stdout;
  }

  /** Ends it unused: its shell reads end of file and exits. */
  cancel(): void {
    if (this.given) return;
    this.given = true;
    this.input.end();
  }

  /** Settles once the shell is gone (after run() or cancel()); never rejects. */
  async done(): Promise<void> {
    await this.result;
  }
}
