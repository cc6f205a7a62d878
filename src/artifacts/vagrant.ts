/**
 * Vagrant box for the vagrant-libvirt provider: a gzip'd tar of
 *
 *   metadata.json  {"provider":"libvirt","format":"qcow2","virtual_size":<GiB, rounded up>}
 *   Vagrantfile    provider defaults: KVM, memory, CPUs and, for UEFI, the OVMF loader
 *   box.img        the disk as qcow2 (compat 1.1)
 *   ...            the output's `include` files, by their base names (Packer's include)
 *
 * Logging in: kiln leaves SSH keys alone, so `vagrant up` uses Vagrant's defaults: user "vagrant" with
 * Vagrant's well-known insecure key, which it swaps for a fresh key on first boot. For that to work the
 * image itself must already have a `vagrant` user whose ~/.ssh/authorized_keys holds the insecure public
 * key (https://github.com/hashicorp/vagrant/tree/main/keys), password-less sudo, and sshd enabled —
 * provision them in the template. Without them the box boots but `vagrant up` never gets a shell.
 */
import type { OvaOptions } from './ova.js';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { GiB, progressScale, step, writeAtomically, writeTar } from './tar.js';

/** The same inputs as an OVA, Ruby of the template's own for the box's Vagrantfile, and files to add. */
export type VagrantBoxOptions = OvaOptions & { vagrantfileExtra?: string; include?: string[] };

/**
 * The UEFI loader on the machine running `vagrant up` (not the build host): the 4 MiB OVMF build that
 * Debian 12+, Ubuntu 20.04+ ship in package "ovmf". Other distributions override `libvirt.loader` in
 * their project Vagrantfile (Fedora: /usr/share/edk2/ovmf/OVMF_CODE.fd).
 */
export const VAGRANT_UEFI_LOADER = '/usr/share/OVMF/OVMF_CODE_4M.fd';

export function boxMetadata(virtualSizeBytes: number): string {
  return `${JSON.stringify({ provider: 'libvirt', format: 'qcow2', virtual_size: Math.max(1, Math.ceil(virtualSizeBytes / GiB)) }, null, 2)}\n`;
}

const rubyString = (s: string) => `"${s.replace(/[\\"#]/g, (c) => `\\${c}`)}"`;

/** The box's Vagrantfile: kiln's provider defaults, then `vagrantfileExtra` as it is (as Packer appends its vagrantfile_template). */
export function boxVagrantfile(opts: {
  name: string;
  cpus: number;
  memoryMiB: number;
  firmware: 'bios' | 'uefi';
  vagrantfileExtra?: string;
}): string {
  return `# Box defaults for ${opts.name.replace(/[\r\n]/g, ' ')}, written by kiln; a project Vagrantfile overrides any of them.
# Logging in: \`vagrant up\` uses user "vagrant" and Vagrant's insecure key, so the image must
# already have that user, the insecure public key in its authorized_keys and password-less sudo.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
    libvirt.memory = ${Math.trunc(opts.memoryMiB)}
    libvirt.cpus = ${Math.trunc(opts.cpus)}
${
  opts.firmware === 'uefi'
    ? `    # UEFI: the guest must boot from the removable-media path (\\EFI\\BOOT\\BOOTX64.EFI); the build's NVRAM is not shipped.
    libvirt.loader = ${rubyString(VAGRANT_UEFI_LOADER)}
`
    : ''
}  end
end
${
  opts.vagrantfileExtra === undefined
    ? ''
    : `
# The template's own Vagrantfile content (vagrantfile_template / vagrantfile_extra):
${opts.vagrantfileExtra.endsWith('\n') || opts.vagrantfileExtra === '' ? opts.vagrantfileExtra : `${opts.vagrantfileExtra}\n`}`
}`;
}

export async function writeVagrantBox(opts: VagrantBoxOptions): Promise<{ size: number }> {
  const tools = opts.qemuImg;
  const what = 'Vagrant box';
  const progress = progressScale(opts.onProgress);
  return writeAtomically(what, opts.out, async (workDir, partial) => {
    const img = path.join(workDir, 'box.img');
    await step(what, opts.out, 'converting the disk to qcow2 (qemu-img convert)', () =>
      tools.convert(opts.source, opts.sourceFormat, img, 'qcow2', {
        options: ['compat=1.1'],
        onProgress: progress.phase(0, 50),
        signal: opts.signal,
      }),
    );
    const { virtualSize } = await step(what, opts.out, 'reading box.img (qemu-img info)', () =>
      tools.imageInfo(img, 'qcow2', false, opts.signal),
    );
    const imgSize = (await stat(img)).size;
    let packed = 0;
    const packing = progress.phase(50, 100);
    await step(what, opts.out, "writing the gzip'd archive (tar, gzip)", () =>
      writeTar(
        partial,
        [
          { name: 'metadata.json', data: boxMetadata(virtualSize) },
          { name: 'Vagrantfile', data: boxVagrantfile(opts) },
          {
            name: 'box.img',
            file: img,
            onChunk: (c) => {
              packed += c.length;
              packing((100 * packed) / Math.max(1, imgSize));
            },
          },
          // The template's checks keep these names apart from each other and from the entries above.
          ...(opts.include ?? []).map((file) => ({ name: path.basename(file), file })),
        ],
        { gzip: true, signal: opts.signal },
      ),
    );
    const { size } = await stat(partial);
    progress.done();
    return { size };
  });
}
