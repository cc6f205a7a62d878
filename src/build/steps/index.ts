/**
 * The ordered step list of a build, from a base image (cloud image or any bootable disk) or from an
 * installer ISO; steps that do not apply to a build disable themselves.
 */
import type { Step } from '../step.js';
import { convertsFromCache, type BuildContext } from '../state.js';
import { fetchBaseStep } from './fetch-base.js';
import { layerCacheStepFor } from './layer-cache.js';
import { outputDirStep } from './output-dir.js';
import { createDiskStep } from './create-disk.js';
import { httpServerStep } from './http-server.js';
import { sshKeysStep } from './ssh-keys.js';
import { cloudInitSeedStep } from './cloud-init-seed.js';
import { launchQemuStep } from './launch-qemu.js';
import { installMediaStep } from './install-media.js';
import { bootCommandStep } from './boot-command.js';
import { waitInstallStep } from './wait-install.js';
import { waitSshStep } from './wait-ssh.js';
import { restoredGuestStep } from './restored-guest.js';
import { provisionStep } from './provision.js';
import { guestProxyStep } from './guest-proxy.js';
import { proxyBypassCheckStep } from './proxy-bypass-check.js';
import { cleanGuestScript, cleanGuestStep } from './clean-guest.js';
import { sbomStep } from './sbom.js';
import { compactStep } from './compact.js';
import { shutdownStep } from './shutdown.js';
import { convertStep } from './convert.js';
import { postProcessStep } from './post-process.js';
import { commitOutputStep } from './commit-output.js';
import { publishStep } from './publish.js';

/**
 * A step that needs the guest (or makes the disk it runs on): off when the layer cache holds the
 * build's final disk, since the outputs are then converted from it without booting.
 */
const needsGuest = (step: Step): Step => ({ ...step, enabled: (ctx) => !convertsFromCache(ctx) && (step.enabled?.(ctx) ?? true) });

/** What the steps after provisioning run in the guest: part of the key of the final disk they leave. */
export const finishingScripts = (ctx: Pick<BuildContext, 'build'>) => [cleanGuestScript(ctx.build.source.cloud_init !== false)];

export const buildSteps: Step[] = [
  fetchBaseStep,
  layerCacheStepFor(finishingScripts),
  outputDirStep,
  ...[
    createDiskStep,
    httpServerStep,
    sshKeysStep,
    cloudInitSeedStep,
    installMediaStep,
    launchQemuStep,
    bootCommandStep,
    waitInstallStep,
    waitSshStep,
    restoredGuestStep,
    // --record / --offline: kiln's package proxy is the guest's system proxy before any provisioner.
    guestProxyStep,
    provisionStep,
    proxyBypassCheckStep,
    sbomStep,
    // Access comes out before the trim, so the blocks of what it deletes are trimmed too.
    cleanGuestStep,
    compactStep,
    shutdownStep,
  ].map(needsGuest),
  convertStep,
  postProcessStep,
  commitOutputStep,
  publishStep,
];
