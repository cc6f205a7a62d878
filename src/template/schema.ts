/**
 * The template schema. Every object is strict, so a misspelt key is an error with a "did you mean"
 * (see errors.ts) instead of being silently ignored — the most common way a Packer template goes wrong.
 */
import path from 'node:path';
import { z } from 'zod';
import { provisionerSchema } from './provisioner-kinds/index.js';
import { envMap } from './provisioner-kinds/common.js';
import { hostCommandFields } from './provisioner-kinds/shell-local.js';
import { checkPublishTargets, publishList } from './schema-publish.js';
import { type Fields, packerRenames, shapeOf } from './fields/field.js';
import { sourceFields, sourceSchema } from './fields/source.js';
import { sshCommunicatorFields, type sshCommunicator } from './fields/communicator.js';
import type { cloudInit } from './fields/cloud-init.js';
import { because } from './fields/types.js';
import { vagrantBoxEntries } from './output-formats.js';
import { hasUrlScheme } from '../util/url.js';

export { sourceSchema };

export const variableName = z
  .string()
  .refine(
    (v) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(v),
    because(
      'not a variable name',
      'use letters, digits and "_", not starting with a digit (it is written ${var.NAME})',
    ),
  );

export const variableSchema = z.strictObject({
  type: z.enum(['string', 'number', 'bool']).default('string'),
  default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  description: z.string().optional(),
  sensitive: z.boolean().default(false),
});

/** The provisioner kinds (provisioner-kinds/, one module each) give the provisioner schema. */
export { provisionerSchema };

export const outputFormats = ['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd', 'ova', 'vagrant', 'gce'] as const;
// Each field's doc line is its .describe(): the JSON Schema's hover text and the template reference's.
export const outputSchema = z
  .strictObject({
    format: z
      .enum(outputFormats)
      .describe(
        "The artifact's format: a disk image (qcow2, raw, vmdk, vhdx, vhd), a package (ova, vagrant) or a GCE tarball.",
      ),
    name: z
      .string()
      .refine(
        (v) => /^[^/\\]+$/.test(v),
        because('name is a file name, not a path', 'put the folder in "directory" and only the file name in "name"'),
      )
      // "." and ".." name the output directory and its parent: the artifact would replace a directory.
      .refine(
        (v) => v !== '.' && v !== '..',
        because('"." and ".." name directories, not a file', 'give the artifact a file name, e.g. name: disk.qcow2'),
      )
      .optional()
      .describe('The file name inside the output directory [<build>.<ext>].'),
    directory: z.string().optional().describe("Another directory for this artifact [the build's output_directory]."),
    compress: z
      .boolean()
      .default(false)
      .describe('qcow2: zstd-compressed clusters; vmdk: the same as subformat streamOptimized.'),
    subformat: z.enum(['monolithicSparse', 'streamOptimized']).optional().describe('vmdk only: the VMDK variant.'),
    adapter_type: z
      .enum(['ide', 'lsilogic', 'buslogic', 'legacyESX'])
      .optional()
      .describe('vmdk only: the controller type written into the descriptor.'),
    vagrantfile_extra: z
      .string()
      .optional()
      .describe(
        "vagrant only: Ruby appended to the box's Vagrantfile, after kiln's provider defaults (Packer's vagrantfile_template).",
      ),
    include: z
      .array(z.string())
      .optional()
      .describe(
        "vagrant only: files copied into the box's top folder beside box.img, by their base names, for its Vagrantfile to use (Packer's include).",
      ),
  })
  .refine(
    (o) => o.format === 'vmdk' || (o.subformat === undefined && o.adapter_type === undefined),
    because('"subformat" and "adapter_type" only apply to format: vmdk', 'remove them, or set format: vmdk'),
  )
  .refine(
    (o) => o.format === 'vagrant' || o.vagrantfile_extra === undefined,
    because('"vagrantfile_extra" only applies to format: vagrant', 'remove it, or set format: vagrant'),
  )
  .refine(
    (o) => o.format === 'vagrant' || o.include === undefined,
    because('"include" only applies to format: vagrant', 'remove it, or set format: vagrant'),
  )
  .superRefine((o, ctx) => {
    // Each file lands at the box's top by its base name: two with one name, or one named as kiln's own
    // entries, would leave the box with one of them only.
    // Compared without case: a box unpacked on macOS or Windows would make one file of Info.json and info.json.
    const seen = new Map<string, number>();
    (o.include ?? []).forEach((f, i) => {
      const name = path.basename(f);
      const folded = name.toLowerCase();
      const earlier = seen.get(folded);
      const own = vagrantBoxEntries.find((e) => e.toLowerCase() === folded);
      if (hasUrlScheme(f))
        ctx.addIssue({
          code: 'custom',
          path: ['include', i],
          message: `${f}: include takes local files, not URLs`,
          params: { fix: 'download the file first (a shell-local step or your pipeline), then include its path' },
        });
      else if (own)
        ctx.addIssue({
          code: 'custom',
          path: ['include', i],
          message: `${f}: the box's own ${own} has that name (the box holds ${vagrantBoxEntries.join(', ')})`,
          params: { fix: `rename the file; to add to the box's Vagrantfile, use vagrantfile_extra` },
        });
      else if (earlier !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['include', i],
          message: `${f} and include[${earlier}] (${o.include![earlier]}) would be one file, ${name}, in the box (names compared without case, as macOS and Windows do)`,
          params: { fix: 'rename one of them: the box keeps files by their base names only' },
        });
      else seen.set(folded, i);
    });
  });

