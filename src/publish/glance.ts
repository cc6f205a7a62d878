/**
 * OpenStack Glance (image API v2): create the image record (name, disk/container format, visibility,
 * properties; hw_firmware_type=uefi for a UEFI build; kiln_sha256 to find it again), stream the data
 * with its Content-Length (Glance mishandles chunked uploads), wait for `active`, and check Glance's
 * own os_hash_value (sha512) against the sha512 computed while sending (the data is read once, and its
 * sha256 checked against manifest.json before the upload ends). An image that does not become active with the right
 * hash is deleted, so a failure never leaves something that looks like a finished image. Auth: a
 * Keystone v3 password token from the variables the openstack CLI reads (OS_AUTH_URL, OS_USERNAME,
 * OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME), or none
 * for a Glance run without Keystone (`endpoint:` and no OS_AUTH_URL).
 */
import { createReadStream } from 'node:fs';
import type { z } from 'zod';
import type { glanceTarget } from '../template/schema-publish.js';
import { request, textOf } from './http.js';
import { ArtifactCheck, checkedStream } from './integrity.js';
import { safeUrl, serverSaid } from './redact.js';
import { archProfile } from '../qemu/arch.js';
import {
  HttpStatusError,
  PublishError,
  type PublishArtifact,
  type PublishContext,
  type Publisher,
  withRetries,
} from './target.js';
import { KilnError } from '../util/errors.js';

type GlanceTarget = z.output<typeof glanceTarget>;

interface GlanceAccess {
  endpoint: string;
  token?: string;
  from: string;
}

/** The body as JSON, or an error naming the URL, the status and what was expected (never "not valid JSON" alone). */
async function jsonOf(res: Response, url: string, expected: string): Promise<unknown> {
  const text = await textOf(res);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(
      `${safeUrl(url)} answered HTTP ${res.status} with a body that is not JSON, where ${expected} was expected${text.trim() ? `; ${serverSaid(text)}` : ' (empty body)'}`,
    );
  }
}

function shapeError(url: string, status: number, expected: string, got: unknown): Error {
  return new Error(
    `${safeUrl(url)} answered HTTP ${status} with JSON that is not ${expected}; ${serverSaid(JSON.stringify(got) ?? '')}`,
  );
}

