/** Step: the NoCloud seed, served over HTTP (NoCloud-Net, via SMBIOS) or as a cidata ISO. */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Step } from '../step.js';
import { need, onCachedLayer } from '../state.js';
import { renderSeed, writeSeedIso } from '../../cloudinit/seed.js';
import { resolveSeedDelivery } from '../../cloudinit/delivery.js';
import { interpolateTree } from '../../template/interpolate.js';
import { guestProxyFor, installGuestProxyScript } from '../../provisioners/guest-proxy.js';

const proxyScript = (p: ReturnType<typeof guestProxyFor>) => (p ? installGuestProxyScript(p) : undefined);

export const cloudInitSeedStep: Step = {
  name: 'render cloud-init seed',
  enabled: (ctx) => ctx.build.source.cloud_init !== false,
  async run(ctx) {
    const ci = ctx.build.source.cloud_init;
    if (ci === false) return;
    const comm = ctx.build.source.communicator;
    const buildKey = need(ctx.state, 'buildKey');
    const hostKey = need(ctx.state, 'hostKey');
    const seed = renderSeed({
      hostname: ctx.build.name,
      username: comm.type === 'ssh' ? comm.username : 'kiln',
      authorizedKey: buildKey.publicKey,
      password: comm.type === 'ssh' ? comm.password : undefined,
      hostKey,
      userData: interpolateTree(ci.user_data, { build: ctx.buildValues() }),
      metaData: interpolateTree(ci.meta_data, { build: ctx.buildValues() }),
      wipeOldHostKeys: onCachedLayer(ctx.state),
      rootPartitionGrown: ctx.state.rootPartitionGrown,
      laterStages: ci.later_stages,
      startUserManager: comm.type === 'ssh',
      // --record / --offline: the guest's system proxy from the first boot on (cloud-init's packages:
      // too); only with SSH, through which the guest clean-up takes it out again.
      guestProxyScript:
        comm.type === 'ssh' ? proxyScript(guestProxyFor(ctx.options.airgap, ctx.state.http?.ip)) : undefined,
    });
    ctx.state.cloudInitInstanceId = seed.instanceId;
    ctx.state.cloudInitLaterStagesSkipped = seed.laterStages.skipped;
    if (seed.laterStages.skipped)
      ctx.log(
        "cloud-init: its config and final stages are skipped for the build (the seed gives them nothing to do; the image's first boot runs them); cloud_init.later_stages: always runs them",
      );
    else ctx.log(`cloud-init: its config and final stages run (${seed.laterStages.because})`, 'debug');
    const { delivery, chosen } = resolveSeedDelivery(ci.delivery, ctx.build.source.qemu_args);
    if (chosen)
      ctx.log(`cloud-init: the seed reaches the guest through ${chosen}`, delivery === 'http' ? 'info' : 'debug');
    if (delivery === 'http') {
      // The seed holds the injected host private key and any password, and other local users can
      // reach a loopback port: only this secret prefix keeps them from it. It reaches the guest in
      // an SMBIOS table file (launch-qemu), never QEMU's command line; kiln masks it wherever it
      // prints (request logs, and the seed URL cloud-init writes on the serial console).
      const token = randomBytes(16).toString('hex');
      ctx.events.addSecret(token);
      const prefix = `/kiln-seed-${token}/`;
      const http = need(ctx.state, 'http');
      http.server.addRoute(`${prefix}user-data`, () => seed.userData);
      http.server.addRoute(`${prefix}meta-data`, () => seed.metaData);
      http.server.addRoute(`${prefix}vendor-data`, () => '');
      ctx.state.seed = { kind: 'http', url: `${http.url}${prefix}` };
    } else {
      const iso = path.join(ctx.state.workDir, 'cidata.iso');
      await writeSeedIso(seed, ctx.state.workDir, iso);
      ctx.state.seed = { kind: 'cdrom', iso };
    }
  },
};
