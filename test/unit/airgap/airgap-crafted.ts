/**
 * Crafted bundles for the tests: a tar whose manifest lists its members with their real digests, so
 * the only thing wrong with it is what a test changes on purpose (a hostile manifest field, an index
 * entry, a symlink member...), as an attacker who rewrites the manifest to match would do.
 */
import { createHash } from 'node:crypto';
import tar from 'tar-stream';

export const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export interface CraftedMember {
  name: string;
  body?: Buffer;
  type?: 'file' | 'symlink' | 'link' | 'directory';
  linkname?: string;
}

export function tarOf(members: CraftedMember[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const m of members) {
    const type = m.type ?? 'file';
    const header: tar.Header = {
      name: m.name,
      type,
      linkname: m.linkname ?? '',
      size: type === 'file' ? (m.body ?? Buffer.alloc(0)).length : 0,
      mode: 0o644,
      mtime: new Date(0),
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
      devmajor: 0,
      devminor: 0,
    };
    if (type === 'file') pack.entry(header, m.body ?? Buffer.alloc(0));
    else (pack.entry(header) as unknown as NodeJS.WritableStream).end();
  }
  pack.finalize();
  return done;
}

export interface CraftOptions {
  /** Files of the template's tree: path -> content. */
  files?: Record<string, string>;
  template?: string;
  varFiles?: string[];
  /** Recorded responses: url -> body (status 200), with index entries overridable. */
  responses?: {
    url: string;
    body: string;
    status?: unknown;
    headers?: Record<string, unknown>;
    sha256?: unknown;
    size?: unknown;
  }[];
  /** Changes the manifest (parsed) before it is written. */
  editManifest?: (m: Record<string, unknown>) => void;
  /** Changes the member list (after the manifest) before the tar is written. */
  editMembers?: (members: CraftedMember[]) => void;
}

export async function craftBundle(o: CraftOptions = {}): Promise<Buffer> {
  const files = o.files ?? { 'tpl/kiln.yaml': 'builds: []\n' };
  const blobs = new Map<string, Buffer>();
  const tree = Object.entries(files).map(([p, content]) => {
    const body = Buffer.from(content);
    blobs.set(sha(body), body);
    return { path: p, sha256: sha(body), size: body.length, executable: false };
  });
  const extra: { name: string; body: Buffer }[] = [];
  if (o.responses) {
    const responses = o.responses.map((r) => {
      const body = Buffer.from(r.body);
      blobs.set(sha(body), body);
      return {
        url: r.url,
        status: r.status ?? 200,
        headers: r.headers ?? { 'content-type': 'text/plain' },
        sha256: r.sha256 ?? sha(body),
        size: r.size ?? body.length,
      };
    });
    extra.push({ name: 'packages/index.json', body: Buffer.from(JSON.stringify({ version: 1, responses })) });
  }
  const members = [...[...blobs].map(([digest, body]) => ({ name: `blobs/${digest}`, body })), ...extra].sort((a, b) =>
    a.name < b.name ? -1 : 1,
  );
  const manifest: Record<string, unknown> = {
    kind: 'kiln-bundle',
    version: 1,
    kilnVersion: 'test',
    template: o.template ?? Object.keys(files)[0],
    varFiles: o.varFiles ?? [],
    tree,
    packages: o.responses?.length ?? 0,
    members: members.map((m) => ({ name: m.name, sha256: sha(m.body), size: m.body.length })),
  };
  o.editManifest?.(manifest);
  const list: CraftedMember[] = [{ name: 'manifest.json', body: Buffer.from(JSON.stringify(manifest)) }, ...members];
  o.editMembers?.(list);
  return tarOf(list);
}