export const postProcessorSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('compress'),
    algorithm: z.enum(['gzip', 'zstd', 'xz']).default('zstd').describe('The compressor.'),
    formats: z
      .array(z.enum(outputFormats))
      .optional()
      .describe('The artifact formats to compress [every disk image and package not compressed already].'),
    keep_input: z.boolean().default(false).describe('Keep the uncompressed artifact beside the compressed one.'),
  }),
  z
    .strictObject({
      type: z.literal('shell-local'),
      inline: z.array(z.string()).optional(),
      script: z.string().optional(),
      env: envMap,
      ...hostCommandFields,
    })
    .refine(
      (p) => (p.inline === undefined) !== (p.script === undefined),
      because(
        'a shell-local post-processor needs exactly one of "inline" or "script"',
        'keep one of them; to run both, use two shell-local post-processors',
      ),
    ),
]);

/** A build's own fields, beside its source. Their cache role is what they do to a provisioner layer's key. */
export const buildFields = {
  name: {
    schema: z
      .string()
      .refine(
        (v) => /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v),
        because(
          'build names use letters, digits, ".", "_" and "-" (they name files and directories)',
          'rename it, e.g. "my build" -> my-build',
        ),
      ),
    cache: 'disk',
    packer: ['vm_name'],
    doc: "The build's name: it names its files, and reaches the guest (hostname, ${build.name}).",
  },
  output_directory: {
    schema: z.string().optional(),
    cache: 'runtime',
    packer: ['output_directory'],
    doc: 'Where the artifacts go [output/<name>], relative to the template; kiln build --force replaces it.',
  },
  source: { schema: sourceSchema, cache: 'disk', doc: 'What the build boots and the VM it boots it in.' },
  provisioners: {
    schema: z.array(provisionerSchema).default([]),
    cache: 'disk',
    doc: 'Run in order in the booted guest (or on the host); each is a cached layer.',
  },
  cache: {
    schema: z
      .strictObject({
        vm_state: z
          .union([z.boolean(), z.literal('before-last')])
          .default('before-last')
          .describe(
            'Also save the running VM (RAM, devices) with each layer (true), or only with the layer before the last provisioner (before-last, the default: where a rebuild after changing the last provisioner resumes), so a rebuild restores it instead of booting.',
          ),
        boot_snapshot: z
          .boolean()
          .default(true)
          .describe(
            'Save the VM once it is ready for provisioning (the warm base); later builds on the same base and source settings restore it instead of booting.',
          ),
      })
      .optional(),
    cache: 'runtime',
    doc: 'Layer cache options.',
  },
  outputs: {
    schema: z
      .array(outputSchema)
      .min(1)
      .prefault([{ format: 'qcow2' }]),
    cache: 'runtime',
    doc: 'The artifacts made from the finished disk [one qcow2].',
  },
  checksums: {
    schema: z
      .array(z.enum(['sha256', 'sha512']))
      .min(1)
      .default(['sha256']),
    cache: 'runtime',
    doc: 'Digest files written beside the artifacts (SHA256SUMS, SHA512SUMS), streamed.',
  },
  post_processors: {
    schema: z.array(postProcessorSchema).default([]),
    cache: 'runtime',
    doc: 'Run on the finished artifacts, in order, before checksums and the manifest are written.',
  },
  publish: {
    schema: publishList,
    cache: 'runtime',
    doc: 'Where the finished artifacts are uploaded, after checksums and the manifest.',
  },
  sign: {
    schema: z.strictObject({ key: z.string().min(1).describe('An ed25519 private key file.') }).optional(),
    cache: 'runtime',
    doc: 'Sign SHA256SUMS, the provenance and the SBOMs (ssh-keygen -Y sign, namespace "kiln").',
  },
} as const satisfies Fields;

