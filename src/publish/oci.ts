/**
 * An OCI registry, as a KubeVirt containerDisk: a single-layer image whose layer holds the disk under
 * /disk/ owned by 107:107 (the qemu user in virt-launcher), the layout KubeVirt documents. Pushed with
 * the OCI distribution API in one pass over the disk: the layer tar is built, hashed and sent in chunks
 * as the disk is read (POST, PATCH with Content-Range, then PUT ?digest= with the digest computed on
 * the way; the registry checks it), the config and the manifest by digest, then each tag. The layer
 * tar is byte-for-byte reproducible (fixed times and owners), and the manifest's annotations name the
 * disk's sha256: a re-run reads the tags' manifests, finds this disk's layer there, and when every tag
 * already holds the manifest it would push, sends nothing without reading the disk. A failed blob
 * upload is cancelled (DELETE of the upload session); tags are written last, so a failure never
 * leaves a tag pointing at a partial image. Auth: HTTP basic (htpasswd), or the bearer token dance
 * when the registry answers with a Bearer challenge.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { z } from 'zod';
import type { ociTarget } from '../template/schema-publish.js';
import { request, textOf, type Timeouts } from './http.js';
import { ArtifactCheck } from './integrity.js';
import { safeUrl, serverSaid } from './redact.js';
import { archProfile, type GuestArch } from '../qemu/arch.js';
import {
  HttpStatusError,
  PublishError,
  type CredentialDestination,
  type PublishArtifact,
  type PublishContext,
  type Publisher,
  withRetries,
} from './target.js';

type OciTarget = z.output<typeof ociTarget>;

const manifestType = 'application/vnd.oci.image.manifest.v1+json';
const configType = 'application/vnd.oci.image.config.v1+json';
const layerType = 'application/vnd.oci.image.layer.v1.tar';

/**
 * The containerDisk layer: `disk/` and `disk/<name>`, uid/gid 107, times at the epoch. With `check`,
 * the disk is hashed as it is read and the tar fails instead of ending when it is not the manifest's
 * artifact (the blob upload is then cancelled before its closing PUT ?digest=).
 */
export function containerDiskLayer(artifact: PublishArtifact, check?: ArtifactCheck): Readable {
  const pack = tar.pack();
  const common = { uid: 107, gid: 107, uname: '', gname: '', mtime: new Date(0) };
  pack.entry({ name: 'disk/', type: 'directory', mode: 0o555, ...common });
  const entry = pack.entry(
    { name: `disk/${artifact.name}`, type: 'file', mode: 0o444, size: artifact.size, ...common },
    (err) => {
      if (err) {
        pack.destroy(check && check.bytes !== artifact.size ? (failed(check) ?? err) : err);
        return;
      }
      const bad = check && failed(check);
      if (bad) pack.destroy(bad);
      else pack.finalize();
    },
  );
  const src = createReadStream(artifact.path);
  if (check) src.on('data', (c) => check.update(c as Buffer));
  src.on('error', (e) => pack.destroy(e));
  src.pipe(entry);
  return pack as unknown as Readable;
}

