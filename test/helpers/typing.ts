/** Waiting for text in a guest's serial console log (a file the test's QEMU writes). */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export async function waitForText(file: string, pattern: RegExp | string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      /* not there yet */
    }
    if (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text)) return;
    await sleep(100);
  }
  throw new Error(
    `"${pattern}" did not appear in ${file} within ${timeoutMs} ms; last output:\n${(() => {
      try {
        return readFileSync(file, 'utf8').slice(-1500);
      } catch {
        return '';
      }
    })()}`,
  );
}
