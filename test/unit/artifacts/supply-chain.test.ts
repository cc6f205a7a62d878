// SBOMs (SPDX 2.3, CycloneDX 1.5) valid against the official schemas, licences as valid SPDX
// expressions, purls, provenance naming every input by digest, and signing + kiln verify with real
// ssh-keygen: a byte changed in an artifact, an SBOM or a signature, and an unknown signer, each named.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { purlOf, spdxLicense } from '../../../src/artifacts/guest-packages.js';
import { spdxDocument } from '../../../src/artifacts/sbom-spdx.js';
import { cycloneDxDocument } from '../../../src/artifacts/sbom-cyclonedx.js';
import type { SbomInput } from '../../../src/artifacts/sbom-input.js';
import { parsePackageList } from '../../../src/build/steps/sbom.js';
import { writeSupplyChain, type SupplyChainSource } from '../../../src/artifacts/supply-chain.js';
import { buildManifest, writeSums, type ArtifactRecord } from '../../../src/artifacts/manifest.js';
import { verifyManifest } from '../../../src/artifacts/verify.js';
import { checkSigningKey, SigningError } from '../../../src/artifacts/signing.js';
import { provenanceStatement } from '../../../src/artifacts/provenance.js';
import { buildSpec } from '../../../src/template/schema.js';
import { cycloneDxSchemaErrors, spdxLicenceProblems, spdxSchemaErrors } from './supply-chain-schemas.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-supply-chain-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// What the package-list step reads from a Debian guest (os-release, dpkg, the copyright files' License: lines).
const debianListing = [
  '#os',
  'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
  'ID=debian',
  'VERSION_ID="12"',
  '#dpkg',
  'jq\t1.6-2.1\tamd64\tinstalled',
  'bash\t5.2.15-2+b8\tamd64\tinstalled',
  'zlib1g\t1:1.2.13.dfsg-1\tamd64\tinstalled',
  'tzdata\t2024a-0+deb12u1\tall\tinstalled',
  'oldpkg\t1.0\tamd64\tconfig-files',
  'libc6\t2.36-9\tamd64\tinstalled',
  '#licenses',
  'jq\tMIT',
  'jq\tCC-BY-3.0',
  'jq\tGPL-2.0+',
  'bash\tGPL-3+',
  'bash\tGPL-3+ with Bison exception',
  'bash\tBSD-4-clause-UC and MIT-like',
  'bash\tpermissive',
  'zlib1g\tZlib',
  'tzdata\tpublic-domain',
  'openssl\tArtistic or GPL-1+',
  '',
].join('\n');

function sample(over: Partial<SbomInput> = {}): SbomInput {
  return {
    build: 'deb',
    created: new Date('2026-12-03T02:00:00.123Z'),
    kilnVersion: '0.1.0',
    base: {
      source: 'https://cloud.debian.org/images/debian-12-generic-amd64.qcow2',
      sha256: 'a'.repeat(64),
      format: 'qcow2',
      kind: 'disk',
    },
    packages: parsePackageList(debianListing),
    files: [
      {
        role: 'upload',
        provisioner: 3,
        hostPath: '/src/app.conf',
        guestPath: '/etc/app.conf',
        size: 10,
        sha256: 'b'.repeat(64),
        sha1: 'c'.repeat(40),
      },
      {
        role: 'script',
        provisioner: 1,
        hostPath: '/src/setup.sh',
        guestPath: '/tmp/setup.sh',
        size: 20,
        sha256: 'd'.repeat(64),
        sha1: 'e'.repeat(40),
      },
      {
        role: 'http_directory',
        hostPath: '/src/http/preseed.cfg',
        size: 30,
        sha256: 'f'.repeat(64),
        sha1: '1'.repeat(40),
      },
    ],
    artifacts: [{ name: 'deb.qcow2', sha256: '2'.repeat(64) }],
    ...over,
  };
}

