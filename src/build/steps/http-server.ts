/** Step: the boot-config HTTP server on loopback (the guest sees it as 10.0.2.2). */
import type { Step } from '../step.js';
import { BootConfigServer } from '../../http/server.js';
import { interpolateString } from '../../template/interpolate.js';

/** slirp's address for the host, as seen from the guest. */
export const HOST_IP_FROM_GUEST = '10.0.2.2';

export const httpServerStep: Step = {
  name: 'start HTTP server',
  async run(ctx) {
    const src = ctx.build.source;
    // http_content is rendered per request: it may use ${build.*} values that exist only later.
    const server = new BootConfigServer({
      directory: src.http_directory,
      onRequest: (method, url, status) => ctx.log(`http: ${method} ${url} -> ${status}`, 'debug'),
    });
    for (const [p, body] of Object.entries(src.http_content)) {
      server.addRoute(p, () => String(interpolateString(body, { build: ctx.buildValues() })));
    }
    const port = await server.listen('127.0.0.1');
    // --record / --offline (QEMU restrict=on) the guest reaches the server through a forward of its own address.
    const ip = ctx.options.airgap ? ctx.options.airgap.httpIp : HOST_IP_FROM_GUEST;
    ctx.state.http = { server, port, ip, url: `http://${ip}:${port}` };
    ctx.log(`http server on 127.0.0.1:${port} (guest: ${ctx.state.http.url})`, 'debug');
    return () => server.close();
  },
};
