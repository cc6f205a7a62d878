import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gunzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import tarStream from 'tar-stream';
import { convert, qemuImgBinary } from '../../../src/qemu/qemu-img.js';
import { fileDigest } from '../../../src/cache/digest.js';
import { ovfDescriptor, writeOva } from '../../../src/artifacts/ova.js';
import { boxVagrantfile, writeVagrantBox } from '../../../src/artifacts/vagrant.js';
import { writeGceTarball } from '../../../src/artifacts/gce.js';
import { writeTar } from '../../../src/artifacts/tar.js';
import { createDriver } from '../../../src/qemu/driver.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** The packagers take the image tool from their caller (the build's driver); here the real one. */
const qemuImg = createDriver();
let dir: string;
let source: string;

/** Extracts every member of a (optionally gzip'd) tar to `into`, streaming; returns names and sizes in archive order. */
async function untar(archive: string, into: string, gzip = false): Promise<{ name: string; size: number }[]> {
  const entries: { name: string; size: number }[] = [];
  const extract = tarStream.extract();
  const done = (async () => {
    for await (const entry of extract) {
      entries.push({ name: entry.header.name, size: entry.header.size });
      await pipeline(entry, createWriteStream(path.join(into, path.basename(entry.header.name))));
    }
  })();
  await Promise.all([
    gzip ? pipeline(createReadStream(archive), createGunzip(), extract) : pipeline(createReadStream(archive), extract),
    done,
  ]);
  return entries;
}

async function compare(a: string, aFormat: string, b: string, bFormat: string) {
  return execa(qemuImgBinary, ['compare', '-f', aFormat, '-F', bFormat, a, b], { reject: false });
}

async function qemuInfo(file: string) {
  const r = await execa(qemuImgBinary, ['info', '--output=json', file]);
  return JSON.parse(r.stdout) as Record<string, any>;
}

