/**
 * Template fields of `publish:`, the targets a finished build is uploaded to after its checksums and
 * manifest are written: S3-compatible object storage, an Azure page blob, OpenStack Glance and an OCI
 * registry (as a KubeVirt containerDisk).
 *
 * No field holds a secret: credentials come from the environment or a file named here (see
 * src/publish/), so a template never carries one and the manifest never records one; a URL holding
 * user:password@ is refused here.
 * schema.ts adds `publish` to a build and calls checkPublishFormats (this module needs nothing from it).
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

const because = (message: string, fix: string) => ({ message, params: { fix } });

const targetName = z
  .string()
  .refine(
    (v) => /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v),
    because('target names use letters, digits, ".", "_" and "-"', 'rename it, e.g. name: s3-images'),
  )
  .optional();
const httpUrl = z.string().superRefine((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    u = undefined as never;
  }
  if (!u || !/^https?:$/.test(u.protocol)) {
    ctx.addIssue({
      code: 'custom',
      ...because('not an http(s) URL', 'write the full URL, e.g. https://minio.lab:9000'),
    });
    return;
  }
  // The value itself is never repeated: it holds a password, and errors get printed and logged.
  if (u.username || u.password) {
    ctx.addIssue({
      code: 'custom',
      ...because(
        'the URL holds a user name or password (user:password@), which would be recorded in manifest.json and printed',
        "remove user:password@ from the URL and give the credential through the target's variables or credentials_file: (see kiln's docs/publish.md)",
      ),
    });
  }
});
const duration = z.union([z.string(), z.number().positive()]).superRefine((v, ctx) => {
  let ms = 0;
  try {
    ms = parseDuration(v);
  } catch {
    /* below */
  }
  if (!(ms > 0))
    ctx.addIssue({
      code: 'custom',
      ...because(`${JSON.stringify(v)} is not a duration`, 'write e.g. "30s", "2m" or "500ms"'),
    });
});
/**
 * Per target: `connect` bounds the TCP connection, `idle` the time with no byte moving either way;
 * every request the target makes has both (a server that accepts and never answers fails in `idle`).
 */
const timeouts = z
  .strictObject({
    connect: duration.default('30s'),
    idle: duration.default('120s'),
  })
  .default({ connect: '30s', idle: '120s' });

const partSize = z
  .union([z.string(), z.number().int().positive()])
  .superRefine((v, ctx) => {
    let bytes: number;
    try {
      bytes = parseSize(v);
    } catch {
      ctx.addIssue({ code: 'custom', ...because(`${JSON.stringify(v)} is not a size`, 'write e.g. "16M"') });
      return;
    }
    if (bytes < 5 * 2 ** 20)
      ctx.addIssue({ code: 'custom', ...because('S3 parts are at least 5 MiB', 'write part_size: 8M or more') });
  })
  .transform((v) => parseSize(v)); // bytes: the targets read the number
/** A file holding credentials, instead of the environment. */
const credentialsFile = z.string().optional();

export const s3Target = z.strictObject({
  type: z.literal('s3'),
  name: targetName,
  /** Any artifact of the build's: an output format, or efi-vars (the UEFI variable store of a UEFI build). */
  format: z.string().default('qcow2'),
  bucket: z.string().min(3),
  /** Object key; default: the artifact's file name. `${build.name}` works like anywhere else. */
  key: z.string().min(1).optional(),
  /** An S3-compatible server (MinIO, Ceph RGW, Swift s3api); default: AWS. */
  endpoint: httpUrl.optional(),
  // The AWS endpoint's host is made from it (s3.REGION.amazonaws.com): letters, digits and dashes only.
  region: z
    .string()
    .refine(
      (v) => /^[a-z0-9][a-z0-9-]*$/.test(v),
      because('not an AWS region name (letters, digits and "-")', 'write e.g. region: eu-west-1'),
    )
    .default('us-east-1'),
  /** Path-style URLs (endpoint/bucket/key), which most S3-compatible servers need. */
  force_path_style: z.boolean().default(false),
  part_size: partSize.prefault('16M'),
  /** Parts sent at once. */
  concurrency: z.number().int().min(1).max(64).default(4),
  /** An AWS shared credentials file (INI, [default] or `profile`); default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
  credentials_file: credentialsFile,
  profile: z.string().default('default'),
  timeout: timeouts,
});

export const azureTarget = z.strictObject({
  type: z.literal('azure'),
  name: targetName,
  /** A fixed VHD is what an Azure managed disk is made from. */
  format: z.literal('vhd').default('vhd'),
  /** The blob service, e.g. https://ACCOUNT.blob.core.windows.net (default: from the connection string). */
  account_url: httpUrl.optional(),
  container: z.string().min(3),
  blob: z.string().min(1).optional(),
  credentials_file: credentialsFile,
  timeout: timeouts,
});

