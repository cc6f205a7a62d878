// The boot-config HTTP server step: listens on loopback, serves http_content rendered per request,
// names the guest's address in the state, and its cleanup closes it.
import { afterAll, describe, expect, it } from 'vitest';
import { httpServerStep, HOST_IP_FROM_GUEST } from '../../../../src/build/steps/http-server.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('start HTTP server', () => {
  it('serves http_content with ${build.*} values, and the cleanup stops it', async () => {
    const h = stepContext({ source: { http_content: { '/ks.cfg': 'url ${build.http_url}' } } });
    const { error, cleanup } = await runStep(httpServerStep, h.ctx);
    expect(error).toBeUndefined();
    const http = h.ctx.state.http!;
    expect(http.ip).toBe(HOST_IP_FROM_GUEST);
    expect(http.url).toBe(`http://10.0.2.2:${http.port}`);
    const r = await fetch(`http://127.0.0.1:${http.port}/ks.cfg`);
    expect(await r.text()).toBe(`url http://10.0.2.2:${http.port}`);
    await cleanup!();
    await expect(fetch(`http://127.0.0.1:${http.port}/ks.cfg`)).rejects.toThrow();
  });

  it('offline (air-gapped), the guest reaches it at its own forwarded address', async () => {
    const h = stepContext({
      options: {
        airgap: { proxyHostPort: 1, guestProxy: { ip: '10.0.2.100', port: 3128 }, offline: true, httpIp: '10.0.2.101' },
      },
    });
    const { cleanup } = await runStep(httpServerStep, h.ctx);
    expect(h.ctx.state.http!.url).toBe(`http://10.0.2.101:${h.ctx.state.http!.port}`);
    await cleanup!();
  });
});
