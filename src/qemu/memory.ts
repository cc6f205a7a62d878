/** A VM's memory setting (MiB, or a size string such as "1G") as the MiB QEMU and the packages' descriptors take. */
import { parseSize } from '../template/units.js';

export function memoryMiB(memory: number | string): number {
  return typeof memory === 'number' ? memory : Math.round(parseSize(memory) / 2 ** 20);
}
