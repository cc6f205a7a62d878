/**
 * Whether a directory is on a network file system (statfs's magic number). kiln's locks are lock files
 * holding a pid, which mean nothing on another host: a cache directory that several machines mount is
 * not safe to share that way (share layers through a remote cache instead: src/cache/remote).
 */
import { statfsSync } from 'node:fs';

const networkMagic: Record<number, string> = {
  0x6969: 'NFS',
  0xff534d42: 'CIFS',
  0xfe534d42: 'SMB2',
  0x517b: 'SMB',
};

/** The network file system `dir` is on ('NFS', 'CIFS', ...), or undefined for a local one (or when it cannot tell). */
export function networkFileSystem(
  dir: string,
  statfs: (p: string) => { type: number } = statfsSync,
): string | undefined {
  try {
    return networkMagic[statfs(dir).type];
  } catch {
    return undefined;
  }
}
