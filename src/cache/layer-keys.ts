/**
 * Cache keys for provisioner layers. A layer's key is a digest of everything that decides what its disk
 * holds: the base image (or ISO) digest, the source settings that shape the disk, the parent layer's
 * key, the provisioner's definition with variables resolved, and the content of every local file it
 * reads. Settings that only change how the VM runs (CPUs, memory, timeouts) are left out, so tuning
 * them keeps the cache.
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { BuildConfig, Provisioner } from '../template/schema.js';
import { appliesTo, describeProvisioner, kindOf } from '../template/provisioner-kinds/index.js';
import { canonicalJson, digestOf, fileDigest } from './digest.js';
import { treeDigest } from './tree-digest.js';
import { kilnVersion } from '../version.js';
import { fieldsWithRole } from '../template/fields/field.js';
import { sourceFields } from '../template/fields/source.js';
import { sshCommunicatorFields } from '../template/fields/communicator.js';
import { resolveSeedDelivery } from '../cloudinit/delivery.js';

/** Bumped when the layout of a layer or the meaning of a key changes: old layers then never match. */
export const LAYER_SCHEMA = 1;

// Which source and communicator fields shape the disk: each field's cache role, in the field registry.
const DISK_SOURCE_FIELDS = fieldsWithRole(sourceFields, 'disk');
const DISK_COMMUNICATOR_FIELDS = fieldsWithRole(sshCommunicatorFields, 'disk');
const RUNTIME_ONLY_PROVISIONER_FIELDS = new Set(['pause_before', 'timeout', 'max_retries', 'only', 'except', 'cache']);

export { canonicalJson, digestOf };

/** Digest of a file, or of a directory tree (names, types, link targets and contents). */
export async function pathDigest(p: string): Promise<string> {
  const st = lstatSync(p);
  if (st.isSymbolicLink()) return digestOf({ link: readlinkSync(p) });
  if (st.isFile()) return fileDigest(p);
  if (!st.isDirectory()) return digestOf({ special: st.mode });
  const entries: [string, string][] = [];
  for (const name of readdirSync(p).sort()) entries.push([name, await pathDigest(path.join(p, name))]);
  return digestOf({ dir: entries, mode: st.mode & 0o7777 });
}

/**
 * The digests of the local files a provisioner reads on the host (its kind lists them), in its order.
 * A 'tree' input leaves the build's output directories out (a playbook's folder may hold them).
 */
export async function hostInputDigests(p: Provisioner, build: BuildConfig): Promise<string[]> {
  const outputs = new Set(
    [build.output_directory, ...build.outputs.map((o) => o.directory)].filter((d): d is string => d !== undefined),
  );
  const digests: string[] = [];
  for (const input of kindOf(p).hostInputs(p))
    digests.push(input.digest === 'tree' ? await treeDigest(input.path, outputs) : await pathDigest(input.path));
  return digests;
}

/** Why a provisioner's result cannot come from the cache, or undefined when it can. */
export function uncacheableReason(p: Provisioner): string | undefined {
  if (p.cache === true) return undefined;
  if (p.cache === false) return 'cache: false';
  return kindOf(p).uncacheable?.(p);
}

export async function sourceKey(build: BuildConfig, baseSha256: string): Promise<string> {
  const { communicator, ...rest } = build.source;
  // Resolved values (disk_size in bytes): "20G" and "20480M" are one key.
  const shaping = Object.fromEntries(Object.entries(rest).filter(([k]) => DISK_SOURCE_FIELDS.has(k)));
  // The seed's way in, as kiln resolves it: a template saying cdrom and one leaving it to kiln on a
  // host with xorriso make the same disk.
  if (rest.cloud_init !== false)
    shaping.cloud_init = {
      ...rest.cloud_init,
      delivery: resolveSeedDelivery(rest.cloud_init.delivery, rest.qemu_args).delivery,
    };
  const comm = Object.fromEntries(Object.entries(communicator).filter(([k]) => DISK_COMMUNICATOR_FIELDS.has(k)));
  const files: Record<string, string> = {};
  for (const f of [
    ...(build.source.http_directory ? [build.source.http_directory] : []),
    ...build.source.cd_files,
    ...build.source.floppy_files,
  ]) {
    files[f] = await pathDigest(f);
  }
  // base_image/iso/checksum (cache role 'base') are left out: the digest names the content, wherever the file lives.
  // The build's name reaches the disk (cloud-init's hostname, \${build.name} in provisioners).
  return digestOf({
    schema: LAYER_SCHEMA,
    name: build.name,
    base: baseSha256,
    source: shaping,
    communicator: comm,
    files,
  });
}

export interface PlannedLayer {
  /** Index in build.provisioners. */
  index: number;
  description: string;
  /** Undefined from the first provisioner that cannot be cached onwards. */
  key?: string;
  uncacheable?: string;
  /** A file upload into a directory emptied at boot: a resumed guest no longer has it. */
  bootVolatile?: boolean;
}

/** What `p` leaves in a guest folder emptied at boot (its kind knows: a file upload into /tmp, say). */
export function uploadsIntoVolatileDir(p: Provisioner): boolean {
  return kindOf(p).bootVolatile?.(p) ?? false;
}

/**
 * How many cached layers a build can resume from. A resumed guest has booted afresh, so an upload into
 * /tmp that the cached chain ends with is gone; resuming before it re-runs the upload for the
 * provisioner that needs it (the usual "upload to /tmp, then install" pair).
 */