async function keystone(
  env: NodeJS.ProcessEnv,
  target: GlanceTarget,
  name: string,
  ctx: PublishContext,
): Promise<GlanceAccess> {
  const authUrl = env.OS_AUTH_URL!.replace(/\/+$/, '');
  for (const v of ['OS_USERNAME', 'OS_PASSWORD', 'OS_PROJECT_NAME']) {
    if (!env[v])
      throw new PublishError(`publish target "${name}": OS_AUTH_URL is set but ${v} is not`, {
        fix: `source your OpenStack RC file (openrc), or unset OS_AUTH_URL and give endpoint: for a Glance without Keystone`,
      });
  }
  const body = {
    auth: {
      identity: {
        methods: ['password'],
        password: {
          user: {
            name: env.OS_USERNAME,
            domain: { name: env.OS_USER_DOMAIN_NAME ?? 'Default' },
            password: env.OS_PASSWORD,
          },
        },
      },
      scope: { project: { name: env.OS_PROJECT_NAME, domain: { name: env.OS_PROJECT_DOMAIN_NAME ?? 'Default' } } },
    },
  };
  const url = /\/v3$/.test(authUrl) ? `${authUrl}/auth/tokens` : `${authUrl}/v3/auth/tokens`;
  try {
    new URL(url);
  } catch {
    throw new PublishError(`publish target "${name}": OS_AUTH_URL is not a URL`, {
      fix: `set it to Keystone's identity endpoint, e.g. https://keystone.lab:5000/v3`,
    });
  }
  ctx.credentialsTo({ kind: 'Keystone', url, from: 'OS_USERNAME / OS_PASSWORD', hostFromSettings: false });
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: ctx.signal,
    timeouts: ctx.timeouts,
  });
  if (res.status === 401 || res.status === 403) {
    await res.body?.cancel();
    throw new PublishError(
      `publish target "${name}": Keystone at OS_AUTH_URL refused OS_USERNAME / OS_PASSWORD (HTTP ${res.status})`,
      { fix: `check OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and the domains` },
    );
  }
  if (res.status === 404) {
    const said = serverSaid(await textOf(res));
    throw new PublishError(
      `publish target "${name}": ${safeUrl(url)} is not a Keystone v3 token endpoint (HTTP 404${said ? `; ${said}` : ''})`,
      { fix: `set OS_AUTH_URL to Keystone's identity endpoint, e.g. https://keystone.lab:5000/v3` },
    );
  }
  if (!res.ok) {
    const said = serverSaid(await textOf(res));
    throw new HttpStatusError(
      `Keystone token request to ${safeUrl(url)}: HTTP ${res.status}${said ? `; ${said}` : ''}`,
      res.status,
    );
  }
  const token = res.headers.get('x-subject-token');
  const reply = (await jsonOf(res, url, 'a Keystone token')) as {
    token?: { catalog?: { type: string; endpoints: { interface: string; region?: string; url: string }[] }[] };
  };
  if (!token)
    throw new Error(
      `${safeUrl(url)} answered HTTP ${res.status} without an X-Subject-Token header: it does not look like Keystone v3`,
    );
  const catalog = Array.isArray(reply?.token?.catalog) ? reply.token.catalog : [];
  let endpoint = target.endpoint;
  if (!endpoint) {
    const image = catalog.find((s) => s?.type === 'image');
    const ep = (Array.isArray(image?.endpoints) ? image.endpoints : []).find(
      (e) =>
        e?.interface === (env.OS_INTERFACE ?? 'public') && (!env.OS_REGION_NAME || e.region === env.OS_REGION_NAME),
    );
    if (!ep || typeof ep.url !== 'string')
      throw new PublishError(
        `publish target "${name}": the Keystone catalog has no ${env.OS_INTERFACE ?? 'public'} image endpoint${env.OS_REGION_NAME ? ` in region OS_REGION_NAME=${env.OS_REGION_NAME}` : ''}`,
        { fix: `set endpoint: to Glance's URL, or OS_REGION_NAME / OS_INTERFACE` },
      );
    endpoint = ep.url;
  }
  endpoint = endpoint.replace(/\/+$/, '');
  // The token is a credential too; an endpoint: in the settings decides where it goes.
  ctx.credentialsTo({
    kind: 'Glance',
    url: endpoint,
    from: 'a Keystone token (from OS_USERNAME / OS_PASSWORD)',
    hostFromSettings: !!target.endpoint,
  });
  return { endpoint, token, from: 'OS_USERNAME / OS_PASSWORD' };
}

async function access(target: GlanceTarget, ctx: PublishContext, name: string): Promise<GlanceAccess> {
  if (ctx.env.OS_AUTH_URL) return keystone(ctx.env, target, name, ctx);
  if (!target.endpoint)
    throw new PublishError(`publish target "${name}": OS_AUTH_URL is not set and the target has no endpoint:`, {
      fix: `source your OpenStack RC file (openrc), or give endpoint: for a Glance without Keystone`,
    });
  return { endpoint: target.endpoint.replace(/\/+$/, ''), from: 'no authentication (endpoint:)' };
}

interface GlanceImage {
  id: string;
  status: string;
  os_hash_value?: string | null;
  os_hash_algo?: string | null;
  size?: number | null;
  kiln_sha256?: string;
}

const isImage = (v: unknown): v is GlanceImage =>
  !!v && typeof (v as GlanceImage).id === 'string' && typeof (v as GlanceImage).status === 'string';

/**
 * The image's properties: kiln's label, what Nova boots it on (architecture: x86_64 or aarch64; UEFI
 * with the machine type the build ran: q35, or virt for arm64), the distro, then the template's own.
 */