export const buildSchema = z
  .strictObject(shapeOf(buildFields))
  .superRefine((b, ctx) =>
    checkPublishTargets(b.publish, { outputs: b.outputs.map((o) => o.format), uefi: usesUefi(b.source.firmware) }, ctx),
  );

export const templateSchema = z.strictObject({
  description: z.string().optional(),
  variables: z.record(variableName, variableSchema).default({}),
  builds: z.array(buildSchema).min(1),
});

/** Whether a source's firmware setting boots UEFI (anything but bios). */
export const usesUefi = (firmware: string): boolean => firmware !== 'bios';

export type TemplateInput = z.input<typeof templateSchema>;
export type Provisioner = z.output<typeof provisionerSchema>;
export type OutputConfig = z.output<typeof outputSchema>;
export type PostProcessor = z.output<typeof postProcessorSchema>;
export type VariableDef = z.output<typeof variableSchema>;
export type SshCommunicatorConfig = z.output<typeof sshCommunicator>;
export type CloudInitConfig = z.output<typeof cloudInit>;

/**
 * What the build boots, resolved: base_image and iso as written are two optional fields (exactly one
 * set, checked by the loader); this is the one of them, its path absolute. An ISO installs onto a
 * blank disk of `diskSize` bytes (disk_size, required for an ISO).
 */
export type BootMedia = { kind: 'image'; location: string } | { kind: 'iso'; location: string; diskSize: number };

/**
 * The resolved source the build reads: durations in ms, sizes in bytes, memory in MiB, paths absolute,
 * and `media` saying what it boots.
 */
export type SourceSpec = z.output<typeof sourceSchema> & { media: BootMedia };

/** A build as the loader returns it: every value parsed and defaulted, output_directory absolute. */
export type BuildSpec = Omit<z.output<typeof buildSchema>, 'source' | 'output_directory'> & {
  source: SourceSpec;
  output_directory: string;
};

/** A template as the loader returns it. */
export type Template = Omit<z.output<typeof templateSchema>, 'builds'> & { builds: BuildSpec[] };

/** What a parsed source boots (see BootMedia); the loader calls it once paths are absolute. */
export function mediaOf(s: Pick<z.output<typeof sourceSchema>, 'base_image' | 'iso' | 'disk_size'>): BootMedia {
  return s.iso !== undefined
    ? { kind: 'iso', location: s.iso, diskSize: s.disk_size ?? 0 }
    : { kind: 'image', location: s.base_image ?? '' };
}

