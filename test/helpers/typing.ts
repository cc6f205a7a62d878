/**
 * Minimal typing for the fixture tests: characters over the serial console socket, or key presses
 * through QMP send-key. (kiln's own boot-command drivers come with the ISO-install issue.)
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QmpClient } from '../../src/qemu/qmp.js';

export async function waitForText(file: string, pattern: RegExp | string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let text = '';
    try { text = readFileSync(file, 'utf8'); } catch { /* not there yet */ }
    if (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text)) return;
    await sleep(100);
  }
  throw new Error(`"${pattern}" did not appear in ${file} within ${timeoutMs} ms; last output:\n${(() => { try { return readFileSync(file, 'utf8').slice(-1500); } catch { return ''; } })()}`);
}

export async function typeOnSerial(socketPath: string, text: string): Promise<void> {
  const s = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
  for (const ch of text) { s.write(ch); await sleep(5); }
  await sleep(100);
  s.end();
}

const shifted: Record<string, string> = { ':': 'semicolon', '_': 'minus', '"': 'apostrophe', '?': 'slash', '+': 'equal' };
const plain: Record<string, string> = {
  ' ': 'spc', '/': 'slash', '.': 'dot', '=': 'equal', ',': 'comma', '-': 'minus', ';': 'semicolon', '\n': 'ret',
};

export async function typeOnKeyboard(qmp: QmpClient, text: string): Promise<void> {
  for (const ch of text) {
    let keys: string[];
    if (/[a-z0-9]/.test(ch)) keys = [ch];
    else if (/[A-Z]/.test(ch)) keys = ['shift', ch.toLowerCase()];
    else if (plain[ch]) keys = [plain[ch]!];
    else if (shifted[ch]) keys = ['shift', shifted[ch]!];
    else throw new Error(`test typing has no key for ${JSON.stringify(ch)}`);
    await qmp.execute('send-key', { keys: keys.map((k) => ({ type: 'qcode', data: k })) });
    await sleep(10);
  }
}
