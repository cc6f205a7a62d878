/**
 * A small QMP client over a unix socket: JSON lines, one command in flight at a time, events
 * dispatched to listeners. QEMU creates the socket shortly after it starts, so connect() retries;
 * on `quit` or guest poweroff QEMU closes or resets the socket, which ends pending commands cleanly.
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: unknown;
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    message: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${message}`);
  }
}

/** A QMP connection to a running QEMU. */
export interface QmpClient {
  /** Runs one command; commands are serialized so replies match their requests. Rejects with QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  /** Closes the connection; pending and later commands fail. */
  close(): void;
}

/** QmpClient.connect(socketPath): retries until QEMU has created the socket, then negotiates capabilities. */
export const QmpClient = {
  connect: (socketPath: string, timeoutMs = 10_000): Promise<QmpClient> => QmpConnection.connect(socketPath, timeoutMs),
};

/** Emits each QEMU event as 'event' and under its own name. */
class QmpConnection extends EventEmitter implements QmpClient {
  private buffer = '';
  private pending: { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => this.onClose());
    socket.on('close', () => this.onClose());
  }

  static async connect(socketPath: string, timeoutMs: number): Promise<QmpConnection> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(socketPath);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const client = new QmpConnection(socket);
        await client.greeting();
        await client.execute('qmp_capabilities');
        return client;
      } catch (e) {
        if (Date.now() > deadline)
          throw new Error(`could not connect to QMP socket ${socketPath}: ${(e as Error).message}`);
        await sleep(50);
      }
    }
  }

  private greetingWaiter?: { resolve: () => void; reject: (e: Error) => void };
  private greeted = false;
  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted = true;
        this.greetingWaiter?.resolve();
        continue;
      }
      if ('event' in msg) {
        this.emit('event', msg as unknown as QmpEvent);
        this.emit(String(msg.event), msg);
        continue;
      }
      const waiter = this.pending.shift();
      if (!waiter) continue;
      if ('error' in msg) {
        const err = msg.error as { class?: string; desc?: string };
        waiter.reject(new QmpError(waiter.command, err.class ?? 'Error', err.desc ?? 'unknown error'));
      } else {
        waiter.resolve(msg.return);
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('QMP connection closed (QEMU exited)');
    this.greetingWaiter?.reject(err);
    for (const p of this.pending.splice(0)) p.reject(err);
    this.emit('close');
  }

  /** Runs one command; commands are serialized so replies match their requests. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = () =>
      new Promise<T>((resolve, reject) => {
        if (this.closed) {
          reject(new Error(`QMP ${command}: connection closed (QEMU exited)`));
          return;
        }
        this.pending.push({ command, resolve: resolve as (v: unknown) => void, reject });
        this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
      });
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.socket.destroy();
    this.onClose();
  }
}
