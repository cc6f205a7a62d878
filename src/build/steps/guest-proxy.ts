/**
 * Step: before the first provisioner of a --record or --offline build, kiln's package proxy becomes the
 * guest's system proxy (apt, dnf/yum, /etc/environment, profile.d, sudo's env_keep, systemd: see
 * provisioners/guest-proxy.ts), so `sudo apt-get`, Ansible's become and anything a unit starts fetch
 * through it too. A cloud-init guest got it from the seed's bootcmd already (for its own `packages:`);
 * the script then finds its settings in place and exits. The guest clean-up takes it all out again.
 *
 * An ordinary build that boots a cached layer a --record or --offline build saved (layer keys do not
 * depend on the mode) would find that layer's proxy settings pointing at a proxy that is not there:
 * it takes them out before its provisioners run, unless the layer's record says an ordinary build
 * saved it (no settings to take out: that saves a root shell in the guest, 0.4-0.5 s under TCG).
 *
 * The script goes in on stdin as root (sudo -n for another user), like the clean-up's.
 */
import type { Step } from '../step.js';
import { onCachedLayer, type BuildContext } from '../state.js';
import { sshSession } from '../../provisioners/context.js';
import { guestProxyFor, installGuestProxyScript, removeGuestProxyScript } from '../../provisioners/guest-proxy.js';
import { KilnError } from '../../util/errors.js';

/** The build's guest proxy, when it has one (kiln's HTTP server's guest address goes into no_proxy). */
export const buildGuestProxy = (ctx: BuildContext) => guestProxyFor(ctx.options.airgap, ctx.state.http?.ip);

/** The cached layer the guest runs on was saved by an ordinary build: it holds no proxy settings of kiln's. */
function savedWithoutProxy(ctx: BuildContext): boolean {
  const layers = ctx.state.layers;
  if (!layers || layers.cachedCount === 0) return false;
  const top = layers.plan[layers.cachedCount - 1]?.key;
  return top !== undefined && top !== null && layers.store.meta(top)?.guestProxy === false;
}

export const guestProxyStep: Step = {
  name: 'set the guest proxy',
  // Decided from what is known before the build starts, so the step list the build-start event
  // announces is the list that runs (interrupt tests and progress bars count on it). Whether an
  // ordinary build boots a cached layer is known only once the layer cache was consulted: run()
  // does nothing when it does not.
  enabled: (ctx) =>
    ctx.build.source.communicator.type === 'ssh' && (Boolean(ctx.options.airgap) || !ctx.options.noCache),
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh' || (!ctx.options.airgap && !onCachedLayer(ctx.state))) return;
    const proxy = buildGuestProxy(ctx);
    if (!proxy && savedWithoutProxy(ctx)) {
      ctx.log('guest proxy: none (the cached layer was saved by a build without one)', 'debug');
      return;
    }
    const ssh = await sshSession(ctx);
    let err = '';
    const script = proxy ? installGuestProxyScript(proxy) : removeGuestProxyScript();
    const r = await ssh.exec(comm.username === 'root' ? 'sh -s' : 'sudo -n sh -s', {
      stdin: script,
      stderr: (s) => {
        err += s;
      },
      signal: ctx.signal,
    });
    const said = err.trim().split('\n').filter(Boolean).slice(-5).join('\n');
    if (r.exitCode !== 0) {
      throw proxy
        ? new KilnError(
            `making kiln's package proxy (${proxy.url}) the guest's system proxy failed (exit ${r.exitCode}): ${said || 'no message'}`,
            { fix: 'the build user needs root (root, or sudo without a password), and /etc must be writable' },
          )
        : new KilnError(
            `taking an earlier --record/--offline build's proxy settings out of the guest (a cached layer) failed (exit ${r.exitCode}): ${said || 'no message'}`,
            { fix: 'the build user needs root (root, or sudo without a password); or build with --no-cache' },
          );
    }
    if (said) ctx.log(`guest proxy: ${said}`, 'warn');
    ctx.log(
      proxy
        ? `guest proxy: ${proxy.url} for apt, dnf/yum, /etc/environment, sudo and systemd (no_proxy ${proxy.noProxy.join(',')}); the guest clean-up removes it`
        : 'guest proxy: none (settings a cached layer held, if any, removed)',
      'debug',
    );
  },
};
