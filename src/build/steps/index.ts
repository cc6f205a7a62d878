/**
 * The ordered step list of a build, from a base image (cloud image or any bootable disk) or from an
 * installer ISO; steps that do not apply to a build disable themselves. In groups: build.ts chooses
 * which run from the layer cache's plan (all of them; without the guest steps when the final disk is
 * cached; only those that act on finished outputs when the build is up to date).
 */
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
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
import { warmBaseStep } from './warm-base.js';
import { provisionStep } from './provision.js';
import { guestProxyStep } from './guest-proxy.js';
import { proxyBypassCheckStep } from './proxy-bypass-check.js';
import { cleanGuestScript, cleanGuestStep } from './clean-guest.js';
import { sbomStep } from './sbom.js';
import { compactStep } from './compact.js';
import { shutdownStep } from './shutdown.js';
import { convertStep } from './convert.js';
import { postProcessStep } from './post-process.js';
import { efiVarsArtifactStep } from './efi-vars.js';
import { commitOutputStep } from './commit-output.js';
import { publishStep } from './publish.js';

/** What the steps after provisioning run in the guest: part of the key of the final disk they leave. */
export const finishingScripts = (ctx: Pick<BuildContext, 'build'>) => [
  cleanGuestScript(ctx.build.source.cloud_init !== false),
];

/** Find the base, then consult the layer cache: what they find decides the rest (build.ts's stepsFor). */
export const planSteps: Step[] = [fetchBaseStep, layerCacheStepFor(finishingScripts)];

export { outputDirStep };

/** The steps that need the guest (or make the disk it runs on): not run when the final disk is cached. */
export const guestSteps: Step[] = [
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
  warmBaseStep,
  // --record / --offline: kiln's package proxy is the guest's system proxy before any provisioner.
  guestProxyStep,
  provisionStep,
  proxyBypassCheckStep,
  // The package list runs beside the clean-up and the trim (the shut-down step waits for it).
  sbomStep,
  // Access comes out before the trim, so the blocks of what it deletes are trimmed too; the trim runs
  // in the clean-up's root shell, and its step reports it.
  cleanGuestStep,
  compactStep,
  shutdownStep,
];

/** From the final disk to the outputs: conversion, post-processors, the output directory, publication. */
export const outputSteps: Step[] = [convertStep, postProcessStep, efiVarsArtifactStep, commitOutputStep, publishStep];

/** Every step, in order: a build that starts fresh or resumes at a cached layer. */
export const buildSteps: Step[] = [...planSteps, outputDirStep, ...guestSteps, ...outputSteps];
