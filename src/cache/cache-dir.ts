/** Where kiln keeps its caches (base image downloads, provisioner layers) unless told otherwise. */
import os from 'node:os';
import path from 'node:path';

export function defaultCacheDir(): string {
  return process.env.KILN_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'kiln');
}
