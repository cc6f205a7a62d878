/**
 * kiln's package proxy: a plain-HTTP forward proxy (absolute-URI requests) the guest reaches through a
 * QEMU guestfwd. Recording forwards each GET to the real server, answers the guest and keeps the body
 * by digest; replay answers from the recorded set only, and a URL it does not hold is answered at once
 * with an error and reported (the build fails naming it). HTTPS CONNECT tunnels cannot be recorded:
 * they are refused and reported; while recording that is fatal (onFatal), since the recording would
 * silently lack whatever went through HTTPS and the offline build would fail much later. Requests for
 * kiln's own addresses (its HTTP server) are neither recorded nor replayed: the guest must reach them
 * directly (no_proxy). No request can crash kiln: an error while answering becomes a 502 and is recorded.
 */
import http from 'node:http';
import type net from 'node:net';
import { createReadStream } from 'node:fs';
import { PackageStore, keptHeaders } from './store.js';

export type ProxyMode = 'record' | 'replay';

export interface ProxyEvents {
  /** A request was answered (from upstream while recording, or from the set on replay). */
  onServed?: (url: string, status: number, from: 'upstream' | 'recording') => void;
  /** Replay: the recorded set has no answer for this URL. */
  onMiss?: (url: string) => void;
  /** A request kiln cannot serve or record (CONNECT, a non-GET method, an origin-form URL). */
  onRefused?: (what: string, why: string) => void;
  /** Something that makes the build's result wrong (recording: an HTTPS CONNECT): the caller fails the build with it. */
  onFatal?: (error: Error) => void;
  /** kiln's own guest-visible hosts (its HTTP server): never forwarded, recorded or replayed. */
  kilnHosts?: string[];
}

/** Recording: the guest opened an HTTPS tunnel, whose content kiln cannot see, so the recording would be incomplete. */
export class RecordingHttpsError extends Error {
  constructor(readonly host: string) {
    super(
      `the guest fetched https://${host}/ through kiln's package proxy while recording: HTTPS is an opaque tunnel that cannot be recorded, so an offline build would miss it\n  fix: point the guest at an http:// mirror of ${host.replace(/:443$/, '')} (apt and dnf verify packages by their signatures, not by TLS), then record again`,
    );
  }
}

/** Request headers that would make the upstream answer differ from a plain full GET (kept out while recording). */
const conditionalHeaders = new Set([
  'if-modified-since',
  'if-none-match',
  'if-range',
  'range',
  'if-unmodified-since',
  'proxy-connection',
  'proxy-authorization',
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
]);

export class PackageProxy {
  private server: http.Server;
  private sockets = new Set<net.Socket>();
  readonly misses: string[] = [];
  /** Replayed responses, by URL and body digest: an offline build's provenance names them. */
  readonly served: { url: string; sha256: string }[] = [];
  readonly refused: string[] = [];
  /** Errors raised while answering a request (answered 502); a test's way to see that none went unhandled. */
  readonly errors: string[] = [];
  /** Recordings still being written: close() waits for them, so index.json lists complete bodies only. */
  private pending = new Set<Promise<unknown>>();

