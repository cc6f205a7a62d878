/** Packaged outputs (OVA, Vagrant box, GCE tarball): one entry point for the convert step. */
import { writeOva, type OvaOptions } from './ova.js';
import { writeVagrantBox } from './vagrant.js';
import { writeGceTarball } from './gce.js';

/** What every packaged format takes (the OVA's inputs are the fullest set). */
export type PackageInput = OvaOptions & { tarBinary?: string; vagrantfileExtra?: string; include?: string[] };

export async function writePackage(format: 'ova' | 'vagrant' | 'gce', input: PackageInput): Promise<void> {
  switch (format) {
    case 'ova':
      await writeOva(input);
      return;
    case 'vagrant':
      await writeVagrantBox(input);
      return;
    case 'gce':
      await writeGceTarball({
        source: input.source,
        sourceFormat: input.sourceFormat,
        out: input.out,
        onProgress: input.onProgress,
        signal: input.signal,
        tarBinary: input.tarBinary,
        qemuImg: input.qemuImg,
      });
      return;
  }
}
