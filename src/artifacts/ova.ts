/**
 * OVA: an OVF 1.0 package in one ustar archive, for VMware (ESXi, Workstation, Fusion, ovftool) and
 * VirtualBox. The archive holds, in this order (OVF 1.0 §5.3 requires the descriptor first and the
 * manifest after the files it lists):
 *
 *   <base>.ovf         the descriptor (built by `ovfDescriptor`)
 *   <base>-disk1.vmdk  the disk, a streamOptimized VMDK (compressed grains, the only VMDK flavour an OVF may carry)
 *   <base>.mf          `SHA256(<file>)= <hex>` for the two files above
 *
 * Virtual hardware, chosen to import unchanged on both VMware and VirtualBox:
 *  - vmx-14 (ESXi 6.7, Workstation 14 and later);
 *  - guest OS "other 64-bit Linux": CIM OS type 101 / vmw:osType otherLinux64Guest. kiln does not know
 *    the guest's distribution; 96 / debian10_64Guest would only change VMware's defaults and the
 *    VirtualBox icon;
 *  - an arm64 guest (arch: aarch64) says so where VMware looks for it: vmw:osType arm-other5xlinux-64
 *    (VMware's "Other 5.x or later Linux 64-bit Arm", what Fusion on Apple silicon and ESXi-Arm call
 *    it) on hardware version vmx-20, the first Fusion runs Arm guests on, and always EFI firmware. The
 *    CIM OS type stays 101: DSP0243's OperatingSystemSection takes CIM_OperatingSystem.OSType, which has
 *    no per-architecture Linux value, and VirtualSystemType names a hardware family, not a CPU;
 *  - the disk on a SATA AHCI controller ("vmware.sata.ahci", which current VirtualBox reads as AHCI). Every
 *    Linux initramfs has `ahci`, and unlike LSI Logic SCSI it boots under UEFI in VirtualBox too.
 *    (Old VirtualBox releases accepted only the subtype "AHCI" and reject this item.);
 *  - an Intel E1000 NIC, which both hypervisors emulate and every Linux kernel drives (vmxnet3 is
 *    VMware-only), on the abstract network "VM Network";
 *  - for UEFI, `<vmw:Config vmw:key="firmware" vmw:value="efi"/>` (VMware honours it; VirtualBox imports
 *    as BIOS and needs EFI switched on by hand after import).
 *
 * RASD/VSSD child elements are written in alphabetical order: the CIM schemas declare them as an
 * xs:sequence in that order, and ovftool validates against the schema.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { ImageTool } from '../qemu/image-tool.js';
import { archProfile, type GuestArch } from '../qemu/arch.js';
import { archiveBaseName, progressScale, step, writeAtomically, writeTar } from './tar.js';

export interface OvaOptions {
  source: string;
  sourceFormat: string;
  out: string;
  name: string;
  cpus: number;
  memoryMiB: number;
  firmware: 'bios' | 'uefi';
  /** The guest's architecture (default x86_64): the OVF's guest OS type and hardware version follow it. */
  arch?: GuestArch;
  onProgress?: (pct: number) => void;
  /** Stops the packaging: its tools are killed, its partial output removed. */
  signal?: AbortSignal;
  /** The image tool to convert and read images with (the build's). */
  qemuImg: Pick<ImageTool, 'convert' | 'imageInfo' | 'resize'>;
}

/**
 * Per architecture: the guest OS (CIM_OperatingSystem OsType "Linux 64-Bit" and VMware's matching guest
 * id) and the VMware hardware version (vssd:VirtualSystemType) that runs it.
 */
const ovfGuests: Readonly<
  Record<GuestArch, { cimId: number; vmwOsType: string; description: string; virtualSystemType: string }>
> = {
  x86_64: { cimId: 101, vmwOsType: 'otherLinux64Guest', description: 'Linux 64-Bit', virtualSystemType: 'vmx-14' },
  aarch64: {
    cimId: 101,
    vmwOsType: 'arm-other5xlinux-64',
    description: 'Linux 64-Bit (Arm)',
    virtualSystemType: 'vmx-20',
  },
};

export const STREAM_OPTIMIZED_VMDK = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

export interface OvfSpec {
  name: string;
  cpus: number;
  memoryMiB: number;
  firmware: 'bios' | 'uefi';
  arch?: GuestArch; // default x86_64
  diskFile: string; // href of the VMDK inside the package
  diskFileSize: number; // its size in bytes
  capacity: number; // the disk's virtual size in bytes
}

const xml = (s: string | number) =>
  String(s)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');

