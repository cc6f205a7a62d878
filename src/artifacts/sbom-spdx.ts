/**
 * The build's SBOM as an SPDX 2.3 JSON document: the base image is the package the document describes,
 * and it CONTAINS every guest package (purl, licences as declared) and every file kiln put in (with
 * SHA-1 and SHA-256).
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { purlOf, spdxLicense } from './guest-packages.js';
import type { SbomInput } from './sbom-input.js';
import { fromCacheNote, guestFiles } from './sbom-input.js';

/** SPDX element ids: letters, digits, "." and "-" after "SPDXRef-". */
const idPart = (s: string) => s.replace(/[^A-Za-z0-9.-]+/g, '-');
/** SPDX dates have no fraction of a second. */
export const spdxDate = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

export function spdxDocument(input: SbomInput): Record<string, unknown> {
  const created = spdxDate(input.created);
  const rootId = 'SPDXRef-BaseImage';
  const base = input.base;
  const root = {
    SPDXID: rootId,
    name: base ? path.basename(base.source) || base.source : `${input.build} (no base image)`,
    downloadLocation: base && /^(https?|ftp):\/\//.test(base.source) ? base.source : 'NOASSERTION',
    filesAnalyzed: false,
    primaryPackagePurpose: 'OPERATING_SYSTEM',
    ...(base ? { checksums: [{ algorithm: 'SHA256', checksumValue: base.sha256 }] } : {}),
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    comment: base
      ? `The ${base.kind === 'iso' ? 'installer ISO' : 'base image'} (${base.format}) of kiln build "${input.build}"; the packages and files below are in its artifacts: ${input.artifacts.map((a) => `${a.name} sha256:${a.sha256}`).join(', ')}`
      : `kiln build "${input.build}"`,
  };
  const refs = new Map<string, string>();
  const inv = input.packages;
  const manager = inv && inv.manager !== 'none' ? inv.manager : undefined;
  const packages = (manager ? inv!.packages : []).map((p, i) => {
    const licence = spdxLicense(p.licenses);
    for (const [ref, name] of licence?.refs ?? []) refs.set(ref, name);
    return {
      SPDXID: `SPDXRef-Package-${manager}-${idPart(p.name)}-${i}`,
      name: p.name,
      versionInfo: p.version,
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: licence?.expression ?? 'NOASSERTION',
      copyrightText: 'NOASSERTION',
      ...(licence
        ? {
            licenseComments: `as the package states it (${manager === 'dpkg' ? `/usr/share/doc/${p.name}/copyright` : 'rpm LICENSE tag'}): ${p.licenses!.join('; ')}`,
          }
        : {}),
      externalRefs: [
        { referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: purlOf(manager!, p, inv!.os) },
      ],
    };
  });
  const files = guestFiles(input.files).map((f, i) => ({
    SPDXID: `SPDXRef-File-${i}`,
    fileName: `.${f.guestPath}`,
    checksums: [
      { algorithm: 'SHA1', checksumValue: f.sha1 },
      { algorithm: 'SHA256', checksumValue: f.sha256 },
    ],
    licenseConcluded: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    comment:
      f.role === 'upload'
        ? `put into the guest by kiln (provisioner ${f.provisioner}, file upload of ${f.hostPath})`
        : `run in the guest by kiln (provisioner ${f.provisioner}, ${f.role} ${f.hostPath}); kiln does not keep it there`,
  }));
  const note = fromCacheNote(input);
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `kiln build ${input.build}`,
    documentNamespace: `https://spdx.org/spdxdocs/kiln-${encodeURIComponent(input.build)}-${randomUUID()}`,
    creationInfo: {
      created,
      creators: [`Tool: kiln-${input.kilnVersion}`],
      ...(note ? { comment: note } : {}),
    },
    documentDescribes: [rootId],
    packages: [root, ...packages],
    ...(files.length ? { files } : {}),
    ...(refs.size
      ? {
          hasExtractedLicensingInfos: [...refs].map(([licenseId, name]) => ({
            licenseId,
            name,
            extractedText: `Licence named "${name}" by the package's own metadata; it has no SPDX identifier.`,
          })),
        }
      : {}),
    relationships: [
      { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: rootId },
      ...packages.map((p) => ({ spdxElementId: rootId, relationshipType: 'CONTAINS', relatedSpdxElement: p.SPDXID })),
      ...files.map((f) => ({ spdxElementId: rootId, relationshipType: 'CONTAINS', relatedSpdxElement: f.SPDXID })),
    ],
    ...(note ? { comment: note } : {}),
  };
}
