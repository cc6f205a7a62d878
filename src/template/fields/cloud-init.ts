/** `source.cloud_init`: the seed kiln gives a cloud image (build key, host keys, user), or false for none. */
import { z } from 'zod';
import { type Fields, shapeOf } from './field.js';

export const cloudInitFields = {
  enabled: { schema: z.boolean().default(true), cache: 'disk', doc: 'false is the same as cloud_init: false.' },
  delivery: {
    schema: z.enum(['http', 'cdrom']).optional(),
    cache: 'disk',
    doc: "How the seed reaches the guest: a cidata CD, or kiln's HTTP server (its URL in SMBIOS). Unset: the CD where xorriso is installed (SSH up ~2 s sooner), else HTTP.",
  },
  user_data: {
    schema: z.union([z.record(z.string(), z.unknown()), z.string()]).default({}),
    cache: 'disk',
    doc: "Merged into kiln's own #cloud-config (keys, host keys, user); an object or a YAML string.",
  },
  meta_data: {
    schema: z.record(z.string(), z.unknown()).default({}),
    cache: 'disk',
    doc: "Merged into the seed's meta-data.",
  },
  wait: {
    schema: z.boolean().default(true),
    cache: 'disk',
    doc: 'Wait for `cloud-init status --wait` before provisioning.',
  },
  later_stages: {
    schema: z.enum(['auto', 'always']).default('auto'),
    cache: 'disk',
    doc: "cloud-init's config and final stages during the build: `auto` skips them when the seed gives them nothing to do (no runcmd, packages, apt...; the image's first boot still runs them), `always` runs them (an image whose own cloud.cfg.d the build needs applied).",
  },
} as const satisfies Fields;

export const cloudInit = z.strictObject(shapeOf(cloudInitFields));