/** The OVF 1.0 descriptor of a one-disk, one-NIC virtual machine. */
export function ovfDescriptor(spec: OvfSpec): string {
  const os = ovfGuests[spec.arch ?? 'x86_64'];
  // An architecture without BIOS (arm64) boots EFI whatever the source said.
  const efi = spec.firmware === 'uefi' || archProfile(spec.arch).uefiOnly;
  const n = xml(spec.name);
  const id = xml(archiveBaseName(spec.name)); // ovf:id is an identifier: no spaces or markup
  const network = 'VM Network';
  const item = (fields: [string, string | number][], attrs = '') =>
    `      <Item${attrs}>\n${fields.map(([k, v]) => `        <rasd:${k}>${xml(v)}</rasd:${k}>`).join('\n')}\n      </Item>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by kiln -->
<Envelope ovf:version="1.0" xml:lang="en-US"
    xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="${xml(spec.diskFile)}" ovf:id="file1" ovf:size="${spec.diskFileSize}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="${spec.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="${STREAM_OPTIMIZED_VMDK}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="${network}">
      <Description>The ${network} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${id}">
    <Info>A virtual machine</Info>
    <Name>${n}</Name>
    <OperatingSystemSection ovf:id="${os.cimId}" vmw:osType="${os.vmwOsType}">
      <Info>The kind of installed guest operating system</Info>
      <Description>${os.description}</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${id}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>${os.virtualSystemType}</vssd:VirtualSystemType>
      </System>
${[
  item([
    ['AllocationUnits', 'hertz * 10^6'],
    ['Description', 'Number of Virtual CPUs'],
    ['ElementName', `${spec.cpus} virtual CPU(s)`],
    ['InstanceID', 1],
    ['ResourceType', 3],
    ['VirtualQuantity', spec.cpus],
  ]),
  item([
    ['AllocationUnits', 'byte * 2^20'],
    ['Description', 'Memory Size'],
    ['ElementName', `${spec.memoryMiB}MB of memory`],
    ['InstanceID', 2],
    ['ResourceType', 4],
    ['VirtualQuantity', spec.memoryMiB],
  ]),
  item([
    ['Address', 0],
    ['Description', 'SATA Controller'],
    ['ElementName', 'SATA Controller 0'],
    ['InstanceID', 3],
    ['ResourceSubType', 'vmware.sata.ahci'],
    ['ResourceType', 20],
  ]),
  item([
    ['AddressOnParent', 0],
    ['ElementName', 'Hard Disk 1'],
    ['HostResource', 'ovf:/disk/vmdisk1'],
    ['InstanceID', 4],
    ['Parent', 3],
    ['ResourceType', 17],
  ]),
  item([
    ['AutomaticAllocation', 'true'],
    ['Connection', network],
    ['Description', `E1000 ethernet adapter on "${network}"`],
    ['ElementName', 'Network adapter 1'],
    ['InstanceID', 5],
    ['ResourceSubType', 'E1000'],
    ['ResourceType', 10],
  ]),
].join('\n')}${efi ? '\n      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>' : ''}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

/** A `.mf` line as ovftool writes it. */
export const manifestLine = (file: string, sha256: string) => `SHA256(${file})= ${sha256}\n`;

export async function writeOva(opts: OvaOptions): Promise<{ size: number }> {
  const tools = opts.qemuImg;
  const what = 'OVA';
  const base = archiveBaseName(opts.name);
  const ovfName = `${base}.ovf`;
  const vmdkName = `${base}-disk1.vmdk`;
  const mfName = `${base}.mf`;
  const progress = progressScale(opts.onProgress);
  return writeAtomically(what, opts.out, async (workDir, partial) => {
    const vmdk = path.join(workDir, vmdkName);
    await step(what, opts.out, 'converting the disk to a streamOptimized VMDK (qemu-img convert)', () =>
      tools.convert(opts.source, opts.sourceFormat, vmdk, 'vmdk', {
        options: ['subformat=streamOptimized'],
        onProgress: progress.phase(0, 80),
        signal: opts.signal,
      }),
    );
    const { virtualSize } = await step(what, opts.out, 'reading the VMDK (qemu-img info)', () =>
      tools.imageInfo(vmdk, 'vmdk', false, opts.signal),
    );
    const vmdkSize = (await stat(vmdk)).size;
    const ovf = ovfDescriptor({
      name: opts.name,
      cpus: opts.cpus,
      memoryMiB: opts.memoryMiB,
      firmware: opts.firmware,
      arch: opts.arch,
      diskFile: vmdkName,
      diskFileSize: vmdkSize,
      capacity: virtualSize,
    });
    // The VMDK is hashed while it streams into the archive (the manifest comes after it): one read.
    const vmdkHash = createHash('sha256');
    let packed = 0;
    const packing = progress.phase(80, 100);
    await step(what, opts.out, 'writing the archive (tar)', () =>
      writeTar(
        partial,
        [
          { name: ovfName, data: ovf },
          {
            name: vmdkName,
            file: vmdk,
            onChunk: (c) => {
              vmdkHash.update(c);
              packed += c.length;
              packing((100 * packed) / Math.max(1, vmdkSize));
            },
          },
          {
            name: mfName,
            data: () =>
              manifestLine(ovfName, createHash('sha256').update(ovf).digest('hex')) +
              manifestLine(vmdkName, vmdkHash.digest('hex')),
          },
        ],
        { signal: opts.signal },
      ),
    );
    const { size } = await stat(partial);
    progress.done();
    return { size };
  });
}
