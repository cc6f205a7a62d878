/**
 * Inputs a template's path resolution does not list, which a bundle carries too: files named inside
 * qemu_args (-kernel /boot/vmlinuz, -drive file=/srv/x.img,...), and base images or ISOs given as URLs,
 * taken from the download cache by digest (the recording build downloaded them).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import { isHttpUrl } from '../util/url.js';
import { downloadUrlKey } from '../cache/download.js';
import { KilnError } from '../util/errors.js';

/** The pieces of a QEMU argument that can be a path: the whole, each comma-separated option, each option's value. */
function pathPieces(arg: string): string[] {
  const out = new Set<string>([arg]);
  for (const opt of arg.split(',')) {
    out.add(opt);
    const eq = opt.indexOf('=');
    if (eq > 0) out.add(opt.slice(eq + 1));
  }
  return [...out].filter((p) => p.startsWith('/'));
}

/**
 * Host files named by absolute paths in a build's qemu_args (QEMU runs in kiln's work directory, so a
 * relative path there names nothing the template could rely on).
 */
export function qemuArgFiles(qemuArgs: string[][]): string[] {
  const files = new Set<string>();
  for (const group of qemuArgs) {
    for (const arg of group) {
      for (const p of pathPieces(arg)) if (statSync(p, { throwIfNoEntry: false })?.isFile()) files.add(path.resolve(p));
    }
  }
  return [...files].sort();
}

/** qemu_args with each carried path (as `map` says) replaced by its copy; the rest of each argument kept byte for byte. */
export function mapQemuArgPaths(qemuArgs: string[][], map: (p: string) => string): string[][] {
  return qemuArgs.map((group) =>
    group.map((arg) => {
      if (arg.startsWith('/')) {
        const m = map(arg);
        if (m !== arg) return m;
      }
      return arg
        .split(',')
        .map((opt) => {
          if (opt.startsWith('/')) return map(opt);
          const eq = opt.indexOf('=');
          if (eq > 0 && opt[eq + 1] === '/') return `${opt.slice(0, eq + 1)}${map(opt.slice(eq + 1))}`;
          return opt;
        })
        .join(',');
    }),
  );
}

export interface CarriedDownload {
  url: string;
  sha256: string;
  size: number;
  file: string;
}

/**
 * Where fetchToCache (src/cache/download.ts) keeps a URL's download: `downloads/url-<sha256(url)[:24]>.json`
 * names its SHA-256, the file is `sha256-<hex>` (or, checked against another digest, `<algorithm>-<hex>`).
 */
export function cachedDownload(
  url: string,
  cacheDir: string,
  checksum: string,
): { file: string; sha256: string } | undefined {
  const dir = path.join(cacheDir, 'downloads');
  const index = path.join(dir, `url-${downloadUrlKey(url)}.json`);
  if (!existsSync(index)) return undefined;
  let sha256: string;
  try {
    sha256 = (JSON.parse(readFileSync(index, 'utf8')) as { sha256: string }).sha256;
  } catch {
    return undefined;
  }
  if (!/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  const candidates = [path.join(dir, `sha256-${sha256}`)];
  // Checked against another digest, the file is renamed to it (fetchToCache's alias).
  const m = /^(sha512|sha1|md5):([0-9a-fA-F]+)$/.exec(checksum);
  if (m) candidates.push(path.join(dir, `${m[1]}-${m[2]!.toLowerCase()}`));
  const file = candidates.find((f) => statSync(f, { throwIfNoEntry: false })?.isFile());
  return file ? { file, sha256 } : undefined;
}

/** Every base image and ISO given as a URL, from the download cache; throws naming the build and URL when one is not there. */
export function templateDownloads(t: LoadedTemplate, cacheDir: string, templateName: string): CarriedDownload[] {
  const out = new Map<string, CarriedDownload>();
  t.template.builds.forEach((b, i) => {
    for (const field of ['base_image', 'iso'] as const) {
      const url = b.source[field];
      if (url === undefined || !isHttpUrl(url)) continue;
      const hit = cachedDownload(url, cacheDir, b.source.checksum);
      if (!hit) {
        throw new KilnError(
          `${t.file}: builds[${i}].source.${field} ${url} is not in the download cache (${path.join(cacheDir, 'downloads')}), so the bundle cannot carry it`,
          {
            fix: `run the recording build first (kiln build --record ${templateName}), which downloads it, with the same KILN_CACHE_DIR`,
          },
        );
      }
      out.set(url, { url, sha256: hit.sha256, size: statSync(hit.file).size, file: hit.file });
    }
  });
  return [...out.values()].sort((a, b) => (a.url < b.url ? -1 : 1));
}
