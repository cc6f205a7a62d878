/**
 * `kiln verify MANIFEST [--trusted-keys allowed_signers]`: re-check every artifact a manifest lists
 * (size, digests, qemu-img check and info) and the SBOM and provenance files beside it. With trusted
 * keys, first the signatures (SHA256SUMS, the provenance, the SBOMs), then every digest against what
 * was signed: the manifest itself is not signed, so it is not trusted for digests then.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileDigest, fileDigests } from '../cache/digest.js';
import type { ImageTool } from '../qemu/image-tool.js';
import { checksumFiles, type Manifest } from './manifest.js';
import { diskFormat } from '../template/output-formats.js';
import { signatureFile, verifySignature } from './signing.js';
import { supplyChainNames } from './supply-chain.js';
import { KilnError } from '../util/errors.js';

export interface VerifyResult {
  name: string;
  ok: boolean;
  problems: string[];
}

export interface VerifyManifestOptions {
  /** An allowed_signers file (ssh-keygen's format): the build must be signed by a key it lists. */
  trustedKeys?: string;
}

/** What the signed files say each artifact's digest is. */
interface SignedDigests {
  sums: Map<string, string>;
  subjects: Map<string, string> | undefined;
}

/** Parses a SHA256SUMS file ("<hex>  <name>" or "<hex> *<name>" lines). */
function parseSums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (m) sums.set(m[2]!, m[1]!);
  }
  return sums;
}

/** Checks the signature of each file the build signed; returns the digests those files vouch for. */
async function checkSignatures(
  dir: string,
  manifest: Manifest,
  trustedKeys: string,
  results: VerifyResult[],
): Promise<SignedDigests | undefined> {
  if (!existsSync(trustedKeys))
    throw new KilnError(`--trusted-keys ${trustedKeys} does not exist`, {
      fix: `give an allowed_signers file: lines of "<principal> namespaces=\\"kiln\\" ssh-ed25519 AAAA..." (see ssh-keygen(1), ALLOWED SIGNERS)`,
    });
  // Which files must be signed is not taken from the manifest (anyone may edit it): the checksum files
  // present and the build's provenance and SBOMs, by their fixed names.
  const names = supplyChainNames(String(manifest.build));
  const sumsFiles = checksumFiles.filter((f) => existsSync(path.join(dir, f)));
  const required = [...sumsFiles, names.provenance, names.spdx, names.cyclonedx];
  if (!sumsFiles.length)
    results.push({ name: 'SHA256SUMS', ok: false, problems: [`missing: ${path.join(dir, 'SHA256SUMS')}`] });
  let allOk = sumsFiles.length > 0;
  for (const name of required) {
    const file = path.join(dir, name);
    if (!existsSync(file)) {
      results.push({ name, ok: false, problems: [`missing: ${file}`] });
      allOk = false;
      continue;
    }
    const check = await verifySignature(trustedKeys, file, signatureFile(file));
    if (!check.ok && !existsSync(signatureFile(file)))
      check.problem = `not signed: ${signatureFile(file)} is missing (was the build made with sign: { key: ... }?)`;
    results.push({ name: `${name} (signature)`, ok: check.ok, problems: check.ok ? [] : [check.problem!] });
    if (check.ok) results.at(-1)!.name = `${name} (signed by ${check.principal}, ${check.fingerprint})`;
    allOk &&= check.ok;
  }
  if (!allOk) return undefined;
  const sums = existsSync(path.join(dir, 'SHA256SUMS'))
    ? parseSums(readFileSync(path.join(dir, 'SHA256SUMS'), 'utf8'))
    : new Map<string, string>();
  let subjects: Map<string, string> | undefined;
  try {
    const statement = JSON.parse(readFileSync(path.join(dir, names.provenance), 'utf8')) as {
      subject?: { name: string; digest: { sha256?: string } }[];
    };
    subjects = new Map((statement.subject ?? []).map((s) => [s.name, String(s.digest?.sha256)]));
  } catch (e) {
    results.push({ name: names.provenance, ok: false, problems: [`signed, but not JSON: ${(e as Error).message}`] });
  }
  return { sums, subjects };
}

