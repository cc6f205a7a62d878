/**
 * The supply-chain files written beside a build's artifacts: the SBOM as SPDX 2.3 and CycloneDX 1.5
 * JSON, SLSA v1 provenance (an in-toto Statement), and with `sign:` an SSH signature (.sig) over the
 * checksum files, the provenance and both SBOMs. Written into the staging directory, so they are
 * committed with the artifacts or not at all.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BuildConfig } from '../template/schema.js';
import { fileDigest } from '../cache/digest.js';
import { buildInputFiles } from './build-inputs.js';
import type { GuestPackages } from './guest-packages.js';
import { cycloneDxDocument } from './sbom-cyclonedx.js';
import { spdxDocument } from './sbom-spdx.js';
import { provenanceStatement } from './provenance.js';
import { checkSigningKey, signFile, SIGNATURE_NAMESPACE } from './signing.js';
import type { ArtifactRecord, Manifest } from './manifest.js';

/** What the manifest records about these files: `kiln verify` checks them against it. */
export interface SupplyChainRecord {
  spdx: string;
  cyclonedx: string;
  provenance: string;
  /** Every file written here, with its digest (the .sig files too). */
  documents: { name: string; sha256: string }[];
  /** With `sign:`: which key signed, and each signed file with its signature. */
  signed?: { key_fingerprint: string; namespace: string; files: { file: string; signature: string }[] };
  /** The package list came from a cached final layer (no guest booted): that build's, as recorded then. */
  from_cache?: { final_layer: string; packages_recorded_at?: string };
}

/** What the files are made from: the build context, described narrowly (this layer is below the build). */
export interface SupplyChainSource {
  template: { file: string; digest: string };
  build: BuildConfig;
  state: {
    startedAt: Date;
    base?: { source: string; sha256: string; format: string; kind?: 'disk' | 'iso' };
    sbom?: GuestPackages;
    accelerator?: string;
    cpuModel?: string;
    layers?: { artifactKey?: string; finalKey?: string };
    plan?: { resume: { kind: string } };
  };
}

export const supplyChainNames = (build: string) => ({
  spdx: `${build}.spdx.json`,
  cyclonedx: `${build}.cdx.json`,
  provenance: `${build}.provenance.json`,
});

/**
 * Writes the SBOMs and the provenance into `dir` (the staging directory, which already holds the
 * checksum files), signs them with `sign:`, and returns what the manifest records. `artifacts` are all
 * of the build's (those bound for other directories too); `mask` hides secrets in what is written.
 */
export async function writeSupplyChain(
  dir: string,
  src: SupplyChainSource,
  o: {
    artifacts: ArtifactRecord[];
    variables: Manifest['variables'];
    qemuImgVersion: string;
    kilnVersion: string;
    checksumFiles: string[];
    mask: <T>(value: T) => T;
    signal?: AbortSignal;
    /** An offline build's recorded responses the guest fetched (a bundle's package set). */
    recordedPackages?: { url: string; sha256: string }[];
  },
): Promise<SupplyChainRecord> {
  const { build, state } = src;
  // A bad key fails before anything is written (it was checked to exist when the template loaded).
  const signer = build.sign ? checkSigningKey(build.sign.key) : undefined;
  const names = supplyChainNames(build.name);
  const inputs = await buildInputFiles(build);
  const final = state.layers?.finalKey
    ? { key: state.layers.finalKey, fromCache: state.plan?.resume.kind === 'fromFinalLayer' }
    : undefined;
  const fromCache = final?.fromCache ? { finalLayer: final.key } : undefined;
  const sbomInput = {
    build: build.name,
    created: new Date(),
    kilnVersion: o.kilnVersion,
    base: state.base,
    packages: state.sbom,
    files: inputs,
    artifacts: o.artifacts.map((a) => ({ name: a.name, sha256: a.sha256 })),
    fromCache,
  };
  // Digested as written, from the text in hand (not read back from the disk).
  const write = (name: string, doc: unknown) => {
    const text = JSON.stringify(o.mask(doc), null, 2) + '\n';
    writeFileSync(path.join(dir, name), text);
    return { name, sha256: createHash('sha256').update(text).digest('hex') };
  };
  const documents = [write(names.spdx, spdxDocument(sbomInput)), write(names.cyclonedx, cycloneDxDocument(sbomInput))];
  documents.push(
    write(
      names.provenance,
      provenanceStatement({
        build: build.name,
        template: { file: src.template.file, sha256: src.template.digest },
        variables: o.variables,
        base: state.base,
        inputs,
        artifacts: o.artifacts,
        startedAt: state.startedAt,
        finishedAt: new Date(),
        kilnVersion: o.kilnVersion,
        qemuImgVersion: o.qemuImgVersion,
        builderId: `urn:kiln:builder:${os.hostname()}`,
        accelerator: state.accelerator,
        cpuModel: state.cpuModel,
        cache: state.layers ? { artifactKey: state.layers.artifactKey, finalLayer: final } : undefined,
        packages: state.sbom,
        recordedPackages: o.recordedPackages,
        byproducts: [
          { ...documents[0]!, mediaType: 'application/spdx+json' },
          { ...documents[1]!, mediaType: 'application/vnd.cyclonedx+json' },
        ],
      }),
    ),
  );
  const record: SupplyChainRecord = { ...names, documents };
  if (signer) {
    const files: { file: string; signature: string }[] = [];
    for (const name of [...o.checksumFiles, names.provenance, names.spdx, names.cyclonedx]) {
      const sig = await signFile(build.sign!.key, path.join(dir, name), o.signal);
      files.push({ file: name, signature: path.basename(sig) });
      documents.push({ name: path.basename(sig), sha256: await fileDigest(sig) });
    }
    record.signed = { key_fingerprint: signer.fingerprint, namespace: SIGNATURE_NAMESPACE, files };
  }
  if (fromCache)
    record.from_cache = {
      final_layer: fromCache.finalLayer,
      ...(state.sbom?.recordedAt ? { packages_recorded_at: state.sbom.recordedAt } : {}),
    };
  return record;
}