function leftovers(outDir: string) {
  return readdirSync(outDir).filter((f) => f.endsWith('.partial') || f.includes('.work-'));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-pkg-'));
  // A 64 MiB disk with data at the start, in the middle and at the very end; the rest stays sparse.
  const raw = path.join(dir, 'src.raw');
  writeFileSync(raw, Buffer.alloc(0));
  const fh = await open(raw, 'r+');
  await fh.truncate(64 * MiB);
  await fh.write(randomBytes(MiB), 0, MiB, 0);
  await fh.write(Buffer.alloc(2 * MiB, 0xa5), 0, 2 * MiB, 20 * MiB);
  await fh.write(Buffer.from('kiln end-of-disk marker'), 0, 23, 64 * MiB - 512);
  await fh.close();
  source = path.join(dir, 'src.qcow2');
  await convert(raw, 'raw', source, 'qcow2');
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('OVA', () => {
  it('packs descriptor, streamOptimized VMDK and manifest, in that order, with matching digests', async () => {
    const outDir = mkdtempSync(path.join(dir, 'ova-'));
    const out = path.join(outDir, 'web.ova');
    const progress: number[] = [];
    const { size } = await writeOva({
      source,
      sourceFormat: 'qcow2',
      out,
      name: 'web',
      cpus: 2,
      memoryMiB: 2048,
      firmware: 'bios',
      qemuImg,
      onProgress: (p) => progress.push(p),
    });
    expect(size).toBe(statSync(out).size);
    expect(leftovers(outDir)).toEqual([]);
    expect(progress.at(-1)).toBe(100);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));

    // ustar headers, as VMware and VirtualBox expect.
    const head = Buffer.alloc(512);
    const fh = await open(out, 'r');
    await fh.read(head, 0, 512, 0);
    await fh.close();
    expect(head.subarray(257, 265).toString('latin1')).toBe('ustar\x0000');

    const x = mkdtempSync(path.join(dir, 'ova-x-'));
    const entries = await untar(out, x);
    expect(entries.map((e) => e.name)).toEqual(['web.ovf', 'web-disk1.vmdk', 'web.mf']);

    const mf = readFileSync(path.join(x, 'web.mf'), 'utf8');
    expect(mf).toBe(
      `SHA256(web.ovf)= ${await fileDigest(path.join(x, 'web.ovf'))}\nSHA256(web-disk1.vmdk)= ${await fileDigest(path.join(x, 'web-disk1.vmdk'))}\n`,
    );

    const info = await qemuInfo(path.join(x, 'web-disk1.vmdk'));
    expect(info.format).toBe('vmdk');
    expect(info['format-specific']?.data?.['create-type']).toBe('streamOptimized');
    expect(info['virtual-size']).toBe(64 * MiB);

    const ovf = readFileSync(path.join(x, 'web.ovf'), 'utf8');
    const vmdkBytes = statSync(path.join(x, 'web-disk1.vmdk')).size;
    expect(ovf).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>/);
    expect(ovf).toMatch(new RegExp(`<File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="${vmdkBytes}"/>`));
    expect(ovf).toMatch(
      new RegExp(
        `<Disk ovf:capacity="${info['virtual-size']}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`,
      ),
    );
    expect(ovf).toMatch(/<NetworkSection>[\s\S]*<Network ovf:name="VM Network">/);
    expect(ovf).toMatch(/<OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">/);
    expect(ovf).toMatch(/<vssd:VirtualSystemType>vmx-14<\/vssd:VirtualSystemType>/);
    expect(ovf).toMatch(/<rasd:ResourceType>3<\/rasd:ResourceType>\s*<rasd:VirtualQuantity>2<\/rasd:VirtualQuantity>/);
    expect(ovf).toMatch(
      /<rasd:AllocationUnits>byte \* 2\^20<\/rasd:AllocationUnits>[\s\S]*?<rasd:ResourceType>4<\/rasd:ResourceType>\s*<rasd:VirtualQuantity>2048</,
    );
    expect(ovf).toMatch(
      /<rasd:InstanceID>3<\/rasd:InstanceID>\s*<rasd:ResourceSubType>vmware.sata.ahci<\/rasd:ResourceSubType>\s*<rasd:ResourceType>20</,
    );
    expect(ovf).toMatch(
      /<rasd:HostResource>ovf:\/disk\/vmdisk1<\/rasd:HostResource>\s*<rasd:InstanceID>4<\/rasd:InstanceID>\s*<rasd:Parent>3<\/rasd:Parent>\s*<rasd:ResourceType>17</,
    );
    expect(ovf).toMatch(/<rasd:ResourceSubType>E1000<\/rasd:ResourceSubType>\s*<rasd:ResourceType>10</);
    expect(ovf).not.toMatch(/firmware/);
    // Well-formed enough: every opened element is closed.
    const open_ = [...ovf.matchAll(/<([A-Za-z][\w:]*)[^>]*?(?<!\/)>/g)].map((m) => m[1]);
    const close = [...ovf.matchAll(/<\/([\w:]+)>/g)].map((m) => m[1]);
    expect(open_.sort()).toEqual(close.sort());

    const cmp = await compare(source, 'qcow2', path.join(x, 'web-disk1.vmdk'), 'vmdk');
    expect(cmp.stdout).toContain('Images are identical');
    expect(cmp.exitCode).toBe(0);
  });

  it('describes UEFI firmware and keeps RASD elements in schema (alphabetical) order', () => {
    const ovf = ovfDescriptor({
      name: 'a <b> & "c"',
      cpus: 4,
      memoryMiB: 512,
      firmware: 'uefi',
      diskFile: 'x.vmdk',
      diskFileSize: 10,
      capacity: GiB,
    });
    expect(ovf).toContain('<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>');
    expect(ovf).toContain('<Name>a &lt;b&gt; &amp; &quot;c&quot;</Name>');
    expect(ovf).toContain('<VirtualSystem ovf:id="a_b_c_">');
    for (const item of ovf.matchAll(/<Item>([\s\S]*?)<\/Item>/g)) {
      const names = [...item[1]!.matchAll(/<rasd:(\w+)>/g)].map((m) => m[1]!);
      expect(names).toEqual([...names].sort());
    }
    const vssd = [...ovf.matchAll(/<vssd:(\w+)>/g)].map((m) => m[1]!);
    expect(vssd).toEqual([...vssd].sort());
  });

  it('carries the architecture: x86_64 is otherLinux64Guest on vmx-14; aarch64 is arm-other5xlinux-64 on vmx-20 with EFI', () => {
    const spec = { name: 'a', cpus: 1, memoryMiB: 256, diskFile: 'x.vmdk', diskFileSize: 10, capacity: GiB } as const;
    const x86 = ovfDescriptor({ ...spec, firmware: 'bios' });
    expect(x86).toContain('<OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">');
    expect(x86).toContain('<vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>');
    expect(x86).not.toContain('vmw:key="firmware"');
    expect(ovfDescriptor({ ...spec, firmware: 'bios', arch: 'x86_64' })).toBe(x86);
    // arm64 has no BIOS: EFI even if the caller said bios.
    const arm = ovfDescriptor({ ...spec, firmware: 'bios', arch: 'aarch64' });
    expect(arm).toContain('<OperatingSystemSection ovf:id="101" vmw:osType="arm-other5xlinux-64">');
    expect(arm).toContain('<Description>Linux 64-Bit (Arm)</Description>');
    expect(arm).toContain('<vssd:VirtualSystemType>vmx-20</vssd:VirtualSystemType>');
    expect(arm).toContain('<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>');
  });
});

