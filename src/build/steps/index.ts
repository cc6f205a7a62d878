/** The ordered step list of a build from a base image (cloud image or any bootable disk). */
import type { Step } from '../step.js';
import { fetchBaseStep } from './fetch-base.js';
import { outputDirStep } from './output-dir.js';
import { createDiskStep } from './create-disk.js';
import { httpServerStep } from './http-server.js';
import { sshKeysStep } from './ssh-keys.js';
import { cloudInitSeedStep } from './cloud-init-seed.js';
import { launchQemuStep } from './launch-qemu.js';
import { waitSshStep } from './wait-ssh.js';
import { provisionStep } from './provision.js';
import { cleanGuestStep } from './clean-guest.js';
import { shutdownStep } from './shutdown.js';
import { convertStep } from './convert.js';
import { commitOutputStep } from './commit-output.js';

export const baseImageSteps: Step[] = [
  fetchBaseStep,
  outputDirStep,
  createDiskStep,
  httpServerStep,
  sshKeysStep,
  cloudInitSeedStep,
  launchQemuStep,
  waitSshStep,
  provisionStep,
  cleanGuestStep,
  shutdownStep,
  convertStep,
  commitOutputStep,
];