function failed(check: ArtifactCheck): Error | undefined {
  try {
    check.verify();
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

/** `boundToHost`: the credential came from a docker config.json entry keyed by this very registry. */
interface RegistryAuth {
  basic?: string;
  from: string;
  boundToHost?: boolean;
}

/** Credentials from KILN_REGISTRY_USERNAME/PASSWORD, else a docker config.json's `auths` entry. */
export function registryAuth(target: OciTarget, env: NodeJS.ProcessEnv, name: string): RegistryAuth {
  if (env.KILN_REGISTRY_USERNAME || env.KILN_REGISTRY_PASSWORD) {
    if (!env.KILN_REGISTRY_USERNAME || !env.KILN_REGISTRY_PASSWORD) {
      throw new PublishError(
        `publish target "${name}": ${env.KILN_REGISTRY_USERNAME ? 'KILN_REGISTRY_PASSWORD' : 'KILN_REGISTRY_USERNAME'} is not set`,
        { fix: `set both KILN_REGISTRY_USERNAME and KILN_REGISTRY_PASSWORD, or neither to use a docker config.json` },
      );
    }
    return {
      basic: Buffer.from(`${env.KILN_REGISTRY_USERNAME}:${env.KILN_REGISTRY_PASSWORD}`).toString('base64'),
      from: 'KILN_REGISTRY_USERNAME / KILN_REGISTRY_PASSWORD',
    };
  }
  const file =
    target.credentials_file ??
    path.join(env.DOCKER_CONFIG ?? path.join(env.HOME ?? os.homedir(), '.docker'), 'config.json');
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    if (target.credentials_file) {
      throw new PublishError(
        `publish target "${name}": cannot read credentials_file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        { fix: `point it at a docker config.json (docker login writes one)` },
      );
    }
    return { from: 'no credentials (anonymous)' };
  }
  const entry =
    config.auths?.[target.registry] ??
    config.auths?.[`https://${target.registry}`] ??
    config.auths?.[`http://${target.registry}`];
  if (!entry) return { from: `no entry for ${target.registry} in ${file} (anonymous)` };
  const basic =
    entry.auth ??
    (entry.username ? Buffer.from(`${entry.username}:${entry.password ?? ''}`).toString('base64') : undefined);
  return { basic, from: `auths["${target.registry}"] in ${file}`, boundToHost: true };
}

/**
 * Why a token realm must not get the registry's password as Basic: a plain-http realm handed out by
 * an https registry (a downgrade: the password would cross the network in clear, to wherever the
 * realm points). Undefined when it may.
 */
export function realmProblem(registryBase: string, realm: string): string | undefined {
  let u: URL;
  try {
    u = new URL(realm);
  } catch {
    return `its token realm ${JSON.stringify(safeUrl(realm))} is not a URL`;
  }
  if (!/^https?:$/.test(u.protocol)) return `its token realm ${safeUrl(realm)} is not an http(s) URL`;
  if (new URL(registryBase).protocol === 'https:' && u.protocol === 'http:') {
    return `the https registry sent kiln to a plain-http token realm (${safeUrl(realm)}), where the password would go in clear`;
  }
  return undefined;
}

export class Registry {
  private bearer?: string;
  constructor(
    private readonly base: string,
    private readonly repo: string,
    private readonly auth: RegistryAuth,
    private readonly name: string,
    private readonly signal: AbortSignal,
    private readonly timeouts: Timeouts,
    private readonly credentialsTo: (d: CredentialDestination) => void = () => undefined,
  ) {}

  url(p: string): string {
    return p.startsWith('http') ? p : `${this.base}${p}`;
  }

  /** `init.signal` replaces the publish's own (a cancel must still go out after an interrupt). */
  async request(
    method: string,
    p: string,
    init: { headers?: Record<string, string>; body?: Buffer | string; signal?: AbortSignal } = {},
    retried = false,
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.bearer) headers.authorization = `Bearer ${this.bearer}`;
    else if (this.auth.basic) headers.authorization = `Basic ${this.auth.basic}`;
    const res = await this.follow(method, this.url(p), headers, init);
    if (res.status === 401 && !retried) {
      const challenge = res.headers.get('www-authenticate') ?? '';
      await res.body?.cancel();
      if (/^bearer/i.test(challenge)) {
        await this.token(challenge);
        return this.request(method, p, init, true);
      }
      if (/^basic/i.test(challenge) && this.auth.basic && !headers.authorization)
        return this.request(method, p, init, true);
      throw this.refused(res.status);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw this.refused(res.status);
    }
    return res;
  }

  /** Follows redirects (a registry may send blobs to storage); the credential never goes to another origin. */
  private async follow(
    method: string,
    url: string,
    headers: Record<string, string>,
    init: { body?: Buffer | string; signal?: AbortSignal },
  ): Promise<Response> {
    let at = new URL(url);
    const origin = at.origin;
    for (let hops = 0; ; hops++) {
      const h =
        at.origin === origin
          ? headers
          : Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
      const res = await request(at, {
        method,
        headers: h,
        body: init.body,
        signal: init.signal ?? this.signal,
        timeouts: this.timeouts,
      });
      const next = res.headers.get('location');
      if (
        ![301, 302, 303, 307, 308].includes(res.status) ||
        !next ||
        hops >= 5 ||
        (method !== 'GET' && method !== 'HEAD')
      )
        return res;
      await res.body?.cancel();
      at = new URL(next, at);
    }
  }

  private refused(status: number): PublishError {
    return new PublishError(
      `publish target "${this.name}": the registry refused ${this.auth.basic ? `the credentials from ${this.auth.from}` : 'anonymous access'} (HTTP ${status})`,
      {
        fix: `${this.auth.basic ? 'check the user name and password' : 'set KILN_REGISTRY_USERNAME and KILN_REGISTRY_PASSWORD, or docker login to the registry'}`,
      },
    );
  }

  private async token(challenge: string): Promise<void> {
    const params = Object.fromEntries(
      [...challenge.replace(/^bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]),
    );
    if (!params.realm)
      throw new PublishError(
        `publish target "${this.name}": the registry asked for a token without saying where to get one`,
      );
    if (this.auth.basic) {
      const problem = realmProblem(this.base, params.realm);
      if (problem)
        throw new PublishError(`publish target "${this.name}": ${problem}; kiln did not send ${this.auth.from} there`, {
          fix: `check the registry's token configuration (its auth.token.realm must be https), or use a docker config.json for it`,
        });
      this.credentialsTo({
        kind: "the registry's token service",
        url: params.realm,
        from: this.auth.from,
        hostFromSettings: false,
      });
    }
    const u = new URL(params.realm);
    if (params.service) u.searchParams.set('service', params.service);
    u.searchParams.set('scope', params.scope ?? `repository:${this.repo}:pull,push`);
    const res = await request(u, {
      headers: this.auth.basic ? { authorization: `Basic ${this.auth.basic}` } : {},
      signal: this.signal,
      timeouts: this.timeouts,
    });
    // Only a refusal says the credentials are wrong; a missing or broken token service says so.
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw this.refused(res.status);
    }
    if (!res.ok) {
      const said = serverSaid(await textOf(res));
      throw new HttpStatusError(
        `the registry's token service at ${safeUrl(params.realm)} answered HTTP ${res.status}${res.status === 404 ? " (no such endpoint: the registry's token realm is wrong, not your credentials)" : ''}${said ? `; ${said}` : ''}`,
        res.status,
      );
    }
    const text = await textOf(res);
    let body: { token?: unknown; access_token?: unknown } = {};
    try {
      body = JSON.parse(text);
    } catch {
      /* below */
    }
    const token = body?.token ?? body?.access_token;
    if (typeof token !== 'string' || !token) {
      throw new Error(
        `the registry's token service at ${safeUrl(params.realm)} answered HTTP ${res.status} without a token (JSON with "token" or "access_token" was expected)${text.trim() ? `; ${serverSaid(text)}` : ''}`,
      );
    }
    this.bearer = token;
  }
}

async function expect(res: Response, ok: number[], what: string): Promise<Response> {
  if (ok.includes(res.status)) return res;
  const said = serverSaid(await textOf(res));
  throw new HttpStatusError(
    `${what}: HTTP ${res.status} from ${safeUrl(res.url || '') || 'the registry'}${said ? `; ${said}` : ''}`,
    res.status,
  );
}

async function blobExists(reg: Registry, repo: string, digest: string): Promise<boolean> {
  const res = await reg.request('HEAD', `/v2/${repo}/blobs/${digest}`);
  return res.status === 200;
}

function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

async function startUpload(reg: Registry, repo: string): Promise<string> {
  const start = await expect(await reg.request('POST', `/v2/${repo}/blobs/uploads/`), [202], 'start blob upload');
  const location = start.headers.get('location');
  if (!location) throw new Error('the registry started a blob upload without a Location');
  return new URL(location, reg.url('/')).toString();
}

/** A small blob whose digest is known: sent in one PUT unless the registry already has it. */
async function pushSmallBlob(reg: Registry, repo: string, digest: string, body: Buffer): Promise<number> {
  if (await blobExists(reg, repo, digest)) return 0;
  const location = await startUpload(reg, repo);
  try {
    await expect(
      await reg.request('PUT', withDigest(location, digest), {
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
        body,
      }),
      [201],
      'upload blob',
    );
    return body.length;
  } catch (e) {
    await cancelUpload(reg, location);
    throw e;
  }
}

/** Cancels an upload session so the registry drops what it holds of it (best effort). */
async function cancelUpload(reg: Registry, location: string): Promise<void> {
  await reg.request('DELETE', location, { signal: AbortSignal.timeout(10_000) }).then(
    (r) => r.body?.cancel(),
    () => {},
  );
}

/**
 * The layer in one pass over the disk: a chunked upload (POST, PATCH with Content-Range) hashing
 * what it sends, closed by PUT ?digest= with the digest it computed; the registry checks it. The
 * session is cancelled if anything fails, so no blob is left half-written.
 */
export async function pushStreamedBlob(
  reg: Registry,
  repo: string,
  source: AsyncIterable<Buffer>,
  chunkSize: number,
  ctx: PublishContext,
  total: number,
): Promise<{ digest: string; size: number }> {
  let location = await startUpload(reg, repo);
  const hash = createHash('sha256');
  let sent = 0;
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      const body = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      const res = await expect(
        await reg.request('PATCH', location, {
          headers: {
            'content-type': 'application/octet-stream',
            'content-range': `${sent}-${sent + body.length - 1}`,
            'content-length': String(body.length),
          },
          body,
        }),
        [202],
        'upload blob chunk',
      );
      location = new URL(res.headers.get('location') ?? location, reg.url('/')).toString();
      sent += body.length;
      ctx.progress(sent, total);
    };
    for await (const chunk of source) {
      ctx.signal.throwIfAborted();
      hash.update(chunk);
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= chunkSize) await flush();
    }
    if (pendingBytes) await flush();
    const digest = `sha256:${hash.digest('hex')}`;
    await expect(
      await reg.request('PUT', withDigest(location, digest), { headers: { 'content-length': '0' } }),
      [201],
      'finish blob upload',
    );
    return { digest, size: sent };
  } catch (e) {
    await cancelUpload(reg, location);
    throw e;
  }
}

