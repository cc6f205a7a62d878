/** Executes a parsed boot command through a typing driver, waiting on the serial console for <waitFor>. */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BootNode } from './parse.js';
import type { TypingDriver } from './drivers.js';

/** Serial output as a person would read it: terminal escape sequences and carriage returns removed. */
export function readableConsole(raw: string): string {
  return raw.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]/g, '').replace(/\r/g, '');
}

/**
 * Waits for a pattern in the serial log after `cursor` and returns the new cursor (just past the
 * match), so two <waitFor "login:"> in a row wait for two different prompts.
 */
export async function waitForConsole(
  logFile: string,
  pattern: string | RegExp,
  cursor: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      text = readableConsole(readFileSync(logFile, 'latin1'));
    } catch {
      /* not created yet */
    }
    const tail = text.slice(cursor);
    if (typeof pattern === 'string') {
      const at = tail.indexOf(pattern);
      if (at >= 0) return cursor + at + pattern.length;
    } else {
      const m = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(tail);
      if (m) return cursor + m.index + m[0].length;
    }
    if (Date.now() > deadline) {
      const last = text
        .split('\n')
        .filter((l) => l.trim())
        .slice(-15)
        .join('\n');
      throw new Error(
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${typeof pattern === 'string' ? JSON.stringify(pattern) : pattern} on the serial console; last lines:\n${last || '(nothing)'}`,
      );
    }
    if (signal?.aborted) throw signal.reason as Error;
    await sleep(100);
  }
}

export interface RunBootCommandOptions {
  serialLog: string;
  render: (text: string) => string;
  signal?: AbortSignal;
  onNode?: (node: BootNode, line: number) => void;
}

export async function runBootCommand(
  lines: BootNode[][],
  driver: TypingDriver,
  o: RunBootCommandOptions,
): Promise<void> {
  let cursor = 0;
  try {
    for (const [index, nodes] of lines.entries()) {
      for (const node of nodes) {
        if (o.signal?.aborted) throw o.signal.reason as Error;
        o.onNode?.(node, index);
        switch (node.kind) {
          case 'text':
            await driver.text(o.render(node.text));
            break;
          case 'key':
            await driver.key(node.key, node.action);
            break;
          case 'wait':
            await sleep(node.ms, undefined, { signal: o.signal });
            break;
          case 'waitFor':
            cursor = await waitForConsole(o.serialLog, node.pattern, cursor, node.timeoutMs, o.signal);
            break;
        }
      }
    }
  } finally {
    await driver.close();
  }
}
