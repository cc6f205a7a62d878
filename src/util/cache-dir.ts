/**
 * Where kiln keeps its caches (base image downloads, provisioner layers) unless told otherwise: the
 * XDG cache directory's kiln/. The CLI lets KILN_CACHE_DIR override it (cli/env.ts); the library
 * reads no KILN_* variable and takes `cacheDir` as an option.
 */
import os from 'node:os';
import path from 'node:path';

export function defaultCacheDir(xdgCacheHome: string | undefined = process.env.XDG_CACHE_HOME): string {
  return path.join(xdgCacheHome || path.join(os.homedir(), '.cache'), 'kiln');
}