describe('Vagrant box', () => {
  it("packs metadata.json, Vagrantfile and a qcow2 box.img in a gzip'd tar", async () => {
    const outDir = mkdtempSync(path.join(dir, 'box-'));
    const out = path.join(outDir, 'web.box');
    await writeVagrantBox({
      source,
      sourceFormat: 'qcow2',
      out,
      name: 'web',
      cpus: 3,
      memoryMiB: 1536,
      firmware: 'bios',
      qemuImg,
    });
    expect(leftovers(outDir)).toEqual([]);
    const head = gunzipSync(readFileSync(out)).subarray(0, 512); // a small test archive: fine in memory
    expect(head.subarray(257, 265).toString('latin1')).toBe('ustar\x0000');

    const x = mkdtempSync(path.join(dir, 'box-x-'));
    const entries = await untar(out, x, true);
    expect(entries.map((e) => e.name).sort()).toEqual(['Vagrantfile', 'box.img', 'metadata.json']);
    expect(JSON.parse(readFileSync(path.join(x, 'metadata.json'), 'utf8'))).toEqual({
      provider: 'libvirt',
      format: 'qcow2',
      virtual_size: 1,
    });
    const vf = readFileSync(path.join(x, 'Vagrantfile'), 'utf8');
    expect(vf).toMatch(/config\.vm\.provider :libvirt do \|libvirt\|/);
    expect(vf).toMatch(/libvirt\.driver = "kvm"/);
    expect(vf).toMatch(/libvirt\.memory = 1536\n/);
    expect(vf).toMatch(/libvirt\.cpus = 3\n/);
    expect(vf).not.toMatch(/libvirt\.loader/);

    const info = await qemuInfo(path.join(x, 'box.img'));
    expect(info.format).toBe('qcow2');
    expect(info['format-specific']?.data?.compat).toBe('1.1');
    const cmp = await compare(source, 'qcow2', path.join(x, 'box.img'), 'qcow2');
    expect(cmp.stdout).toContain('Images are identical');
  });

  it("adds the output's include files at the box's top, by their base names, beside kiln's entries", async () => {
    const outDir = mkdtempSync(path.join(dir, 'box-inc-'));
    const out = path.join(outDir, 'web.box');
    const extra = mkdtempSync(path.join(dir, 'box-files-'));
    mkdirSync(path.join(extra, 'docs'));
    writeFileSync(path.join(extra, 'info.json'), '{"author":"ops"}\n');
    writeFileSync(path.join(extra, 'docs', 'README.md'), '# the web box\n');
    await writeVagrantBox({
      source,
      sourceFormat: 'qcow2',
      out,
      name: 'web',
      cpus: 1,
      memoryMiB: 512,
      firmware: 'bios',
      qemuImg,
      include: [path.join(extra, 'info.json'), path.join(extra, 'docs', 'README.md')],
    });
    const x = mkdtempSync(path.join(dir, 'box-inc-x-'));
    const entries = await untar(out, x, true);
    expect(entries.map((e) => e.name).sort()).toEqual([
      'README.md',
      'Vagrantfile',
      'box.img',
      'info.json',
      'metadata.json',
    ]);
    expect(readFileSync(path.join(x, 'info.json'), 'utf8')).toBe('{"author":"ops"}\n');
    expect(readFileSync(path.join(x, 'README.md'), 'utf8')).toBe('# the web box\n');
  });

  it('sets the OVMF loader for UEFI', () => {
    expect(boxVagrantfile({ name: 'u', cpus: 1, memoryMiB: 512, firmware: 'uefi' })).toMatch(
      /libvirt\.loader = "\/usr\/share\/OVMF\/OVMF_CODE_4M\.fd"/,
    );
  });
});

