/**
 * Step: the UEFI variable store as an artifact beside the disk (<build>.efivars.fd): clouds and Proxmox
 * import it with the disk (Secure Boot keys, boot entries). It is the store the build's VM booted and
 * wrote to; a build converted from the layer cache (no VM) gets the store the VM would have started from.
 * Listed in manifest.artifacts (format efi-vars) with its digests, so SHA256SUMS, the provenance and
 * `sign:` cover it, and `kiln verify` checks it.
 */
import { copyFileSync, existsSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { usesUefi } from '../../template/schema.js';
import { EFI_VARS_FORMAT } from '../../template/schema-publish.js';
import { fileDigests } from '../../cache/digest.js';
import { efiVarsFile, firmwareFor } from '../vm.js';
import { variableStoreFor } from '../../qemu/secure-boot.js';

export const efiVarsArtifactName = (build: string) => `${build}.efivars.fd`;

export const efiVarsArtifactStep: Step = {
  name: 'UEFI variable store artifact',
  enabled: (ctx) => usesUefi(ctx.build.source.firmware),
  async run(ctx) {
    const fw = firmwareFor(ctx)!;
    const name = efiVarsArtifactName(ctx.build.name);
    const dst = path.join(need(ctx.state, 'stagingDir'), name);
    const booted = efiVarsFile(ctx.state.workDir);
    if (existsSync(booted)) copyFileSync(booted, dst);
    else writeFileSync(dst, variableStoreFor(fw.varsTemplate, ctx.build.source.secure_boot?.keys));
    const algorithms = [...new Set(['sha256', ...ctx.build.checksums] as const)];
    const digests = await fileDigests(dst, algorithms);
    const size = statSync(dst).size;
    ctx.state.artifacts.push({
      name,
      path: dst,
      format: EFI_VARS_FORMAT,
      size,
      virtualSize: size,
      sha256: digests.sha256!,
      sha512: digests.sha512,
    });
    ctx.log(
      `UEFI variable store: ${name} (${existsSync(booted) ? "the build VM's" : 'fresh from the firmware template'}${ctx.build.source.secure_boot ? ', custom Secure Boot keys' : ''})`,
      'debug',
    );
  },
};