/** The layer tar's size: two 512-byte headers, the disk padded to 512, the 1024-byte end marker. */
export function layerSize(artifact: { size: number }): number {
  return 1024 + Math.ceil(artifact.size / 512) * 512 + 1024;
}

interface ImageManifest {
  annotations?: Record<string, string>;
  layers?: { digest: string; size: number; mediaType: string }[];
}

/** The image's OCI platform: what `docker pull --platform` and KubeVirt's node selection match (linux/amd64, linux/arm64). */
export function ociPlatform(arch: GuestArch | undefined): { architecture: string; os: 'linux' } {
  return { architecture: archProfile(arch).ociArchitecture, os: 'linux' };
}

/** The containerDisk's config and manifest for a layer, with their digests. */
export function imageFor(artifact: PublishArtifact, layer: { digest: string; size: number }, arch?: GuestArch) {
  const config = Buffer.from(
    JSON.stringify({
      ...ociPlatform(arch),
      config: {},
      rootfs: { type: 'layers', diff_ids: [layer.digest] },
      history: [{ created_by: `kiln: containerDisk of ${artifact.name} (sha256 ${artifact.sha256})` }],
    }),
  );
  const configDigest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: manifestType,
      config: { mediaType: configType, digest: configDigest, size: config.length },
      layers: [{ mediaType: layerType, digest: layer.digest, size: layer.size }],
      annotations: { 'org.opencontainers.image.title': artifact.name, 'io.kiln.disk.sha256': artifact.sha256 },
    }),
  );
  return {
    config,
    configDigest,
    manifest,
    manifestDigest: `sha256:${createHash('sha256').update(manifest).digest('hex')}`,
  };
}

