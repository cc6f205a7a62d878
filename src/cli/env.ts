/**
 * The environment variables kiln reads, all from here: the CLI turns them into the library's options
 * (the library itself reads no KILN_* variable, at import or at call time).
 */
import { defaultCacheDir } from '../util/cache-dir.js';
import { driverOptionsFromEnv, type DriverOptions } from '../qemu/driver.js';

/** KILN_CACHE_DIR, else the XDG cache directory's kiln/. */
export function cacheDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.KILN_CACHE_DIR || defaultCacheDir(env.XDG_CACHE_HOME);
}

/** KILN_QEMU, KILN_QEMU_IMG, KILN_ACCELERATOR, KILN_ACCEL_CACHE, KILN_SSH_HOST_PORTS, named in messages as such. */
export function qemuOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): DriverOptions {
  return driverOptionsFromEnv(env);
}

/** KILN_TAR: the GNU tar for GCE tarballs (default: tar on PATH). */
export function tarBinaryFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.KILN_TAR || undefined;
}