  constructor(
    readonly mode: ProxyMode,
    readonly store: PackageStore,
    private events: ProxyEvents = {},
  ) {
    this.server = http.createServer((req, res) => {
      // Never a floating promise: a rejection here would be unhandled and take kiln down mid-build.
      this.handle(req, res).catch((e: unknown) => this.failed(req, res, e));
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('connect', (req: http.IncomingMessage, socket: net.Socket) => {
      const why =
        "HTTPS (CONNECT) goes through kiln's proxy as an opaque tunnel and cannot be recorded or replayed; use an http:// mirror in the guest";
      this.refused.push(`CONNECT ${req.url}`);
      this.events.onRefused?.(`CONNECT ${req.url}`, why);
      if (this.mode === 'record')
        this.events.onFatal?.(
          new RecordingHttpsError(
            String(req.url ?? '')
              .replace(/[^\w.:[\]-]/g, '?')
              .slice(0, 200),
          ),
        );
      socket.on('error', () => {});
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nkiln: ${why}\n`);
    });
  }

  async listen(host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.mode === 'record') this.store.save();
  }

  private refuse(res: http.ServerResponse, what: string, status: number, why: string): void {
    this.refused.push(what);
    this.events.onRefused?.(what, why);
    res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' }).end(`kiln: ${why}\n`);
  }

  /** An error while answering: a 502 (or a cut connection once the answer started), recorded and reported. */
  private failed(req: http.IncomingMessage, res: http.ServerResponse, e: unknown): void {
    const what = `${req.method ?? 'GET'} ${req.url ?? ''}`;
    const why = `kiln's package proxy failed answering it: ${(e as Error)?.message ?? String(e)}`;
    this.errors.push(`${what}: ${why}`);
    this.refused.push(what);
    this.events.onRefused?.(what, why);
    try {
      if (!res.headersSent)
        res
          .writeHead(502, { 'content-type': 'text/plain', connection: 'close' })
          .end(`kiln: ${why.replace(/[^\x20-\x7e]/g, '?')}\n`);
      else res.destroy();
    } catch {
      res.destroy();
    }
  }

  private isKilnHost(url: string): boolean {
    try {
      return (this.events.kilnHosts ?? []).includes(new URL(url).hostname);
    } catch {
      return false;
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const method = req.method ?? 'GET';
    if (/^https:\/\//i.test(url) && this.mode === 'record') {
      // A client that sends https:// URLs to the proxy as is (no CONNECT): just as unrecordable.
      let host = '?';
      try {
        host = new URL(url).host;
      } catch {
        /* unparsable: still refused */
      }
      this.refuse(
        res,
        `${method} ${url}`,
        403,
        `https:// cannot be recorded or replayed; use an http:// mirror in the guest`,
      );
      this.events.onFatal?.(new RecordingHttpsError(host));
      return;
    }
    if (!/^http:\/\//i.test(url)) {
      this.refuse(
        res,
        `${method} ${url}`,
        400,
        `kiln's package proxy takes absolute http:// URLs (a proxy request), not "${url}"`,
      );
      return;
    }
    if (this.isKilnHost(url)) {
      this.refuse(
        res,
        `${method} ${url}`,
        502,
        `${url} is kiln's own HTTP server, which the guest reaches directly, not through the package proxy: it is neither recorded nor in a bundle; the guest's no_proxy must list ${new URL(url).hostname} (kiln sets no_proxy for shell provisioners; busybox wget ignores no_proxy: use wget -Y off)`,
      );
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      this.refuse(res, `${method} ${url}`, 405, `only GET and HEAD can be recorded and replayed, not ${method} ${url}`);
      return;
    }
    if (this.mode === 'replay') this.replay(url, method, res);
    else {
      const p = this.record(url, method, req, res);
      this.pending.add(p);
      await p.finally(() => this.pending.delete(p));
    }
  }

  private replay(url: string, method: string, res: http.ServerResponse): void {
    const hit = this.store.lookup(url);
    if (!hit) {
      this.misses.push(url);
      this.events.onMiss?.(url);
      res.statusMessage = 'Not In Kiln Bundle';
      res
        .writeHead(404, { 'content-type': 'text/plain', 'x-kiln-airgap': 'miss' })
        .end(
          `kiln: ${url} is not in the recorded package set; record the build again (kiln build --record) and rebuild the bundle\n`,
        );
      return;
    }
    // blobPath checks the digest's form again; writeHead refuses a header with CR LF: both throw before anything is sent.
    const blob = this.store.blobPath(hit.sha256);
    res.writeHead(hit.status, { ...hit.headers, 'content-length': String(hit.size), 'x-kiln-airgap': 'hit' });
    this.events.onServed?.(url, hit.status, 'recording');
    if (!this.served.some((s) => s.url === url)) this.served.push({ url, sha256: hit.sha256 });
    if (method === 'HEAD') {
      res.end();
      return;
    }
    createReadStream(blob)
      .on('error', (e) => {
        this.errors.push(`${method} ${url}: ${e.message}`);
        res.destroy();
      })
      .pipe(res);
  }

  private record(url: string, method: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    return new Promise<void>((resolve) => {
      const headers: http.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(req.headers))
        if (!conditionalHeaders.has(k) && v !== undefined) headers[k] = v;
      // Always a full GET upstream: a HEAD's later GET then finds the body recorded.
      const up = http.request(url, { method: 'GET', headers }, (upRes) => {
        try {
          const status = upRes.statusCode ?? 502;
          const kept: Record<string, string> = {};
          for (const h of keptHeaders) {
            const v = upRes.headers[h];
            if (typeof v === 'string') kept[h] = v;
          }
          const length = upRes.headers['content-length'];
          res.writeHead(status, { ...kept, ...(length ? { 'content-length': length } : {}) });
          if (status >= 500) {
            // A server error is not an answer worth replaying.
            upRes.pipe(res);
            upRes.on('end', resolve);
            upRes.on('error', () => resolve());
            return;
          }
          this.store
            .add(url, status, kept, upRes, method === 'HEAD' ? undefined : (chunk) => res.write(chunk))
            .then(() => {
              this.events.onServed?.(url, status, 'upstream');
              res.end();
            })
            .catch((e: Error) => {
              res.destroy(e);
            })
            .finally(resolve);
        } catch (e) {
          // An exception in this callback would be uncaught: answer 502 instead.
          upRes.destroy();
          this.failed(req, res, e);
          resolve();
        }
      });
      up.on('error', (e) => {
        this.refused.push(`${method} ${url}`);
        this.events.onRefused?.(`${method} ${url}`, `the upstream server did not answer: ${e.message}`);
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`kiln: ${url}: ${e.message}\n`);
        else res.destroy();
        resolve();
      });
      req.on('aborted', () => up.destroy());
      up.end();
    });
  }
}
