/**
 * The HTTP client of the Glance and OCI targets: node's http/https with the target's connect and idle
 * timeouts on every request (global fetch has neither: a server that accepts and never answers held
 * it for undici's 300 s, then said only "fetch failed"). Answers come back as a web Response.
 * Failures name the address and the cause (ECONNREFUSED, a timeout and which setting), never a
 * URL's query or userinfo. Each request has its own connection (no keep-alive pool), so a timeout
 * armed on a socket never outlives its request.
 */
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { safeUrl } from './redact.js';

export interface Timeouts {
  /** Until the TCP connection is up. */
  connectMs: number;
  /** The longest time with no byte moving either way once connected. */
  idleMs: number;
}

export const defaultTimeouts: Timeouts = { connectMs: 30_000, idleMs: 120_000 };

const seconds = (ms: number) => `${ms % 1000 ? (ms / 1000).toFixed(1) : ms / 1000} s`;

/** A network-level failure: `code` keeps the errno (ECONNRESET, ETIMEDOUT...) so retries can judge it. */
export class NetworkError extends Error {
  constructor(
    message: string,
    readonly code?: string,
    readonly timedOut = false,
  ) {
    super(message);
  }
}

export function connectTimeoutError(origin: string, ms: number): NetworkError {
  return new NetworkError(
    `could not connect to ${origin} within ${seconds(ms)} (timeout.connect)\n  fix: check the address and that the server is up; raise timeout: { connect: ... } in the target for a slow network`,
    'ETIMEDOUT',
    true,
  );
}

export function idleTimeoutError(origin: string, ms: number): NetworkError {
  return new NetworkError(
    `${origin} stopped answering: no bytes moved for ${seconds(ms)} (timeout.idle)\n  fix: check the server; raise timeout: { idle: ... } in the target if it is just slow`,
    'ETIMEDOUT',
    true,
  );
}

/** "cannot reach http://host:port/ (ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1)". */
export function unreachable(url: string | URL, e: unknown): Error {
  // kiln's own failures (a changed artifact failing the body stream, an interrupt) pass as they are.
  if (e instanceof NetworkError || ['PublishError', 'AbortError'].includes((e as Error)?.name)) return e as Error;
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = err?.code ?? err?.cause?.code;
  const detail = err?.cause?.message ?? err?.message ?? String(e);
  return new NetworkError(`cannot reach ${safeUrl(String(url))} (${code ? `${code}: ` : ''}${detail})`, code);
}

export interface RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string | Readable;
  signal: AbortSignal;
  timeouts: Timeouts;
}

/** One request; resolves at the answer's headers, with the body streaming under the same idle timeout. */
export function request(url: string | URL, init: RequestInit): Promise<Response> {
  const u = new URL(url);
  const origin = u.origin;
  const method = init.method ?? 'GET';
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: unknown) => {
      if (!settled) {
        settled = true;
        reject(unreachable(u, e));
      }
    };
    let req: http.ClientRequest;
    try {
      req = mod.request(u, { method, headers: init.headers, signal: init.signal, agent: false }, (res) => {
        clearTimeout(connectTimer);
        const status = res.statusCode ?? 0;
        // A web Response holds 200-599 only; anything else is a broken server, said as such.
        if (status < 200 || status > 599) {
          res.destroy();
          fail(
            new NetworkError(
              `${safeUrl(u.toString())} answered with HTTP status ${status}, which no server should send to ${method}`,
              'EPROTO',
            ),
          );
          return;
        }
        const headers = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          if (Array.isArray(v)) for (const x of v) headers.append(k, x);
          else if (v !== undefined) headers.set(k, v);
        }
        const empty = method === 'HEAD' || status === 204 || status === 304;
        if (empty) res.resume();
        settled = true;
        resolve(
          new Response(empty ? null : (Readable.toWeb(res) as ReadableStream), {
            status,
            statusText: res.statusMessage,
            headers,
          }),
        );
      });
    } catch (e) {
      fail(e);
      return;
    }
    const connectTimer = setTimeout(
      () => req.destroy(connectTimeoutError(origin, init.timeouts.connectMs)),
      init.timeouts.connectMs,
    );
    req.on('socket', (socket) => {
      if (!socket.connecting) clearTimeout(connectTimer);
      else socket.once('connect', () => clearTimeout(connectTimer));
    });
    // Armed once connected; any byte either way restarts it.
    req.setTimeout(init.timeouts.idleMs, () => req.destroy(idleTimeoutError(origin, init.timeouts.idleMs)));
    req.on('error', (e) => {
      clearTimeout(connectTimer);
      fail(e);
    });
    req.on('close', () => clearTimeout(connectTimer));
    const body = init.body;
    if (body instanceof Readable) {
      body.on('error', (e) => req.destroy(e));
      body.pipe(req);
    } else {
      req.end(body);
    }
  });
}

/** The body as text, or '' when it cannot be read (a reset mid-body). */
export async function textOf(res: Response): Promise<string> {
  return res.text().catch(() => '');
}
