/**
 * The boot-config HTTP server: serves http_directory, http_content and kiln's own routes (the
 * cloud-init seed) to the guest. Listens on loopback only (slirp maps the guest's 10.0.2.2 to it) and
 * never serves a path outside its directory, through `..` or through a symlink.
 */
import { realpathSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

export interface HttpServerOptions {
  directory?: string;
  content?: Record<string, string>;
  onRequest?: (method: string, url: string, status: number) => void;
}

export class BootConfigServer {
  private readonly routes = new Map<string, () => string | Buffer>();
  private server?: http.Server;
  private root?: string;

  constructor(private readonly opts: HttpServerOptions = {}) {
    for (const [p, body] of Object.entries(opts.content ?? {})) this.addRoute(p, () => body);
    if (opts.directory) this.root = realpathSync(opts.directory);
  }

  /** Routes are resolved at request time, so content can depend on values known later. */
  addRoute(urlPath: string, body: () => string | Buffer): void {
    this.routes.set(urlPath.startsWith('/') ? urlPath : `/${urlPath}`, body);
  }

  async listen(host = '127.0.0.1'): Promise<number> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, host, () => resolve());
    });
    return (this.server.address() as AddressInfo).port;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const send = (status: number, body: string | Buffer, type = 'text/plain') => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
      this.opts.onRequest?.(req.method ?? '?', req.url ?? '', status);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    let urlPath: string;
    try {
      urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      return send(400, 'bad request\n');
    }
    if (urlPath.includes('\0')) return send(400, 'bad request\n');
    const route = this.routes.get(urlPath);
    if (route) return send(200, route());
    if (!this.root) return send(404, 'not found\n');
    const file = this.resolveInRoot(urlPath);
    if (!file) return send(404, 'not found\n');
    // Whatever goes wrong with the file, this request gets an answer and the server keeps serving.
    this.serveFile(req, res, file, send).catch(() => res.destroy());
  }

  /**
   * Serves `file` from one open descriptor, so a file that vanished or became a directory since it was
   * resolved answers 404, and a file that cannot be read answers 500 before any header is sent. A read
   * error after the first chunk can only cut the response short: the connection is dropped.
   */
  private async serveFile(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    file: string,
    send: (status: number, body: string) => void,
  ): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (e) {
      const gone = (e as NodeJS.ErrnoException).code === 'ENOENT';
      return send(gone ? 404 : 500, gone ? 'not found\n' : 'cannot read the file\n');
    }
    try {
      const st = await handle.stat();
      if (!st.isFile()) return send(404, 'not found\n');
      const chunk = Buffer.alloc(1 << 16);
      let first: Buffer;
      try {
        first = chunk.subarray(0, Math.min((await handle.read({ buffer: chunk, position: 0 })).bytesRead, st.size));
      } catch {
        return send(500, 'cannot read the file\n');
      }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': st.size });
      this.opts.onRequest?.(req.method ?? '?', req.url ?? '', 200);
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      if (first.length === st.size) {
        res.end(first);
        return;
      }
      res.write(first);
      // The size sent in the header, even if the file grows meanwhile.
      await pipeline(handle.createReadStream({ start: first.length, end: st.size - 1, autoClose: false }), res);
    } finally {
      await handle.close();
    }
  }

  /** The real path of a request inside the root, or undefined if it is missing or escapes the root. */
  private resolveInRoot(urlPath: string): string | undefined {
    const real = this.realInRoot(path.join(this.root!, path.posix.normalize(urlPath)));
    if (!real) return undefined;
    try {
      const st = statSync(real);
      if (st.isFile()) return real;
      // A directory's index.html is resolved like any request: it may be a symlink out of the root too.
      const index = st.isDirectory() ? this.realInRoot(path.join(real, 'index.html')) : undefined;
      return index && statSync(index).isFile() ? index : undefined;
    } catch {
      return undefined;
    }
  }

  /** `p` with its symlinks resolved, if it exists and is inside the root. */
  private realInRoot(p: string): string | undefined {
    let real: string;
    try {
      real = realpathSync(p);
    } catch {
      return undefined;
    }
    return real === this.root || real.startsWith(this.root! + path.sep) ? real : undefined;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    const s = this.server;
    this.server = undefined;
    s.closeAllConnections?.();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