export function imageProperties(
  artifact: { sha256: string },
  target: Pick<GlanceTarget, 'os_distro' | 'properties'>,
  ctx: Pick<PublishContext, 'uefi' | 'arch'>,
): Record<string, string> {
  const arch = archProfile(ctx.arch);
  return {
    kiln_sha256: artifact.sha256,
    architecture: arch.glanceArchitecture,
    ...(ctx.uefi
      ? { hw_firmware_type: 'uefi', hw_machine_type: arch.arch === 'x86_64' ? 'q35' : arch.defaultMachine }
      : {}),
    ...(target.os_distro ? { os_distro: target.os_distro } : {}),
    ...target.properties,
  };
}

export const publishGlance: Publisher<GlanceTarget> = async (target, artifact, ctx) => {
  const name = target.name ?? 'glance';
  const acc = await access(target, ctx, name);
  const api = async (
    method: string,
    p: string,
    expected: string,
    body?: unknown,
    ok = [200, 201, 204],
  ): Promise<unknown> => {
    const headers: Record<string, string> = {};
    if (acc.token) headers['x-auth-token'] = acc.token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const url = `${acc.endpoint}${p}`;
    const res = await request(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctx.signal,
      timeouts: ctx.timeouts,
    });
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new PublishError(`publish target "${name}": Glance refused ${acc.from} (HTTP ${res.status})`, {
        fix: `check OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME, and that the project may create images`,
      });
    }
    if (!ok.includes(res.status)) {
      const said = serverSaid(await textOf(res));
      throw new HttpStatusError(`${method} ${safeUrl(url)}: HTTP ${res.status}${said ? `; ${said}` : ''}`, res.status);
    }
    return res.status === 204 ? null : jsonOf(res, url, expected);
  };
  const getImage = async (id: string): Promise<GlanceImage> => {
    const p = `/v2/images/${id}`;
    const got = await api('GET', p, 'a Glance image');
    if (!isImage(got)) throw shapeError(`${acc.endpoint}${p}`, 200, 'a Glance image (id, status)', got);
    return got;
  };

  const imageName = target.image_name ?? ctx.build;
  const location = (id: string) => safeUrl(`${acc.endpoint}/v2/images/${id}`);
  const listPath = `/v2/images?name=${encodeURIComponent(imageName)}&status=active`;
  const list = (await withRetries('list images', ctx, () => api('GET', listPath, 'a Glance image list'))) as {
    images?: unknown;
  };
  if (!Array.isArray(list?.images))
    throw shapeError(`${acc.endpoint}${listPath}`, 200, 'a Glance image list ({"images": [...]})', list);
  // kiln_sha256 labels an image only once Glance made it active from data checked against the
  // manifest, so the label and the size find the same image without reading the disk.
  const same = list.images
    .filter(isImage)
    .find((i) => i.kiln_sha256 === artifact.sha256 && i.size === artifact.size && i.status === 'active');
  if (same) {
    ctx.log(`image ${same.id} (${imageName}) already holds this artifact: nothing to send`);
    return {
      location: location(same.id),
      id: same.id,
      remote_digest: `${same.os_hash_algo ?? 'sha512'}:${same.os_hash_value ?? ''}`,
      unchanged: true,
      bytes_sent: 0,
    };
  }

  const glanceFormat = artifact.format === 'vhd' ? 'vhd' : artifact.format;
  const properties = imageProperties(artifact, target, ctx);
  const image = await withRetries('create image', ctx, () =>
    api('POST', '/v2/images', 'the created Glance image', {
      name: imageName,
      disk_format: glanceFormat,
      container_format: 'bare',
      visibility: target.visibility,
      ...properties,
    }),
  );
  if (!isImage(image))
    throw shapeError(`${acc.endpoint}/v2/images`, 201, 'the created Glance image (id, status)', image);
  try {
    // A transient failure mid-upload: Glance puts the image back to queued, and the data can go again.
    const sha512 = await withRetries('upload image data', ctx, () => uploadData(acc, image.id, artifact, ctx), {
      stillRetryable: async () => (await getImage(image.id).catch(() => undefined))?.status === 'queued',
    });
    const deadline = Date.now() + target.timeout_seconds * 1000;
    let current = image;
    for (;;) {
      current = await withRetries('read image', ctx, () => getImage(image.id));
      if (current.status === 'active') break;
      if (['killed', 'deleted', 'deactivated'].includes(current.status))
        throw new Error(`Glance marked image ${image.id} ${current.status} after the upload`);
      if (Date.now() > deadline)
        throw new KilnError(`image ${image.id} is still ${current.status} after ${target.timeout_seconds} s`, {
          fix: `raise timeout_seconds:`,
        });
      await new Promise((r) => setTimeout(r, 250));
      ctx.signal.throwIfAborted();
    }
    if (current.os_hash_algo === 'sha512' && current.os_hash_value !== sha512) {
      throw new Error(
        `Glance's os_hash_value of image ${image.id} is ${current.os_hash_value}, not the sha512 of the data sent (${sha512}): the data was damaged on the way`,
      );
    }
    if (current.size !== artifact.size)
      throw new Error(`Glance holds ${current.size} bytes for image ${image.id}, not the ${artifact.size} sent`);
    return {
      location: location(image.id),
      id: image.id,
      remote_digest: `${current.os_hash_algo ?? 'sha512'}:${current.os_hash_value ?? sha512}`,
      unchanged: false,
      bytes_sent: artifact.size,
    };
  } catch (e) {
    // Nothing half-made stays: the queued/saving image goes, whatever failed (an interrupt too).
    const headers: Record<string, string> = acc.token ? { 'x-auth-token': acc.token } : {};
    await request(`${acc.endpoint}/v2/images/${image.id}`, {
      method: 'DELETE',
      headers,
      signal: AbortSignal.timeout(ctx.timeouts.connectMs + ctx.timeouts.idleMs),
      timeouts: ctx.timeouts,
    }).then(
      (r) => r.body?.cancel(),
      () => {},
    );
    throw e;
  }
};