describe('package list', () => {
  it('reads os-release, installed packages only, and the licences each states', () => {
    const p = parsePackageList(debianListing);
    expect(p.os).toEqual({ id: 'debian', versionId: '12' });
    expect(p.packages.map((x) => x.name)).toEqual(['bash', 'jq', 'libc6', 'tzdata', 'zlib1g']);
    expect(p.packages.find((x) => x.name === 'jq')!.licenses).toEqual(['MIT', 'CC-BY-3.0', 'GPL-2.0+']);
    expect(p.packages.find((x) => x.name === 'libc6')!.licenses).toBeUndefined();
  });

  it('the old format (no os, no state column) still parses', () => {
    expect(parsePackageList('#dpkg\nbash\t5.2\tamd64\n')).toEqual({
      manager: 'dpkg',
      packages: [{ name: 'bash', version: '5.2', arch: 'amd64' }],
    });
  });

  it('purl as the purl spec writes it, version encoded (epoch, +)', () => {
    const os = { id: 'debian', versionId: '12' };
    expect(purlOf('dpkg', { name: 'jq', version: '1.6-2.1', arch: 'amd64' }, os)).toBe(
      'pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12',
    );
    expect(purlOf('dpkg', { name: 'zlib1g', version: '1:1.2.13.dfsg-1', arch: 'amd64' }, os)).toBe(
      'pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-12',
    );
    expect(
      purlOf('rpm', { name: 'bash', version: '5.2.26-3.fc40', arch: 'x86_64' }, { id: 'fedora', versionId: '40' }),
    ).toBe('pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40');
  });

  it('licences: Debian short names mapped to SPDX, "or"/"and" kept, the rest LicenseRefs', () => {
    expect(spdxLicense(['GPL-2+'])!.expression).toBe('GPL-2.0-or-later');
    expect(spdxLicense(['Expat', 'GPL-2+'])!.expression).toBe('MIT AND GPL-2.0-or-later');
    expect(spdxLicense(['Artistic or GPL-1+', 'Apache-2.0'])!.expression).toBe(
      '(Artistic-1.0 OR GPL-1.0-or-later) AND Apache-2.0',
    );
    const bison = spdxLicense(['GPL-3+ with Bison exception'])!;
    expect(bison.expression).toBe('LicenseRef-GPL-3-or-later-with-Bison-exception');
    expect([...bison.refs]).toEqual([
      ['LicenseRef-GPL-3-or-later-with-Bison-exception', 'GPL-3+ with Bison exception'],
    ]);
    expect(spdxLicense([])).toBeUndefined();
  });
});

describe('SBOM documents', () => {
  it('SPDX 2.3: valid against the official schema; the base image is what it describes; jq by purl; licences parse', () => {
    const doc = spdxDocument(sample()) as Record<string, any>;
    expect(spdxSchemaErrors(doc)).toEqual([]);
    expect(spdxLicenceProblems(doc)).toEqual([]);
    expect(doc.documentDescribes).toEqual(['SPDXRef-BaseImage']);
    expect(doc.creationInfo.created).toBe('2026-12-03T02:00:00Z');
    const jq = doc.packages.find((p: any) => p.name === 'jq');
    expect(jq.externalRefs[0]).toEqual({
      referenceCategory: 'PACKAGE-MANAGER',
      referenceType: 'purl',
      referenceLocator: 'pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12',
    });
    expect(jq.licenseDeclared).toBe('MIT AND CC-BY-3.0 AND GPL-2.0-or-later');
    expect(doc.files.map((f: any) => f.fileName)).toEqual(['./etc/app.conf', './tmp/setup.sh']);
    expect(doc.files[0].checksums).toEqual([
      { algorithm: 'SHA1', checksumValue: 'c'.repeat(40) },
      { algorithm: 'SHA256', checksumValue: 'b'.repeat(64) },
    ]);
    const contained = doc.relationships
      .filter((r: any) => r.relationshipType === 'CONTAINS')
      .map((r: any) => r.relatedSpdxElement);
    expect(contained).toHaveLength(5 + 2);
    expect(doc.comment).toBeUndefined();
  });

  it('CycloneDX 1.5: valid against the official schema; the base image is the root component and depends on every package and file', () => {
    const doc = cycloneDxDocument(sample()) as Record<string, any>;
    expect(cycloneDxSchemaErrors(doc)).toEqual([]);
    expect(doc.metadata.component).toMatchObject({
      'bom-ref': 'base-image',
      type: 'operating-system',
      hashes: [{ alg: 'SHA-256', content: 'a'.repeat(64) }],
    });
    expect(doc.components.find((c: any) => c.name === 'jq')).toMatchObject({
      purl: 'pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12',
      licenses: [{ expression: 'MIT AND CC-BY-3.0 AND GPL-2.0-or-later' }],
    });
    expect(doc.dependencies).toEqual([{ ref: 'base-image', dependsOn: doc.components.map((c: any) => c['bom-ref']) }]);
  });

  it('a guest without a package manager (the tiny fixture) and a build without a base image are valid too', () => {
    for (const input of [
      sample({ packages: { manager: 'none', packages: [] } }),
      sample({ base: undefined, packages: undefined, files: [] }),
    ]) {
      expect(spdxSchemaErrors(spdxDocument(input))).toEqual([]);
      expect(cycloneDxSchemaErrors(cycloneDxDocument(input))).toEqual([]);
    }
  });

  it('a build converted from the layer cache is marked: whose package list it is, and when it was read', () => {
    const packages = {
      ...parsePackageList(debianListing),
      recordedAt: '2026-12-01T10:00:00.000Z',
      kilnVersion: '0.1.0',
    };
    const input = sample({ packages, fromCache: { finalLayer: 'f'.repeat(64) } });
    const spdx = spdxDocument(input) as Record<string, any>;
    const cdx = cycloneDxDocument(input) as Record<string, any>;
    expect(spdxSchemaErrors(spdx)).toEqual([]);
    expect(cycloneDxSchemaErrors(cdx)).toEqual([]);
    expect(spdx.comment).toMatch(
      new RegExp(
        `^Converted from the layer cache without booting: .*final layer f{64} read from the guest on 2026-12-01T10:00:00.000Z`,
      ),
    );
    expect(spdx.creationInfo.comment).toBe(spdx.comment);
    expect(cdx.metadata.properties).toContainEqual({ name: 'kiln:from-cache', value: spdx.comment });
  });
});

