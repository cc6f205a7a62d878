/**
 * OpenStack Glance (image API v2): create the image record (name, disk/container format, visibility,
 * properties; hw_firmware_type=uefi for a UEFI build; kiln_sha256 to find it again), stream the data
 * with its Content-Length (Glance mishandles chunked uploads), wait for `active`, and check Glance's
 * own os_hash_value (sha512) against the artifact. An image that does not become active with the right
 * hash is deleted, so a failure never leaves something that looks like a finished image. Auth: a
 * Keystone v3 password token from the variables the openstack CLI reads (OS_AUTH_URL, OS_USERNAME,
 * OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME), or none
 * for a Glance run without Keystone (`endpoint:` and no OS_AUTH_URL).
 */
import { createReadStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { z } from 'zod';
import type { glanceTarget } from '../template/schema-publish.js';
import { fileDigests } from '../cache/digest.js';
import { HttpStatusError, PublishError, type PublishArtifact, type PublishContext, type Publisher, withRetries } from './target.js';

type GlanceTarget = z.output<typeof glanceTarget>;

interface GlanceAccess { endpoint: string; token?: string; from: string }

async function keystone(env: NodeJS.ProcessEnv, target: GlanceTarget, name: string, signal: AbortSignal): Promise<GlanceAccess> {
  const authUrl = env.OS_AUTH_URL!.replace(/\/+$/, '');
  for (const v of ['OS_USERNAME', 'OS_PASSWORD', 'OS_PROJECT_NAME']) {
    if (!env[v]) throw new PublishError(`publish target "${name}": OS_AUTH_URL is set but ${v} is not\n  fix: source your OpenStack RC file (openrc), or unset OS_AUTH_URL and give endpoint: for a Glance without Keystone`);
  }
  const body = {
    auth: {
      identity: { methods: ['password'], password: { user: { name: env.OS_USERNAME, domain: { name: env.OS_USER_DOMAIN_NAME ?? 'Default' }, password: env.OS_PASSWORD } } },
      scope: { project: { name: env.OS_PROJECT_NAME, domain: { name: env.OS_PROJECT_DOMAIN_NAME ?? 'Default' } } },
    },
  };
  const url = /\/v3$/.test(authUrl) ? `${authUrl}/auth/tokens` : `${authUrl}/v3/auth/tokens`;
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
  if (res.status === 401 || res.status === 403) {
    await res.body?.cancel();
    throw new PublishError(`publish target "${name}": Keystone at OS_AUTH_URL refused OS_USERNAME / OS_PASSWORD (HTTP ${res.status})\n  fix: check OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and the domains`);
  }
  if (!res.ok) throw new HttpStatusError(`Keystone token request: HTTP ${res.status}`, res.status);
  const token = res.headers.get('x-subject-token')!;
  const catalog = (await res.json() as { token?: { catalog?: { type: string; endpoints: { interface: string; region?: string; url: string }[] }[] } }).token?.catalog ?? [];
  let endpoint = target.endpoint;
  if (!endpoint) {
    const image = catalog.find((s) => s.type === 'image');
    const ep = image?.endpoints.find((e) => e.interface === (env.OS_INTERFACE ?? 'public') && (!env.OS_REGION_NAME || e.region === env.OS_REGION_NAME));
    if (!ep) throw new PublishError(`publish target "${name}": the Keystone catalog has no ${env.OS_INTERFACE ?? 'public'} image endpoint${env.OS_REGION_NAME ? ` in region OS_REGION_NAME=${env.OS_REGION_NAME}` : ''}\n  fix: set endpoint: to Glance's URL, or OS_REGION_NAME / OS_INTERFACE`);
    endpoint = ep.url;
  }
  return { endpoint: endpoint.replace(/\/+$/, ''), token, from: 'OS_USERNAME / OS_PASSWORD' };
}

async function access(target: GlanceTarget, ctx: PublishContext, name: string): Promise<GlanceAccess> {
  if (ctx.env.OS_AUTH_URL) return keystone(ctx.env, target, name, ctx.signal);
  if (!target.endpoint) throw new PublishError(`publish target "${name}": OS_AUTH_URL is not set and the target has no endpoint:\n  fix: source your OpenStack RC file (openrc), or give endpoint: for a Glance without Keystone`);
  return { endpoint: target.endpoint.replace(/\/+$/, ''), from: 'no authentication (endpoint:)' };
}

interface GlanceImage { id: string; status: string; os_hash_value?: string | null; os_hash_algo?: string | null; size?: number | null; kiln_sha256?: string }

export const publishGlance: Publisher<GlanceTarget> = async (target, artifact, ctx) => {
  const name = target.name ?? 'glance';
  const acc = await access(target, ctx, name);
  const api = async (method: string, p: string, body?: unknown, ok = [200, 201, 204]): Promise<unknown> => {
    const headers: Record<string, string> = {};
    if (acc.token) headers['x-auth-token'] = acc.token;
    if (body !== undefined) headers['content-type'] = p.includes('/file') ? 'application/octet-stream' : 'application/json';
    const res = await fetch(`${acc.endpoint}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: ctx.signal });
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new PublishError(`publish target "${name}": Glance refused ${acc.from} (HTTP ${res.status})\n  fix: check OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME, and that the project may create images`);
    }
    if (!ok.includes(res.status)) throw new HttpStatusError(`${method} ${p}: HTTP ${res.status} ${(await res.text()).slice(0, 300).trim()}`, res.status);
    return res.status === 204 ? null : res.json();
  };

  const imageName = target.image_name ?? ctx.build;
  const sha512 = (await fileDigests(artifact.path, ['sha512'])).sha512!;
  const location = (id: string) => `${acc.endpoint}/v2/images/${id}`;
  const list = await withRetries('list images', ctx, () => api('GET', `/v2/images?name=${encodeURIComponent(imageName)}&status=active`)) as { images: GlanceImage[] };
  const same = list.images.find((i) => i.os_hash_value === sha512 && i.kiln_sha256 === artifact.sha256);
  if (same) {
    ctx.log(`image ${same.id} (${imageName}) already holds this artifact: nothing to send`);
    return { location: location(same.id), id: same.id, remote_digest: `sha512:${sha512}`, unchanged: true, bytes_sent: 0 };
  }

  const glanceFormat = artifact.format === 'vhd' ? 'vhd' : artifact.format;
  const properties: Record<string, string> = {
    kiln_sha256: artifact.sha256,
    ...(ctx.uefi ? { hw_firmware_type: 'uefi', hw_machine_type: 'q35' } : {}),
    ...(target.os_distro ? { os_distro: target.os_distro } : {}),
    ...target.properties,
  };
  const image = await withRetries('create image', ctx, () => api('POST', '/v2/images', {
    name: imageName, disk_format: glanceFormat, container_format: 'bare', visibility: target.visibility, ...properties,
  })) as GlanceImage;
  try {
    // A transient failure mid-upload: Glance puts the image back to queued, and the data can go again.
    await withRetries('upload image data', ctx, () => uploadData(acc, image.id, artifact, ctx), {
      stillRetryable: async () => ((await api('GET', `/v2/images/${image.id}`).catch(() => ({}))) as Partial<GlanceImage>).status === 'queued',
    });
    const deadline = Date.now() + target.timeout_seconds * 1000;
    let current = image;
    for (;;) {
      current = await withRetries('read image', ctx, () => api('GET', `/v2/images/${image.id}`)) as GlanceImage;
      if (current.status === 'active') break;
      if (['killed', 'deleted', 'deactivated'].includes(current.status)) throw new Error(`Glance marked image ${image.id} ${current.status} after the upload`);
      if (Date.now() > deadline) throw new Error(`image ${image.id} is still ${current.status} after ${target.timeout_seconds} s\n  fix: raise timeout_seconds:`);
      await new Promise((r) => setTimeout(r, 250));
      ctx.signal.throwIfAborted();
    }
    if (current.os_hash_algo === 'sha512' && current.os_hash_value !== sha512) {
      throw new Error(`Glance's os_hash_value of image ${image.id} is ${current.os_hash_value}, not the artifact's sha512 ${sha512}: the data was damaged on the way`);
    }
    if (current.size !== artifact.size) throw new Error(`Glance holds ${current.size} bytes for image ${image.id}, not the ${artifact.size} sent`);
    return { location: location(image.id), id: image.id, remote_digest: `${current.os_hash_algo ?? 'sha512'}:${current.os_hash_value ?? sha512}`, unchanged: false, bytes_sent: artifact.size };
  } catch (e) {
    // Nothing half-made stays: the queued/saving image goes, whatever failed (an interrupt too).
    const headers: Record<string, string> = acc.token ? { 'x-auth-token': acc.token } : {};
    await fetch(`${acc.endpoint}/v2/images/${image.id}`, { method: 'DELETE', headers }).then((r) => r.body?.cancel(), () => {});
    throw e;
  }
};

/** PUT /v2/images/{id}/file, streamed from the file with Content-Length (never chunked). */
function uploadData(acc: GlanceAccess, id: string, artifact: PublishArtifact, ctx: PublishContext): Promise<void> {
  const url = new URL(`${acc.endpoint}/v2/images/${id}/file`);
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, {
      method: 'PUT', signal: ctx.signal,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(artifact.size), ...(acc.token ? { 'x-auth-token': acc.token } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => {
        if (res.statusCode === 204 || res.statusCode === 200) resolve();
        else reject(new HttpStatusError(`upload image data: HTTP ${res.statusCode} ${text.slice(0, 300).trim()}`, res.statusCode ?? 0));
      });
    });
    req.on('error', reject);
    let sent = 0;
    const src = createReadStream(artifact.path, { highWaterMark: 1 << 20 });
    src.on('data', (chunk) => { sent += chunk.length; ctx.progress(sent, artifact.size); });
    src.on('error', (e) => { req.destroy(e); reject(e); });
    src.pipe(req);
  });
}