/**
 * PUT /v2/images/{id}/file, streamed from the file with Content-Length (never chunked), hashed on the
 * way: a file that is not the manifest's artifact fails the body before its last byte, so Glance
 * never completes the image. Resolves with the sha512 of what was sent (Glance's os_hash_value).
 */
async function uploadData(
  acc: GlanceAccess,
  id: string,
  artifact: PublishArtifact,
  ctx: PublishContext,
): Promise<string> {
  const url = `${acc.endpoint}/v2/images/${id}/file`;
  const check = new ArtifactCheck(artifact, ['sha512']);
  const src = createReadStream(artifact.path, { highWaterMark: 1 << 20 });
  const body = checkedStream(check);
  let sent = 0;
  src.on('data', (chunk) => {
    sent += chunk.length;
    ctx.progress(sent, artifact.size);
  });
  src.on('error', (e) => body.destroy(e));
  src.pipe(body);
  let bodyError: Error | undefined;
  body.on('error', (e) => {
    bodyError = e;
  });
  try {
    const res = await request(url, {
      method: 'PUT',
      body,
      signal: ctx.signal,
      timeouts: ctx.timeouts,
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(artifact.size),
        ...(acc.token ? { 'x-auth-token': acc.token } : {}),
      },
    });
    if (res.status !== 204 && res.status !== 200) {
      const said = serverSaid(await textOf(res));
      throw new HttpStatusError(
        `upload image data to ${safeUrl(url)}: HTTP ${res.status}${said ? `; ${said}` : ''}`,
        res.status,
      );
    }
    await res.body?.cancel();
  } catch (e) {
    // The changed artifact is the cause, not the connection the failing body closed.
    throw bodyError ?? e;
  } finally {
    src.destroy();
  }
  return check.verify().sha512!;
}
