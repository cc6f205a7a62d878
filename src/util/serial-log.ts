/** Reading a VM's serial console log (a file QEMU appends to) for messages. */
import { readFileSync } from 'node:fs';

/** Serial output without terminal escapes and carriage returns, so it reads cleanly in messages and matches. */
export function plainConsole(text: string): string {
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
}

/** The last `lines` non-blank lines of the serial log, or why there are none. */
export function serialTail(file: string | undefined, lines = 30): string {
  if (!file) return '(no serial log)';
  try {
    const text = plainConsole(readFileSync(file, 'utf8'));
    return (
      text
        .split('\n')
        .filter((l) => l.trim())
        .slice(-lines)
        .join('\n') || '(serial console printed nothing)'
    );
  } catch {
    return '(no serial log)';
  }
}
