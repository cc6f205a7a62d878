/**
 * Runs the real kiln CLI in a pseudo-terminal (node-pty), as a user at a terminal would: stdin is a
 * TTY, so prompts, raw mode and Ctrl-C/Ctrl-] behave as they do for people.
 */
import path from 'node:path';
import pty from 'node-pty';
import { repoRoot } from './guest.js';

export interface PtyExit {
  exitCode: number;
  signal?: number;
}

export class KilnTerminal {
  /** Everything printed so far, ANSI colour codes removed. */
  private text = '';
  readonly exited: Promise<PtyExit>;
  private readonly proc: pty.IPty;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.proc = pty.spawn('node', [path.join(repoRoot, 'bin/kiln.js'), ...args], {
      name: 'xterm',
      cols: 200,
      rows: 50,
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: '1', ...env } as Record<string, string>,
    });
    this.proc.onData((d) => {
      this.text += d.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    });
    this.exited = new Promise((resolve) => this.proc.onExit((e) => resolve(e)));
  }

  get pid(): number {
    return this.proc.pid;
  }
  get output(): string {
    return this.text;
  }

  write(keys: string): void {
    this.proc.write(keys);
  }

  /**
   * Waits until `pattern` appears after `from` (an offset into output), and returns its match and the
   * offset just past it, so a caller waits for the next thing only in what comes after.
   */
  async waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<{ match: RegExpExecArray; end: number }> {
    const deadline = Date.now() + timeoutMs;
    let exitedAt: number | undefined;
    void this.exited.then(() => {
      exitedAt = Date.now();
    });
    for (;;) {
      const rest = this.text.slice(from);
      const match = pattern.exec(rest);
      if (match) return { match, end: from + match.index + match[0].length };
      // The last output can arrive just after the exit is reported: look once more before giving up.
      const gone = exitedAt !== undefined && Date.now() - exitedAt > 500;
      if (gone || Date.now() > deadline) {
        throw new Error(
          `${pattern} did not appear${gone ? ' before kiln exited' : ` within ${timeoutMs} ms`}; output:\n${this.text.slice(-3000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  kill(signal = 'SIGKILL'): void {
    try {
      this.proc.kill(signal);
    } catch {
      /* already gone */
    }
  }
}