/** A staged output directory as commit-output leaves it, written for real by writeSupplyChain. */
async function stage(name: string, sign?: string): Promise<{ out: string; manifestFile: string }> {
  const out = path.join(dir, name);
  mkdirSync(out, { recursive: true });
  const src = path.join(dir, `${name}-src`);
  mkdirSync(path.join(src, 'tree'), { recursive: true });
  writeFileSync(path.join(src, 'setup.sh'), 'echo hi\n');
  writeFileSync(path.join(src, 'tree', 'a.txt'), 'a\n');
  writeFileSync(path.join(src, 'template.yaml'), 'builds: []\n');
  const disk = path.join(out, `${name}.raw`);
  writeFileSync(disk, Buffer.alloc(4096, 7));
  const sha = execFileSync('sha256sum', [disk]).toString().split(' ')[0]!;
  const artifacts: ArtifactRecord[] = [
    { name: `${name}.raw`, path: disk, format: 'raw', size: 4096, virtualSize: 4096, sha256: sha },
  ];
  writeSums(out, 'sha256', artifacts);
  const build = buildSpec({
    name,
    output_directory: out,
    source: { base_image: '/base.qcow2', checksum: 'none' },
    provisioners: [
      { type: 'shell', script: path.join(src, 'setup.sh') },
      { type: 'file', source: path.join(src, 'tree'), destination: '/opt/app' },
    ],
    ...(sign ? { sign: { key: sign } } : {}),
  });
  const ctx: SupplyChainSource & {
    template: { variables: { values: Record<string, string>; sensitive: Set<string> } };
    state: { artifacts: ArtifactRecord[]; timings: Record<string, number> };
  } = {
    template: {
      file: path.join(src, 'template.yaml'),
      digest: '3'.repeat(64),
      variables: { values: { token: 'x' }, sensitive: new Set(['token']) },
    },
    build,
    state: {
      startedAt: new Date(),
      base: { source: '/base.qcow2', sha256: '4'.repeat(64), format: 'qcow2', kind: 'disk' },
      sbom: parsePackageList(debianListing),
      artifacts,
      timings: {},
    },
  };
  const record = await writeSupplyChain(out, ctx, {
    artifacts,
    variables: { token: '<sensitive>' },
    qemuImgVersion: '8.2.2',
    kilnVersion: '0.1.0',
    checksumFiles: ['SHA256SUMS'],
    mask: (v) => v,
  });
  const manifest = buildManifest(
    ctx as unknown as Parameters<typeof buildManifest>[0],
    ctx.state.startedAt,
    (p) => p,
    '8.2.2',
    [],
    record,
  );
  const manifestFile = path.join(out, 'manifest.json');
  writeFileSync(manifestFile, JSON.stringify(manifest, null, 2));
  return { out, manifestFile };
}