/**
 * The layer of this very disk, when a tag already names a kiln containerDisk of it (its annotations
 * give the disk's sha256 and name; the layer tar is a pure function of those and the bytes). Lets a
 * re-run decide "nothing to send" without reading the disk at all.
 */
export function layerOfSameDisk(
  m: ImageManifest,
  artifact: PublishArtifact,
): { digest: string; size: number } | undefined {
  const a = m.annotations ?? {};
  if (a['io.kiln.disk.sha256'] !== artifact.sha256 || a['org.opencontainers.image.title'] !== artifact.name)
    return undefined;
  if (m.layers?.length !== 1 || m.layers[0]!.mediaType !== layerType) return undefined;
  return { digest: m.layers[0]!.digest, size: m.layers[0]!.size };
}

export const publishOci: Publisher<OciTarget> = async (target, artifact, ctx) => {
  const name = target.name ?? 'oci';
  const auth = registryAuth(target, ctx.env, name);
  const base = `${target.insecure ? 'http' : 'https'}://${target.registry}`;
  const repo = target.repository;
  if (auth.basic)
    ctx.credentialsTo({ kind: 'the OCI registry', url: base, from: auth.from, hostFromSettings: !auth.boundToHost });
  const reg = new Registry(base, repo, auth, name, ctx.signal, ctx.timeouts, ctx.credentialsTo);

  // What each tag holds now (manifests are small): a tag naming a containerDisk of this disk gives
  // the layer's digest without reading the disk.
  const current = await Promise.all(
    target.tags.map((tag) =>
      withRetries(`GET manifest ${tag}`, ctx, async () => {
        const res = await reg.request('GET', `/v2/${repo}/manifests/${tag}`, { headers: { accept: manifestType } });
        if (res.status === 404) {
          await res.body?.cancel();
          return null;
        }
        const body = await (await expect(res, [200], `GET manifest ${tag}`)).arrayBuffer();
        const digest =
          res.headers.get('docker-content-digest') ??
          `sha256:${createHash('sha256').update(Buffer.from(body)).digest('hex')}`;
        let parsed: ImageManifest = {};
        try {
          parsed = JSON.parse(Buffer.from(body).toString()) as ImageManifest;
        } catch {
          /* not ours */
        }
        return { digest, manifest: parsed };
      }),
    ),
  );
  let layer = current.map((c) => c && layerOfSameDisk(c.manifest, artifact)).find(Boolean);
  if (layer) {
    const image = imageFor(artifact, layer, ctx.arch);
    if (
      current.every((c) => c?.digest === image.manifestDigest) &&
      (await withRetries('HEAD layer', ctx, () => blobExists(reg, repo, layer!.digest)))
    ) {
      const location = `oci://${target.registry}/${repo}@${image.manifestDigest}`;
      ctx.log(
        `${target.registry}/${repo}:${target.tags.join(',')} already is ${image.manifestDigest}: nothing to send`,
      );
      return {
        location,
        id: image.manifestDigest,
        remote_digest: image.manifestDigest,
        unchanged: true,
        bytes_sent: 0,
      };
    }
    if (!(await withRetries('HEAD layer', ctx, () => blobExists(reg, repo, layer!.digest)))) layer = undefined;
  }
  const chunk = target.chunk_size;
  let sentLayer = 0;
  if (!layer) {
    // One pass: the layer tar is built, hashed and sent as the disk is read.
    // Each try reads the disk again, checked against the manifest before the layer is closed.
    const pushed = await withRetries('push layer', ctx, () =>
      pushStreamedBlob(
        reg,
        repo,
        containerDiskLayer(artifact, new ArtifactCheck(artifact)) as AsyncIterable<Buffer>,
        chunk,
        ctx,
        layerSize(artifact),
      ),
    );
    layer = pushed;
    sentLayer = pushed.size;
  }
  const { config, configDigest, manifest, manifestDigest } = imageFor(artifact, layer, ctx.arch);
  const location = `oci://${target.registry}/${repo}@${manifestDigest}`;
  await withRetries('push config', ctx, () => pushSmallBlob(reg, repo, configDigest, config));
  // By digest first: the tags below are the only thing that makes the image findable.
  for (const ref of [manifestDigest, ...target.tags]) {
    await withRetries(`put manifest ${ref}`, ctx, async () => {
      const res = await expect(
        await reg.request('PUT', `/v2/${repo}/manifests/${ref}`, {
          headers: { 'content-type': manifestType },
          body: manifest,
        }),
        [201],
        `put manifest ${ref}`,
      );
      const got = res.headers.get('docker-content-digest');
      await res.body?.cancel();
      if (got && got !== manifestDigest)
        throw new Error(`the registry stored manifest ${ref} as ${got}, not ${manifestDigest}`);
    });
  }
  ctx.progress(layer.size, layer.size);
  return { location, id: manifestDigest, remote_digest: manifestDigest, unchanged: false, bytes_sent: sentLayer };
};
