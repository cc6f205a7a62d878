/**
 * A provisioner's output as "output" events, line by line as it arrives, with its last lines kept for
 * the error message and each line handed to an observer (which reads failures out of tool output).
 */
import type { ProvisionerContext } from './context.js';
import { lineSplitter } from './context.js';

export interface StreamedOutput {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Emits trailing partial lines; call once the command has ended. */
  flush(): void;
  /** The last `keep` lines of both streams, in order. */
  recent(): string[];
}

export function streamedOutput(
  ctx: ProvisionerContext,
  label: string,
  observe: (line: string) => void = () => {},
  keep = 10,
): StreamedOutput {
  const last: string[] = [];
  const stream = (name: 'stdout' | 'stderr') =>
    lineSplitter((line) => {
      last.push(line);
      if (last.length > keep) last.shift();
      observe(line);
      ctx.events.emit({ type: 'output', build: ctx.build.name, stream: name, source: label, line });
    });
  const out = stream('stdout');
  const err = stream('stderr');
  return {
    stdout: out.write,
    stderr: err.write,
    flush() {
      out.flush();
      err.flush();
    },
    recent: () => [...last],
  };
}

/** "; its last output:" and the lines, or a note that there were none. */
export function lastOutput(lines: string[]): string {
  return lines.length ? `; its last output:\n${lines.map((l) => `  ${l}`).join('\n')}` : ' (it printed nothing)';
}
