/**
 * The build's SBOM as a CycloneDX 1.5 JSON BOM: the base image is metadata.component (the root), and
 * depends on every guest package (purl, licences as one SPDX expression) and every file kiln put in.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { purlOf, spdxLicense } from './guest-packages.js';
import type { SbomInput } from './sbom-input.js';
import { fromCacheNote, guestFiles } from './sbom-input.js';

export function cycloneDxDocument(input: SbomInput): Record<string, unknown> {
  const base = input.base;
  const rootRef = 'base-image';
  const root = {
    type: base?.kind === 'iso' ? 'file' : 'operating-system',
    'bom-ref': rootRef,
    name: base ? path.basename(base.source) || base.source : `${input.build} (no base image)`,
    ...(base ? { hashes: [{ alg: 'SHA-256', content: base.sha256 }] } : {}),
    ...(base && /^(https?|ftp):\/\//.test(base.source)
      ? { externalReferences: [{ type: 'distribution', url: base.source }] }
      : {}),
    properties: [
      ...(base
        ? [
            { name: 'kiln:base:source', value: base.source },
            { name: 'kiln:base:format', value: base.format },
          ]
        : []),
    ],
  };
  const inv = input.packages;
  const manager = inv && inv.manager !== 'none' ? inv.manager : undefined;
  const refs = new Set<string>();
  const unique = (ref: string) => {
    let r = ref;
    for (let n = 2; refs.has(r); n++) r = `${ref}#${n}`;
    refs.add(r);
    return r;
  };
  const packages = (manager ? inv!.packages : []).map((p) => {
    const purl = purlOf(manager!, p, inv!.os);
    const licence = spdxLicense(p.licenses);
    return {
      type: 'library',
      'bom-ref': unique(purl),
      name: p.name,
      version: p.version,
      purl,
      ...(licence ? { licenses: [{ expression: licence.expression }] } : {}),
      properties: [
        { name: 'kiln:package-manager', value: manager! },
        ...(p.arch ? [{ name: 'kiln:arch', value: p.arch }] : []),
      ],
    };
  });
  const files = guestFiles(input.files).map((f) => ({
    type: 'file',
    'bom-ref': unique(`file:${f.guestPath}`),
    name: f.guestPath,
    hashes: [
      { alg: 'SHA-1', content: f.sha1 },
      { alg: 'SHA-256', content: f.sha256 },
    ],
    properties: [
      {
        name: 'kiln:role',
        value: f.role === 'upload' ? 'uploaded by kiln' : `${f.role} run by kiln (not kept in the guest)`,
      },
      { name: 'kiln:provisioner', value: String(f.provisioner) },
      { name: 'kiln:host-path', value: f.hostPath },
    ],
  }));
  const note = fromCacheNote(input);
  return {
    bomFormat: 'CycloneDX',
    specVersion: '1.5',
    serialNumber: `urn:uuid:${randomUUID()}`,
    version: 1,
    metadata: {
      timestamp: input.created.toISOString(),
      tools: { components: [{ type: 'application', name: 'kiln', version: input.kilnVersion }] },
      component: root,
      properties: [
        { name: 'kiln:build', value: input.build },
        ...input.artifacts.map((a) => ({ name: 'kiln:artifact', value: `${a.name} sha256:${a.sha256}` })),
        ...(note ? [{ name: 'kiln:from-cache', value: note }] : []),
      ],
    },
    components: [...packages, ...files],
    dependencies: [{ ref: rootRef, dependsOn: [...packages, ...files].map((c) => c['bom-ref']) }],
  };
}
