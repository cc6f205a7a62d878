/**
 * Typing drivers: the VGA keyboard (QMP send-key, with shift and held modifiers) and the serial
 * console (characters and VT100 sequences written to QEMU's serial socket).
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QmpClient } from '../qemu/qmp.js';
import { keyForChar, modifierKeys, serialSequences, specialKeys } from './keys.js';

export interface TypingDriver {
  text(s: string): Promise<void>;
  key(name: string, action: 'press' | 'down' | 'up'): Promise<void>;
  close(): Promise<void>;
}

export class KeyboardDriver implements TypingDriver {
  private held = new Set<string>();
  constructor(
    private readonly qmp: QmpClient,
    private readonly intervalMs = 20,
  ) {}

  private async send(qcodes: string[]): Promise<void> {
    await this.qmp.execute('send-key', { keys: qcodes.map((data) => ({ type: 'qcode', data })), 'hold-time': 30 });
    await sleep(this.intervalMs);
  }

  async text(s: string): Promise<void> {
    for (const ch of s) {
      const k = keyForChar(ch);
      if (!k) throw new Error(`no key types ${JSON.stringify(ch)} on a US keyboard; use a special key instead`);
      const shift = k.shift && !this.held.has('shift') && !this.held.has('shift_r');
      await this.send([...this.held, ...(shift ? ['shift'] : []), k.qcode]);
    }
  }

  async key(name: string, action: 'press' | 'down' | 'up'): Promise<void> {
    const qcode = specialKeys[name] ?? modifierKeys[name];
    if (!qcode) throw new Error(`unknown key <${name}>`);
    if (action === 'down') this.held.add(qcode);
    else if (action === 'up') this.held.delete(qcode);
    else await this.send([...this.held, qcode]);
  }

  async close(): Promise<void> {
    this.held.clear();
  }
}

export class SerialDriver implements TypingDriver {
  private socket?: net.Socket;
  private held = new Set<string>();
  constructor(
    private readonly socketPath: string,
    private readonly intervalMs = 10,
  ) {}

  private async connection(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(this.socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    this.socket.on('error', () => {
      /* QEMU went away; the next write reports it */
    });
    this.socket.on('data', () => {
      /* output is read from the log file */
    });
    return this.socket;
  }

  private async write(s: string): Promise<void> {
    const sock = await this.connection();
    for (const ch of s) {
      let out = ch === '\n' ? '\r' : ch;
      if ((this.held.has('leftctrl') || this.held.has('rightctrl')) && /^[a-z@[\\\]^_]$/i.test(ch)) {
        out = String.fromCharCode(ch.toUpperCase().charCodeAt(0) & 0x1f);
      }
      if (this.held.has('leftalt') || this.held.has('rightalt')) out = `\x1b${out}`;
      await new Promise<void>((resolve, reject) => sock.write(out, (e) => (e ? reject(e) : resolve())));
      await sleep(this.intervalMs);
    }
  }

  text(s: string): Promise<void> {
    return this.write(s);
  }

  async key(name: string, action: 'press' | 'down' | 'up'): Promise<void> {
    if (modifierKeys[name]) {
      if (action === 'down') this.held.add(name);
      else if (action === 'up') this.held.delete(name);
      return; // a modifier press alone sends nothing on a serial line
    }
    const seq = serialSequences[name];
    if (seq === undefined) throw new Error(`<${name}> has no serial-console equivalent`);
    const sock = await this.connection();
    await new Promise<void>((resolve, reject) => sock.write(seq, (e) => (e ? reject(e) : resolve())));
    await sleep(this.intervalMs);
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (s) await new Promise<void>((resolve) => s.end(() => resolve()));
  }
}