/**
 * A build parsed into a BuildSpec without the loader's file checks (paths stay as written, output_directory
 * defaults to output/<name>): for code and tests that make a spec without a template file.
 */
export function buildSpec(input: z.input<typeof buildSchema>): BuildSpec {
  const b = buildSchema.parse(input);
  return {
    ...b,
    output_directory: b.output_directory ?? `output/${b.name}`,
    source: { ...b.source, media: mediaOf(b.source) },
  };
}

/** Older names of the resolved types (the library's users import them). */
export type BuildConfig = BuildSpec;
export type SourceConfig = SourceSpec;

/** Packer's names for source fields that are not a plain rename of one field, as kiln writes them instead. */
const packerSourceHints: Readonly<Record<string, string>> = {
  iso_url: 'iso: ... (or base_image: ... for a disk image)',
  disk_image: 'base_image: <the image> instead of iso',
  efi_boot: 'firmware: uefi',
  vm_name: "the build's name (and outputs[].name)",
  format: 'outputs: [{ format: ... }] on the build',
  output_directory: 'output_directory on the build, beside "source"',
};

/** Packer's names for source fields, as kiln writes them: a Packer user's most likely "unknown key". From the field registry, plus the hints above. */
export const packerSourceAliases: Readonly<Record<string, string>> = {
  ...Object.fromEntries([...packerRenames(sourceFields)].filter(([p, k]) => p !== k).map(([p, k]) => [p, `${k}: ...`])),
  ...Object.fromEntries([...packerRenames(sshCommunicatorFields)].map(([p, k]) => [p, `communicator: { ${k}: ... }`])),
  ...packerSourceHints,
};

interface SchemaDef {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
}
const defOf = (schema: z.ZodType) => schema._zod.def as unknown as SchemaDef;
const fieldOf = (data: unknown, key: string | number): unknown =>
  data && typeof data === 'object' && Object.hasOwn(data, key) ? (data as Record<string, unknown>)[key] : undefined;

/**
 * The keys valid in the object at `path` of a template, for "did you mean". `data` is the template as
 * written: it picks the right member of a union (a provisioner's keys depend on its `type`).
 */
export function knownKeysAt(
  path: readonly (string | number)[],
  data: unknown,
  schema: z.ZodType = templateSchema,
): readonly string[] | undefined {
  const def = defOf(schema);
  const [head, ...rest] = path;
  switch (def.type) {
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
    case 'readonly':
      return def.innerType && knownKeysAt(path, data, def.innerType);
    case 'pipe':
      return def.in && knownKeysAt(path, data, def.in);
    case 'object': {
      if (head === undefined) return Object.keys(def.shape ?? {});
      const child =
        typeof head === 'string' && def.shape && Object.hasOwn(def.shape, head) ? def.shape[head] : undefined;
      return child && knownKeysAt(rest, fieldOf(data, head), child);
    }
    case 'array':
      return typeof head === 'number' && def.element ? knownKeysAt(rest, fieldOf(data, head), def.element) : undefined;
    case 'record':
      return head !== undefined && def.valueType ? knownKeysAt(rest, fieldOf(data, head), def.valueType) : undefined;
    case 'union': {
      // Members whose `type` accepts the given one (all of them when it matches none), keys merged.
      const members = def.options ?? [];
      const typeOf = (m: z.ZodType) => {
        const d = defOf(m);
        return d.type === 'object' ? d.shape?.type : undefined;
      };
      const given = fieldOf(data, 'type');
      const matching = members.filter((m) => typeOf(m)?.safeParse(given).success);
      const keys = new Set<string>();
      for (const m of matching.length ? matching : members)
        for (const k of knownKeysAt(path, data, m) ?? []) keys.add(k);
      return keys.size ? [...keys] : undefined;
    }
    default:
      return undefined;
  }
}
