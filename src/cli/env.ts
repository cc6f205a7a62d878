/**
 * The environment variables kiln reads, all here: the CLI turns them into the library's options
 * (the library itself reads no KILN_* variable, at import or at call time).
 */
import { defaultCacheDir } from '../util/cache-dir.js';

/** KILN_CACHE_DIR, else the XDG cache directory's kiln/. */
export function cacheDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.KILN_CACHE_DIR || defaultCacheDir(env.XDG_CACHE_HOME);
}