export function resumePoint(plan: PlannedLayer[], cachedCount: number): number {
  let k = cachedCount;
  while (k > 0 && k < plan.length && plan[k - 1]!.bootVolatile) k--;
  return k;
}

export async function planLayers(build: BuildConfig, rootKey: string): Promise<PlannedLayer[]> {
  const plan: PlannedLayer[] = [];
  let parent: string | undefined = rootKey;
  for (let i = 0; i < build.provisioners.length; i++) {
    const p = build.provisioners[i]!;
    if (!appliesTo(p, build.name)) continue;
    const description = describeProvisioner(p);
    const reason = uncacheableReason(p);
    if (reason) parent = undefined;
    if (!parent) {
      plan.push({ index: i, description, uncacheable: reason ?? 'an earlier provisioner is not cached' });
      continue;
    }
    const definition = Object.fromEntries(Object.entries(p).filter(([k]) => !RUNTIME_ONLY_PROVISIONER_FIELDS.has(k)));
    const files = await hostInputDigests(p, build);
    // Of the \${build.*} values a provisioner may use, only output_dir is stable yet not in the root key;
    // ports, addresses and the build key change every run and stay as written.
    const outputDir = canonicalJson(definition).includes('${build.output_dir}') ? build.output_directory : undefined;
    parent = digestOf({ schema: LAYER_SCHEMA, parent, provisioner: definition, files, outputDir });
    plan.push({ index: i, description, key: parent, bootVolatile: uploadsIntoVolatileDir(p) || undefined });
  }
  return plan;
}

/**
 * The key of the finished artifacts: the last layer plus everything after provisioning that shapes the
 * output. Undefined when a provisioner or post-processor must run on every build.
 */
export async function artifactKey(
  build: BuildConfig,
  rootKey: string,
  plan: PlannedLayer[],
): Promise<string | undefined> {
  if (plan.some((l) => !l.key)) return undefined;
  if (build.post_processors.some((p) => p.type === 'shell-local')) return undefined;
  const last = plan.length ? plan[plan.length - 1]!.key! : rootKey;
  // Files an output copies in (a box's include) by content: an edited file makes a new artifact.
  const included = await Promise.all(
    build.outputs.map((o) => Promise.all((o.include ?? []).map((f) => fileDigest(f)))),
  );
  return digestOf({
    schema: LAYER_SCHEMA,
    kiln: kilnVersion,
    last,
    outputs: build.outputs,
    ...(included.some((l) => l.length) ? { included } : {}),
    checksums: build.checksums,
    post_processors: build.post_processors,
    output_directory: build.output_directory,
    // Signing is part of the output (undefined, the key is left out: unsigned builds keep their keys).
    sign: build.sign,
  });
}

/** Bumped when what the finishing steps (clean-up, package list, trim, shutdown) do to a disk changes. */
export const FINAL_LAYER_SCHEMA = 1;

/**
 * The key of a build's final disk: the disk after the last provisioner (its layer's key, or the root
 * key when there is none) once the steps after provisioning have run: kiln's access taken out, the
 * package list read, free space trimmed, the guest shut down. So it holds what those steps read:
 * the communicator (who logs in, sudo or not), cloud-init on or off (what the clean-up wipes), the
 * shutdown command (a Packer habit: clean-up in shutdown_command), and the text of the scripts kiln
 * runs (`finishingScripts`, from the build layer). Outputs, post-processors, checksums and the output
 * directory are not in it: they only shape what is made from that disk. Undefined when the build has
 * no final layer: a provisioner is not cached, or there is no communicator to clean and trim with.
 */
export function finalLayerKey(
  build: BuildConfig,
  rootKey: string,
  plan: PlannedLayer[],
  finishingScripts: readonly string[],
): string | undefined {
  const comm = build.source.communicator;
  if (comm.type !== 'ssh') return undefined;
  if (plan.some((l) => !l.key)) return undefined;
  const last = plan.length ? plan[plan.length - 1]!.key! : rootKey;
  return digestOf({
    schema: LAYER_SCHEMA,
    final: FINAL_LAYER_SCHEMA,
    kiln: kilnVersion,
    last,
    communicator: { type: comm.type, username: comm.username },
    cloud_init: build.source.cloud_init !== false,
    shutdown_command: build.source.shutdown_command ?? null,
    scripts: finishingScripts.map((s) => digestOf(s)),
  });
}

/** Bumped when what a warm base holds, or when it is taken, changes. */
export const WARM_BASE_SCHEMA = 1;

/**
 * The key of a warm base (cache.boot_snapshot): the disk and the running VM of a build whose guest has
 * just booted and is ready for provisioning. So it is the root key (base digest, disk-shaping source
 * settings, the build's name, which is the guest's hostname, and the seed's files) plus what decides
 * the state the guest is in at that moment and whether a QEMU can load it: whether kiln waited for
 * cloud-init's last stage, the QEMU binary's version and the VM's command line (machine, CPU model,
 * memory, devices; vmStateShape, with per-build paths and ports normalised out). Provisioners are not
 * in it: every template with the same base and source settings shares one.
 */
export function warmBaseKey(
  rootKey: string,
  vm: { cloudInitWait: boolean; qemuVersion: string; shape: readonly string[] },
): string {
  return digestOf({
    schema: LAYER_SCHEMA,
    warm: WARM_BASE_SCHEMA,
    root: rootKey,
    cloudInitWait: vm.cloudInitWait,
    qemu: vm.qemuVersion,
    shape: vm.shape,
  });
}