/** `qemuImg`: the image tool to read images with (the caller's: the library's verify() makes one from its options). */
export async function verifyManifest(
  manifestPath: string,
  qemuImg: Pick<ImageTool, 'imageInfo' | 'check'>,
  options: VerifyManifestOptions = {},
): Promise<VerifyResult[]> {
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  const dir = path.dirname(manifestPath);
  const results: VerifyResult[] = [];
  let signed: SignedDigests | undefined;
  if (options.trustedKeys) {
    signed = await checkSignatures(dir, manifest, options.trustedKeys, results);
    // A bad signature: nothing signed can be trusted, so the digests are not compared with it.
    if (!signed) return results;
  }
  const artifacts = [...manifest.artifacts];
  // With signatures, every artifact the signed provenance names is checked, listed in the manifest or not.
  for (const [name, sha256] of signed?.subjects ?? []) {
    if (!artifacts.some((a) => a.name === name))
      artifacts.push({ name, path: path.join(dir, name), format: '', size: -1, virtual_size: -1, sha256 });
  }
  for (const a of artifacts) {
    const problems: string[] = [];
    // A moved output directory still verifies: fall back to the file beside the manifest.
    const file = existsSync(a.path) ? a.path : path.join(dir, a.name);
    if (!existsSync(file)) {
      results.push({ name: a.name, ok: false, problems: [`missing: ${a.path}`] });
      continue;
    }
    const size = statSync(file).size;
    if (a.size >= 0 && size !== a.size) problems.push(`size is ${size}, manifest says ${a.size}`);
    const digests = await fileDigests(file, a.sha512 ? ['sha256', 'sha512'] : ['sha256']);
    if (digests.sha256 !== a.sha256) problems.push(`sha256 is ${digests.sha256}, manifest says ${a.sha256}`);
    if (a.sha512 && digests.sha512 !== a.sha512) problems.push('sha512 does not match the manifest');
    if (signed) {
      const inSums = signed.sums.get(a.name);
      if (inSums !== undefined && inSums !== digests.sha256)
        problems.push(`sha256 is ${digests.sha256}, the signed SHA256SUMS says ${inSums}`);
      const subject = signed.subjects?.get(a.name);
      if (signed.subjects && subject === undefined)
        problems.push('the signed provenance does not name it (not an artifact of the signed build)');
      else if (subject !== undefined && subject !== digests.sha256)
        problems.push(`sha256 is ${digests.sha256}, the signed provenance says ${subject}`);
    }
    // A compressed artifact is checked by its digests; qemu-img cannot read inside it.
    const disk = a.compression || !a.format ? undefined : diskFormat(a.format);
    if (disk && problems.length === 0) {
      const info = await qemuImg.imageInfo(file, disk.qemuFormat);
      if (info.virtualSize !== a.virtual_size)
        problems.push(`virtual size is ${info.virtualSize}, manifest says ${a.virtual_size}`);
      if (disk.checkable) {
        const r = await qemuImg.check(file, disk.qemuFormat);
        if (!r.ok) problems.push(`qemu-img check failed: ${r.output}`);
      }
    }
    results.push({ name: a.name, ok: problems.length === 0, problems });
  }
  // The SBOMs, provenance and signatures, against the digests the manifest recorded when they were written.
  for (const d of manifest.supply_chain?.documents ?? []) {
    const file = path.join(dir, path.basename(d.name));
    if (!existsSync(file)) {
      results.push({ name: d.name, ok: false, problems: [`missing: ${file}`] });
      continue;
    }
    const sha256 = await fileDigest(file);
    results.push({
      name: d.name,
      ok: sha256 === d.sha256,
      problems:
        sha256 === d.sha256 ? [] : [`sha256 is ${sha256}, manifest says ${d.sha256}: it changed after the build`],
    });
  }
  return results;
}
