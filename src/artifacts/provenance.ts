/**
 * SLSA v1 provenance as an in-toto Statement (v1): the artifacts are the subjects; the predicate names
 * the template and every input by digest, kiln's version, the builder, and the build's start and end.
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import type { InputFile } from './build-inputs.js';
import type { GuestPackages } from './guest-packages.js';

export const IN_TOTO_STATEMENT = 'https://in-toto.io/Statement/v1';
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/** What a kiln build's externalParameters mean (a template file, one build of it). */
export const KILN_BUILD_TYPE = 'urn:kiln:build-type:template-build:v1';

export interface ProvenanceInput {
  build: string;
  template: { file: string; sha256: string };
  /** As the manifest records them: sensitive ones masked. */
  variables: Record<string, string | number | boolean>;
  base?: { source: string; sha256: string; format: string; kind?: 'disk' | 'iso' };
  inputs: InputFile[];
  artifacts: { name: string; sha256: string; sha512?: string }[];
  startedAt: Date;
  finishedAt: Date;
  kilnVersion: string;
  qemuImgVersion: string;
  /** Who ran it: kiln on this host (a local build has no hosted builder identity). */
  builderId: string;
  accelerator?: string;
  cpuModel?: string;
  cache?: { artifactKey?: string; finalLayer?: { key: string; fromCache: boolean } };
  /** The package list, to say whose it is when the build converted a cached disk. */
  packages?: GuestPackages;
  /** The SBOMs written with it, by digest. */
  byproducts: { name: string; sha256: string; mediaType: string }[];
  /** An offline build's recorded package set (kiln bundle): what the guest could fetch, by digest. */
  recordedPackages?: { url: string; sha256: string }[];
}

const uriOf = (p: string) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) ? p : pathToFileURL(p).href);

export function provenanceStatement(o: ProvenanceInput): Record<string, unknown> {
  const dependencies = [
    { name: 'template', uri: uriOf(o.template.file), digest: { sha256: o.template.sha256 } },
    ...(o.base
      ? [
          {
            name: o.base.kind === 'iso' ? 'iso' : 'base_image',
            uri: uriOf(o.base.source),
            digest: { sha256: o.base.sha256 },
            annotations: { format: o.base.format },
          },
        ]
      : []),
    ...o.inputs.map((f) => ({
      name: f.provisioner ? `provisioner ${f.provisioner} ${f.role}` : f.role,
      uri: uriOf(f.hostPath),
      digest: { sha256: f.sha256 },
      ...(f.guestPath ? { annotations: { guest_path: f.guestPath } } : {}),
    })),
    ...(o.recordedPackages ?? []).map((r) => ({ name: 'recorded package', uri: r.url, digest: { sha256: r.sha256 } })),
  ];
  const final = o.cache?.finalLayer;
  return {
    _type: IN_TOTO_STATEMENT,
    subject: o.artifacts.map((a) => ({
      name: a.name,
      digest: { sha256: a.sha256, ...(a.sha512 ? { sha512: a.sha512 } : {}) },
    })),
    predicateType: SLSA_PROVENANCE_V1,
    predicate: {
      buildDefinition: {
        buildType: KILN_BUILD_TYPE,
        externalParameters: { template: o.template.file, build: o.build, variables: o.variables },
        internalParameters: {
          ...(o.accelerator ? { accelerator: o.accelerator } : {}),
          ...(o.cpuModel ? { cpu_model: o.cpuModel } : {}),
          ...(o.cache
            ? {
                layer_cache: {
                  ...(o.cache.artifactKey ? { artifact_key: o.cache.artifactKey } : {}),
                  ...(final ? { final_layer: { key: final.key, from_cache: final.fromCache } } : {}),
                },
              }
            : {}),
          ...(final?.fromCache
            ? {
                converted_from_cache: {
                  note: 'no guest booted: the disk is the final layer another build with these inputs saved; the package list is the one that build read',
                  package_list_recorded_at: o.packages?.recordedAt ?? null,
                  package_list_recorded_by_kiln: o.packages?.kilnVersion ?? null,
                },
              }
            : {}),
        },
        resolvedDependencies: dependencies,
      },
      runDetails: {
        builder: {
          id: o.builderId,
          version: { kiln: o.kilnVersion, 'qemu-img': o.qemuImgVersion, node: process.versions.node },
        },
        metadata: {
          invocationId: `urn:uuid:${randomUUID()}`,
          startedOn: o.startedAt.toISOString(),
          finishedOn: o.finishedAt.toISOString(),
        },
        byproducts: o.byproducts.map((b) => ({ name: b.name, digest: { sha256: b.sha256 }, mediaType: b.mediaType })),
      },
    },
  };
}
