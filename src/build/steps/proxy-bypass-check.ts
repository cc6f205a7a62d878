/**
 * Step: after the provisioners of a --record or --offline build, the serial console is read for what
 * provisioners' output cannot show: cloud-init's own `packages:` and systemd units failing to resolve a
 * name. The guest has no DNS in these builds (QEMU restrict=on), so such a line is a fetch that went
 * around kiln's proxy: recorded it was not, and offline it fails the same way. The build fails naming
 * the lines rather than leaving a recording that looks complete.
 */
import { readFileSync } from 'node:fs';
import type { Step } from '../step.js';
import { nameFailures, bypassFix } from '../../provisioners/proxy-bypass.js';
import { plainConsole } from '../../util/serial-log.js';

export const proxyBypassCheckStep: Step = {
  name: 'check the guest fetched through the proxy',
  // Whether a step runs is decided before the build starts: the serial log is known only at launch.
  enabled: (ctx) => Boolean(ctx.options.airgap),
  async run(ctx) {
    if (!ctx.state.serialLog) return;
    let text = '';
    try {
      text = plainConsole(readFileSync(ctx.state.serialLog, 'utf8'));
    } catch {
      return;
    }
    const lines = nameFailures(text);
    if (!lines.length) return;
    const proxy = `http://${ctx.options.airgap!.guestProxy.ip}:${ctx.options.airgap!.guestProxy.port}`;
    throw new Error(
      `the guest's console (${ctx.state.serialLog}) shows a name that did not resolve, i.e. a fetch that went around kiln's package proxy (by cloud-init or a service, not a provisioner):\n${lines.map((l) => `    ${l}`).join('\n')}\n` +
        `  in a --record or --offline build the guest reaches only kiln's proxy (${proxy}) and kiln's HTTP server, so that fetch can be neither recorded nor replayed\n${bypassFix(proxy)}`,
    );
  },
};