export const glanceTarget = z.strictObject({
  type: z.literal('glance'),
  name: targetName,
  format: z.enum(['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd']).default('qcow2'),
  /** Glance's own URL for a cloud without Keystone (noauth); otherwise taken from OS_AUTH_URL's catalog. */
  endpoint: httpUrl.optional(),
  image_name: z.string().min(1).optional(),
  visibility: z.enum(['private', 'shared', 'community', 'public']).default('private'),
  os_distro: z.string().optional(),
  properties: z.record(z.string(), z.string()).default({}),
  /** How long Glance may take to make the image active. */
  timeout_seconds: z.number().int().positive().default(600),
  timeout: timeouts,
});

export const ociTarget = z.strictObject({
  type: z.literal('oci'),
  name: targetName,
  /** KubeVirt's containerDisk holds a qcow2 (or raw) under /disk/. */
  format: z.enum(['qcow2', 'raw']).default('qcow2'),
  /** host[:port] of the registry. */
  registry: z
    .string()
    .min(1)
    .superRefine((v, ctx) => {
      if (v.includes('@')) {
        ctx.addIssue({
          code: 'custom',
          ...because(
            'the registry holds a user name or password (user:password@), which would be recorded in manifest.json and printed',
            'write only host[:port] and give the credential as KILN_REGISTRY_USERNAME / KILN_REGISTRY_PASSWORD or a docker config.json',
          ),
        });
      } else if (!/^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(v)) {
        ctx.addIssue({
          code: 'custom',
          ...because('not a registry host[:port] (no scheme, no path)', 'write e.g. registry: registry.lab:5000'),
        });
      }
    }),
  repository: z
    .string()
    .refine(
      (v) => /^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(v),
      because(
        'not a repository name (lower case letters, digits, separators ".", "_", "-", "/")',
        'write e.g. repository: images/debian',
      ),
    ),
  tags: z
    .array(z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/))
    .min(1)
    .default(['latest']),
  /** Plain HTTP, for a registry on loopback or a lab network. */
  insecure: z.boolean().default(false),
  /** Bytes per PATCH of the chunked blob upload. */
  chunk_size: partSize.prefault('16M'),
  /** A docker config.json with `auths` (default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json). */
  credentials_file: credentialsFile,
  timeout: timeouts,
});

export const publishTargetSchema = z.discriminatedUnion('type', [s3Target, azureTarget, glanceTarget, ociTarget]);
export const publishList = z.array(publishTargetSchema).default([]);

export type PublishTarget = z.output<typeof publishTargetSchema>;

/** The name `--only` and the manifest use: `name`, else the type. */
export function publishTargetName(t: PublishTarget): string {
  return t.name ?? t.type;
}

/** A target's timeouts in milliseconds. */
export function publishTimeouts(t: PublishTarget): { connectMs: number; idleMs: number } {
  return { connectMs: parseDuration(t.timeout.connect), idleMs: parseDuration(t.timeout.idle) };
}

/** The format of the UEFI variable store every UEFI build writes beside its disk (`<build>.efivars.fd`). */
export const EFI_VARS_FORMAT = 'efi-vars';

/** What a build produces that a target can upload: its outputs' formats, and efi-vars when it boots UEFI. */
export interface BuildProducts {
  outputs: string[];
  uefi: boolean;
}

/**
 * Checks a build's publish list against what it produces: each target's format among the outputs (or
 * the UEFI variable store of a UEFI build), names unique.
 */
export function checkPublishTargets(targets: PublishTarget[], products: BuildProducts, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  for (const [i, t] of targets.entries()) {
    const name = publishTargetName(t);
    if (seen.has(name)) {
      ctx.addIssue({
        code: 'custom',
        path: ['publish', i, 'name'],
        ...because(`two publish targets are named "${name}"`, 'give each target of the same type its own name: field'),
      });
    }
    seen.add(name);
    if (t.format === EFI_VARS_FORMAT) {
      // Only S3 takes any file; the other targets' format enums refuse efi-vars before this.
      if (!products.uefi)
        ctx.addIssue({
          code: 'custom',
          path: ['publish', i, 'format'],
          ...because(
            `publish target "${name}" uploads the UEFI variable store (efi-vars), which only a UEFI build writes, and this build boots with firmware: bios`,
            'set firmware: uefi (or uefi-secure) in the source, or remove this target',
          ),
        });
      continue;
    }
    if (!products.outputs.includes(t.format)) {
      ctx.addIssue({
        code: 'custom',
        path: ['publish', i, 'format'],
        ...because(
          `publish target "${name}" uploads a ${t.format} artifact, which this build does not produce (outputs: ${products.outputs.join(', ')}${products.uefi ? `, and ${EFI_VARS_FORMAT}` : ''})`,
          `add "- format: ${t.format}" under outputs${t.type === 'azure' ? ' (a fixed VHD, as Azure needs)' : ''}`,
        ),
      });
    }
  }
}
