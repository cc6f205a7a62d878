/**
 * The boot-config HTTP server: serves http_directory, http_content and kiln's own routes (the
 * cloud-init seed) to the guest. Listens on loopback only (slirp maps the guest's 10.0.2.2 to it) and
 * never serves a path outside its directory, through `..` or through a symlink.
 */
import { createReadStream, realpathSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

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

  get port(): number { return (this.server?.address() as AddressInfo | null)?.port ?? 0; }

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
    } catch { return send(400, 'bad request\n'); }
    if (urlPath.includes('\0')) return send(400, 'bad request\n');
    const route = this.routes.get(urlPath);
    if (route) return send(200, route());
    if (!this.root) return send(404, 'not found\n');
    const file = this.resolveInRoot(urlPath);
    if (!file) return send(404, 'not found\n');
    const size = statSync(file).size;
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size });
    this.opts.onRequest?.(req.method ?? '?', req.url ?? '', 200);
    if (req.method === 'HEAD') { res.end(); return; }
    createReadStream(file).pipe(res);
  }

  /** The real path of a request inside the root, or undefined if it is missing or escapes the root. */
  private resolveInRoot(urlPath: string): string | undefined {
    const candidate = path.join(this.root!, path.posix.normalize(urlPath));
    let real: string;
    try { real = realpathSync(candidate); } catch { return undefined; }
    if (real !== this.root && !real.startsWith(this.root! + path.sep)) return undefined;
    try {
      const st = statSync(real);
      if (st.isFile()) return real;
      if (st.isDirectory()) {
        const index = path.join(real, 'index.html');
        return statSync(index, { throwIfNoEntry: false })?.isFile() ? index : undefined;
      }
    } catch { /* fall through */ }
    return undefined;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    const s = this.server;
    this.server = undefined;
    s.closeAllConnections?.();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