const qemuImg = {
  imageInfo: async () => ({ virtualSize: 4096 }),
  check: async () => ({ ok: true, output: '' }),
} as unknown as Parameters<typeof verifyManifest>[1];
const failures = (results: { name: string; ok: boolean; problems: string[] }[]) =>
  results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.problems.join('; ')}`);
const flip = (file: string, at = 100) => {
  const b = readFileSync(file);
  b[at] = b[at]! ^ 1;
  writeFileSync(file, b);
};

describe('provenance, signatures and kiln verify', () => {
  let key: string;
  let allowed: string;
  beforeAll(() => {
    key = path.join(dir, 'builder');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'builder', '-f', key]);
    allowed = path.join(dir, 'allowed_signers');
    writeFileSync(allowed, `builder@example namespaces="kiln" ${readFileSync(`${key}.pub`, 'utf8')}`);
  });

  it('the provenance is an in-toto Statement with a SLSA v1 predicate naming every input by digest', async () => {
    const { out } = await stage('prov');
    const st = JSON.parse(readFileSync(path.join(out, 'prov.provenance.json'), 'utf8'));
    expect(st._type).toBe('https://in-toto.io/Statement/v1');
    expect(st.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(st.subject).toEqual([{ name: 'prov.raw', digest: { sha256: expect.stringMatching(/^[0-9a-f]{64}$/) } }]);
    const deps = st.predicate.buildDefinition.resolvedDependencies;
    expect(deps.map((d: any) => [d.name, d.digest.sha256])).toEqual([
      ['template', '3'.repeat(64)],
      ['base_image', '4'.repeat(64)],
      [
        'provisioner 1 script',
        execFileSync('sha256sum', [path.join(dir, 'prov-src', 'setup.sh')])
          .toString()
          .split(' ')[0],
      ],
      [
        'provisioner 2 upload',
        execFileSync('sha256sum', [path.join(dir, 'prov-src', 'tree', 'a.txt')])
          .toString()
          .split(' ')[0],
      ],
    ]);
    expect(deps[3].annotations).toEqual({ guest_path: '/opt/app/tree/a.txt' });
    expect(st.predicate.runDetails.builder.version.kiln).toBe('0.1.0');
    expect(Date.parse(st.predicate.runDetails.metadata.finishedOn)).toBeGreaterThanOrEqual(
      Date.parse(st.predicate.runDetails.metadata.startedOn),
    );
    expect(st.predicate.buildDefinition.externalParameters.variables).toEqual({ token: '<sensitive>' });
    expect(st.predicate.runDetails.byproducts.map((b: any) => b.name)).toEqual(['prov.spdx.json', 'prov.cdx.json']);
    // The files kiln wrote are valid against the schemas too.
    expect(spdxSchemaErrors(JSON.parse(readFileSync(path.join(out, 'prov.spdx.json'), 'utf8')))).toEqual([]);
    expect(cycloneDxSchemaErrors(JSON.parse(readFileSync(path.join(out, 'prov.cdx.json'), 'utf8')))).toEqual([]);
    // Unsigned: verify checks the documents' digests against the manifest.
    expect(failures(await verifyManifest(path.join(out, 'manifest.json'), qemuImg))).toEqual([]);
    flip(path.join(out, 'prov.cdx.json'));
    expect(failures(await verifyManifest(path.join(out, 'manifest.json'), qemuImg))).toEqual([
      expect.stringMatching(
        /^prov\.cdx\.json: sha256 is [0-9a-f]{64}, manifest says [0-9a-f]{64}: it changed after the build$/,
      ),
    ]);
  });

  it('signed: verify passes; a byte changed in the artifact, an SBOM or a signature, or an unknown signer, fails naming the file', async () => {
    const { out, manifestFile } = await stage('signed', key);
    for (const f of ['SHA256SUMS', 'signed.provenance.json', 'signed.spdx.json', 'signed.cdx.json']) {
      // Checkable without kiln: exactly what the README shows.
      execFileSync(
        'ssh-keygen',
        ['-Y', 'verify', '-f', allowed, '-I', 'builder@example', '-n', 'kiln', '-s', path.join(out, `${f}.sig`)],
        { input: readFileSync(path.join(out, f)) },
      );
    }
    const ok = await verifyManifest(manifestFile, qemuImg, { trustedKeys: allowed });
    expect(failures(ok)).toEqual([]);
    expect(ok[0]!.name).toMatch(/^SHA256SUMS \(signed by builder@example, SHA256:\S+\)$/);
    expect(JSON.parse(readFileSync(manifestFile, 'utf8')).supply_chain.signed.files.map((f: any) => f.file)).toEqual([
      'SHA256SUMS',
      'signed.provenance.json',
      'signed.spdx.json',
      'signed.cdx.json',
    ]);

    const artifact = path.join(out, 'signed.raw');
    const saved = readFileSync(artifact);
    flip(artifact);
    expect(failures(await verifyManifest(manifestFile, qemuImg, { trustedKeys: allowed }))).toEqual([
      expect.stringMatching(
        /^signed\.raw: sha256 is \w+, manifest says \w+; sha256 is \w+, the signed SHA256SUMS says \w+; sha256 is \w+, the signed provenance says \w+$/,
      ),
    ]);
    writeFileSync(artifact, saved);

    const sbom = path.join(out, 'signed.spdx.json');
    const sbomBytes = readFileSync(sbom);
    flip(sbom);
    expect(failures(await verifyManifest(manifestFile, qemuImg, { trustedKeys: allowed }))).toEqual([
      expect.stringMatching(
        /^signed\.spdx\.json \(signature\): the signature by builder@example \(ssh-ed25519 key SHA256:\S+\) does not match .*signed\.spdx\.json: the file or its signature changed after signing/,
      ),
    ]);
    writeFileSync(sbom, sbomBytes);

    const sig = path.join(out, 'SHA256SUMS.sig');
    const sigBytes = readFileSync(sig);
    // A byte inside the base64 of the signature's last bytes (the ed25519 signature itself).
    const text = sigBytes.toString('latin1');
    const at = text.lastIndexOf('-----END') - 10;
    writeFileSync(sig, text.slice(0, at) + (text[at] === 'A' ? 'B' : 'A') + text.slice(at + 1));
    expect(failures(await verifyManifest(manifestFile, qemuImg, { trustedKeys: allowed }))).toEqual([
      expect.stringMatching(
        /^SHA256SUMS \(signature\): (the signature by builder@example .* does not match|signature .* cannot be read)/,
      ),
    ]);
    writeFileSync(sig, sigBytes);
    expect(failures(await verifyManifest(manifestFile, qemuImg, { trustedKeys: allowed }))).toEqual([]);

    // Someone else's key: every signed file names the signer's fingerprint as unknown.
    const other = path.join(dir, 'other');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'other', '-f', other]);
    const otherAllowed = path.join(dir, 'other_signers');
    writeFileSync(otherAllowed, `someone ${readFileSync(`${other}.pub`, 'utf8')}`);
    const unknown = failures(await verifyManifest(manifestFile, qemuImg, { trustedKeys: otherAllowed }));
    expect(unknown).toHaveLength(4);
    expect(unknown[0]).toMatch(
      new RegExp(
        `^SHA256SUMS \\(signature\\): signed by ssh-ed25519 key ${checkSigningKey(key).fingerprint.replace(/[+/]/g, '\\$&')}, which ${otherAllowed} does not list \\(unknown signer\\)$`,
      ),
    );

    // An unsigned build checked with --trusted-keys: not signed, named.
    const { manifestFile: plain } = await stage('plain');
    expect(failures(await verifyManifest(plain, qemuImg, { trustedKeys: allowed }))[0]).toMatch(
      /^SHA256SUMS \(signature\): not signed: .*SHA256SUMS\.sig is missing \(was the build made with sign: \{ key: \.\.\. \}\?\)$/,
    );
  });

  it('an offline build names the recorded responses its guest fetched, by digest', () => {
    const st = provenanceStatement({
      build: 'b',
      template: { file: '/t.yaml', sha256: '1'.repeat(64) },
      variables: {},
      inputs: [],
      artifacts: [],
      startedAt: new Date(),
      finishedAt: new Date(),
      kilnVersion: '0.1.0',
      qemuImgVersion: '8',
      builderId: 'urn:kiln:builder:h',
      byproducts: [],
      recordedPackages: [
        { url: 'http://deb.debian.org/debian/pool/main/j/jq/jq_1.6-2.1_amd64.deb', sha256: '5'.repeat(64) },
      ],
    }) as { predicate: { buildDefinition: { resolvedDependencies: unknown[] } } };
    expect(st.predicate.buildDefinition.resolvedDependencies).toContainEqual({
      name: 'recorded package',
      uri: 'http://deb.debian.org/debian/pool/main/j/jq/jq_1.6-2.1_amd64.deb',
      digest: { sha256: '5'.repeat(64) },
    });
  });

  it('a key that cannot sign unattended is refused before anything is written, naming it and the fix', () => {
    const rsa = path.join(dir, 'rsa');
    execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', rsa]);
    expect(() => checkSigningKey(rsa)).toThrow(
      /sign\.key .*rsa is a ssh-rsa key; kiln signs with ed25519 keys\n  fix: /,
    );
    const locked = path.join(dir, 'locked');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret-pass', '-f', locked]);
    expect(() => checkSigningKey(locked)).toThrow(
      /is protected by a passphrase, which nobody can type during a build\n  fix: /,
    );
    expect(() => checkSigningKey(`${locked}.pub`)).toThrow(SigningError);
  });
});
