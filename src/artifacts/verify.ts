/** `kiln verify MANIFEST`: re-check every artifact a manifest lists: size, digests, qemu-img check and info. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileDigests } from '../cache/digest.js';
import { createDriver, type Driver } from '../qemu/driver.js';
import type { Manifest } from './manifest.js';
import { diskFormat } from '../template/output-formats.js';


export interface VerifyResult { name: string; ok: boolean; problems: string[] }

/** `qemuImg`: the qemu-img to read images with (default: createDriver()'s, qemu-img on PATH). */
export async function verifyManifest(manifestPath: string, qemuImg: Pick<Driver, 'imageInfo' | 'check'> = createDriver()): Promise<VerifyResult[]> {
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  const results: VerifyResult[] = [];
  for (const a of manifest.artifacts) {
    const problems: string[] = [];
    // A moved output directory still verifies: fall back to the file beside the manifest.
    const file = existsSync(a.path) ? a.path : path.join(path.dirname(manifestPath), a.name);
    if (!existsSync(file)) { results.push({ name: a.name, ok: false, problems: [`missing: ${a.path}`] }); continue; }
    const size = statSync(file).size;
    if (size !== a.size) problems.push(`size is ${size}, manifest says ${a.size}`);
    const digests = await fileDigests(file, a.sha512 ? ['sha256', 'sha512'] : ['sha256']);
    if (digests.sha256 !== a.sha256) problems.push(`sha256 is ${digests.sha256}, manifest says ${a.sha256}`);
    if (a.sha512 && digests.sha512 !== a.sha512) problems.push('sha512 does not match the manifest');
    // A compressed artifact is checked by its digests; qemu-img cannot read inside it.
    const disk = a.compression ? undefined : diskFormat(a.format);
    if (disk && problems.length === 0) {
      const info = await qemuImg.imageInfo(file, disk.qemuFormat);
      if (info.virtualSize !== a.virtual_size) problems.push(`virtual size is ${info.virtualSize}, manifest says ${a.virtual_size}`);
      if (disk.checkable) {
        const r = await qemuImg.check(file, disk.qemuFormat);
        if (!r.ok) problems.push(`qemu-img check failed: ${r.output}`);
      }
    }
    results.push({ name: a.name, ok: problems.length === 0, problems });
  }
  return results;
}