describe('GCE tarball', () => {
  it('holds exactly disk.raw, old GNU format, sparse, a whole number of GiB, same data as the source', async () => {
    const outDir = mkdtempSync(path.join(dir, 'gce-'));
    const out = path.join(outDir, 'web.tar.gz');
    const progress: number[] = [];
    await writeGceTarball({ source, sourceFormat: 'qcow2', out, qemuImg, onProgress: (p) => progress.push(p) });
    expect(leftovers(outDir)).toEqual([]);
    expect(progress.at(-1)).toBe(100);
    // Sparse: the 1 GiB disk holds ~3 MiB of data (1 MiB of it random), so the archive is a few MiB.
    expect(statSync(out).size).toBeLessThan(8 * MiB);

    const list = await execa('tar', ['--list', '-vzf', out]);
    const lines = list.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ disk\.raw$/);
    const listedSize = Number(/^\S+\s+\S+\s+(\d+)\s/.exec(lines[0]!)?.[1]);
    expect(listedSize).toBe(GiB);

    // The first header: old GNU magic "ustar  \0" (ustar would be "ustar\0" "00"), name disk.raw,
    // type 'S' (GNU sparse) since the disk has holes.
    const gunzip = createGunzip();
    const first = await new Promise<Buffer>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const rs = createReadStream(out);
      rs.pipe(gunzip)
        .on('data', (b: Buffer) => {
          got = Buffer.concat([got, b]);
          if (got.length >= 512) {
            rs.destroy();
            gunzip.destroy();
            resolve(got.subarray(0, 512));
          }
        })
        .on('error', reject);
    });
    expect(first.subarray(257, 265).toString('latin1')).toBe('ustar  \0');
    expect(first.subarray(0, 9).toString('latin1')).toBe('disk.raw\0');
    expect(String.fromCharCode(first[156]!)).toBe('S');

    const x = mkdtempSync(path.join(dir, 'gce-x-'));
    await execa('tar', ['-xzf', out, '-C', x]);
    expect(readdirSync(x)).toEqual(['disk.raw']);
    const raw = path.join(x, 'disk.raw');
    expect(statSync(raw).size % GiB).toBe(0);
    expect(statSync(raw).size).toBe(GiB);
    const cmp = await compare(raw, 'raw', source, 'qcow2');
    expect(cmp.stdout).toContain('Images are identical');
  });
});

describe('failures', () => {
  it('names the failing step and leaves nothing behind', async () => {
    const outDir = mkdtempSync(path.join(dir, 'fail-'));
    const missing = path.join(dir, 'does-not-exist.qcow2');
    await expect(
      writeOva({
        source: missing,
        sourceFormat: 'qcow2',
        out: path.join(outDir, 'x.ova'),
        name: 'x',
        cpus: 1,
        memoryMiB: 256,
        firmware: 'bios',
        qemuImg,
      }),
    ).rejects.toThrow(/OVA .*x\.ova: converting the disk to a streamOptimized VMDK \(qemu-img convert\) failed/);
    await expect(
      writeGceTarball({ source: missing, sourceFormat: 'qcow2', out: path.join(outDir, 'x.tar.gz'), qemuImg }),
    ).rejects.toThrow(/GCE tarball .*: converting the disk to raw \(qemu-img convert\) failed/);
    expect(readdirSync(outDir)).toEqual([]);
    expect(existsSync(path.join(outDir, 'x.ova'))).toBe(false);
  });

  it("reports the destination's own error when the archive cannot be written (no hang)", async () => {
    await expect(writeTar('/dev/full', [{ name: 'd', file: source }])).rejects.toThrow(/ENOSPC/);
    await expect(
      writeTar(path.join(dir, 'no-such-dir', 'a.tar'), [{ name: 'd', file: source }], { gzip: true }),
    ).rejects.toThrow(/ENOENT/);
    await expect(writeTar(path.join(dir, 'a.tar'), [{ name: 'd', file: path.join(dir, 'missing') }])).rejects.toThrow(
      /ENOENT/,
    );
  });
});
