/** file: copies a file or folder into the guest (upload), or out of it onto the host (download). */
import { z } from 'zod';
import path from 'node:path';
import { baseName, defineKind } from './kind.js';
import { because, kindObject, size } from './common.js';

export const fileSchema = kindObject('file', {
  source: z.string().optional(),
  content: z.string().optional(),
  destination: z.string(),
  direction: z.enum(['upload', 'download']).default('upload'),
  /** A download writes at most this much to the host (a file, or a folder's files together) [10G]. */
  max_size: size.optional(),
})
  .refine((p) => p.direction === 'download' || p.destination.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p.destination), {
    // C:/ on a Windows guest with OpenSSH
    // On the guest's side, where a relative path would depend on the SFTP server's idea of "here".
    ...because(
      "an upload's destination is a path in the guest, and it must be absolute",
      'write an absolute guest path, e.g. destination: /tmp/motd',
    ),
    path: ['destination'],
  })
  .refine(
    (p) => (p.source === undefined) !== (p.content === undefined),
    because(
      'a file provisioner needs exactly one of "source" or "content"',
      'keep "source" to copy a file, or "content" to write the given text',
    ),
  )
  .refine(
    (p) => !(p.direction === 'download' && p.content !== undefined),
    because(
      '"content" only makes sense for uploads',
      'downloads need "source" (the guest path): replace "content" with it',
    ),
  )
  .refine((p) => p.direction === 'download' || p.max_size === undefined, {
    ...because(
      '"max_size" bounds what a download writes to the host',
      'remove max_size from this upload, or set direction: download',
    ),
    path: ['max_size'],
  });

export type FileProvisioner = z.output<typeof fileSchema>;

/** Directories Linux guests empty at boot (tmpfs, or systemd-tmpfiles' `D /tmp` on Debian). */
const CLEARED_AT_BOOT = /^\/(tmp|run|dev\/shm|var\/run)(\/|$)/;

/** Where an uploaded file lands: the SSH upload's rules ("dir/" takes a file by its name; "src/" copies a folder's contents). */
function guestPathOf(source: string, destination: string, rel: string): string {
  if (!rel) return destination.endsWith('/') ? destination + path.basename(source) : destination;
  const target = source.endsWith('/') ? destination : path.posix.join(destination, path.basename(source));
  return path.posix.join(target, rel);
}

export const file = defineKind(fileSchema, {
  summary: 'copies files into the guest, or out of it onto the host',
  describe: (p) =>
    p.direction === 'download'
      ? `file (download ${p.source})`
      : `file (${p.content !== undefined ? 'content' : baseName(p.source)} -> ${p.destination})`,
  resolvePaths(p, paths) {
    if (p.direction === 'upload' && p.source !== undefined) p.source = paths.existing(p.source, ['source'], 'any');
    else if (p.direction === 'download') p.destination = paths.resolve(p.destination);
  },
  hostInputs(p) {
    if (p.direction !== 'upload' || p.source === undefined) return [];
    const { source, destination } = p;
    return [
      {
        path: source,
        digest: 'path',
        role: 'upload',
        follow: false,
        guest: (rel) => guestPathOf(source, destination, rel),
      },
    ];
  },
  uncacheable: (p) =>
    p.direction === 'download' ? 'a file download writes to the host (set cache: true to cache anyway)' : undefined,
  // An upload into /tmp, say, is gone from a guest resumed from its layer (the usual "upload, then install" pair).
  bootVolatile: (p) => p.direction === 'upload' && CLEARED_AT_BOOT.test(path.posix.normalize(p.destination)),
  needs: 'communicator',
  fromPacker(m) {
    const { r } = m;
    m.common();
    // Packer copies `source` and then each of `sources` to the destination ("dir/" for a folder).
    const srcs = [m.str('source'), ...(m.strs('sources') ?? [])].filter((x) => x !== undefined);
    const direction = m.str('direction') ?? 'upload';
    r.direction = direction;
    r.source = srcs[0] === undefined ? undefined : direction === 'upload' ? m.abs(srcs[0]) : srcs[0];
    r.content = m.str('content');
    const dest = m.str('destination');
    r.destination = dest === undefined ? undefined : direction === 'download' ? m.abs(dest) : dest;
    if (srcs.length > 1 && !(dest ?? '').endsWith('/'))
      m.problem(
        'sources',
        `${srcs.length} sources go into one destination, "${dest ?? ''}", which is not a folder`,
        'end destination with "/" (Packer needs that too: each source goes into the folder)',
      );
    for (const s of srcs.slice(1)) m.more.push({ ...r, source: direction === 'upload' ? m.abs(s) : s });
  },
});
