/**
 * The layer cache as a plan: what a build would do with what the caches hold, computed without booting
 * anything. `planBuild` reads the local store (and, when given, asks a remote cache which keys it has)
 * and answers one of four things: the finished output is up to date; the final disk is cached, so the
 * outputs are converted from it without booting; provisioning resumes at a cached layer; or the build
 * starts fresh. The build chooses its step list from that answer (src/build/build.ts), `kiln plan`
 * prints it. Nothing here changes the store: a damaged layer is reported in `damaged` for the caller
 * to remove.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { BuildConfig } from '../template/schema.js';
import { artifactKey, finalLayerKey, planLayers, resumePoint, sourceKey, type PlannedLayer } from './layer-keys.js';
import { LayerStore, type LayerMeta } from './layers.js';
import { readVmStateMeta } from './vm-states.js';
import { cachedFileDigest } from './digest.js';
import { downloadUrlKey } from './download.js';
import { isHttpUrl } from '../util/url.js';

/** What a remote layer cache answers a plan (src/cache/remote: RemoteCache implements it). */
export interface RemoteLookup {
  /** True when the remote cache holds a usable record for this local key (`final`: a build's final disk). */
  has(key: string, kind: 'layer' | 'final', signal?: AbortSignal): Promise<boolean>;
}

/** Where a cached layer is: on this machine, or only in the remote cache (pulled before use). */
export type LayerSource = 'local' | 'remote';

export type Resume =
  /** The finished outputs of an identical earlier build are in place: nothing to do. */
  | { kind: 'upToDate'; artifactKey: string }
  /** Every provisioner and the clean-up are cached: the outputs are converted from the final disk, nothing boots. */
  | { kind: 'fromFinalLayer'; finalKey: string; source: LayerSource }
  /**
   * Provisioning resumes at `layers[at]` on the cached layer `layers[at - 1]` (`at` may equal
   * layers.length: every provisioner cached, the guest boots for the finishing steps). `restoreVm`: the
   * VM saved with that layer is loaded instead of booting it (cache.vm_state).
   */
  | { kind: 'resume'; at: number; key: string; source: LayerSource; restoreVm?: boolean }
  /** Nothing cached: every step runs (and cacheable layers are saved). */
  | { kind: 'fresh' };

export interface PlanLayer {
  /** Index of the provisioner in build.provisioners. */
  index: number;
  description: string;
  /** Undefined from the first provisioner that cannot be cached onwards (see `uncacheable`). */
  key?: string;
  uncacheable?: string;
  /** A file upload into a directory emptied at boot: a booted resume runs it again. */
  bootVolatile?: boolean;
  /** The local store holds it (digest-checked when the plan was made with `verify`). */
  local: boolean;
  /** The remote cache holds it (undefined: no remote cache asked, or it was not asked about this layer). */
  remote?: boolean;
}

export interface BuildPlan {
  build: string;
  /** The base image's (or ISO's) sha256; undefined when it is not known yet (a URL not downloaded, no sha256 checksum). */
  base?: { sha256: string };
  /** Why no key could be computed (the base is unknown), when so. */
  unknown?: string;
  /** Key of the disk before any provisioner. */
  rootKey?: string;
  /** The applicable provisioners in order. */
  layers: PlanLayer[];
  /** The build's final disk (after clean-up, package list, trim, shutdown); undefined when it has none. */
  final?: { key: string; local: boolean; remote?: boolean };
  /** Key of the finished outputs; undefined when something must run every build. */
  artifactKey?: string;
  resume: Resume;
  upToDate: boolean;
  /** Local layers that failed their digest check (with `verify`): the build removes them and rebuilds. */
  damaged: { key: string; problem: string; final?: boolean }[];
  /** Why the plan resumes earlier than the deepest cached layer, in words. */
  notes: string[];
  /**
   * With `warmBase` asked for and a fresh start: the newest warm base saved for this root key with its
   * VM (restored instead of booting when QEMU and the VM's shape still match), or null when none is.
   */
  warmBase?: { key: string; vmBytes: number; created: string } | null;
}

export interface PlanOptions {
  /** The kiln cache directory (layers under <cacheDir>/layers, downloads under <cacheDir>/downloads). */
  cacheDir: string;
  /** Asked for keys the local store lacks. */
  remote?: RemoteLookup;
  /** The base image's sha256 when the caller knows it (the build, after fetching it); else found from the template. */
  baseSha256?: string;
  /**
   * What the steps after provisioning run in the guest (their text is in the final disk's key). The
   * build layer passes them: src/build/build.ts's `planFor` fills them in for callers above it.
   */
  finishingScripts?: readonly string[];
  /** Digest-check the local layers the plan would use (the build does; a dry plan may skip it). */
  verify?: boolean;
  /** cache.vm_state is usable for this build: a layer with a saved VM resumes without booting. */
  vmState?: boolean;
  /**
   * cache.boot_snapshot applies to this build: report the warm base the store holds for its root key
   * (`kiln plan`; a build finds its own by the exact key, which needs the VM's command line).
   */
  warmBase?: boolean;
  /** Look at intermediate layers in the remote cache too (only final disks are shared by default). */
  remoteIntermediate?: boolean;
  /** Ask the remote cache for the final disk (default true; false after pulling it failed). */
  remoteFinal?: boolean;
  /** A store to read (its driver repoints copied layers); default: one on `cacheDir`. */
  store?: LayerStore;
  signal?: AbortSignal;
}

/**
 * The base's sha256 without downloading it: a local file is digested (memoised), a URL is looked up
 * in the download cache, or taken from a `sha256:` checksum (the digest of the very file).
 */
export async function knownBaseDigest(build: BuildConfig, cacheDir: string): Promise<string | undefined> {
  const media = build.source.base_image ?? build.source.iso;
  if (!media) return undefined;
  if (!isHttpUrl(media)) return existsSync(media) ? cachedFileDigest(media, cacheDir) : undefined;
  if (build.source.checksum.startsWith('sha256:')) return build.source.checksum.slice('sha256:'.length).toLowerCase();
  try {
    const rec = JSON.parse(
      readFileSync(path.join(cacheDir, 'downloads', `url-${downloadUrlKey(media)}.json`), 'utf8'),
    ) as { sha256: string };
    return rec.sha256;
  } catch {
    return undefined;
  }
}

/** The manifest an output directory holds names the artifact key it was made with. */
function upToDate(build: BuildConfig, store: LayerStore, key: string): boolean {
  const record = store.artifactRecord(key);
  if (!record || record.outputDirectory !== build.output_directory || !LayerStore.untouched(record)) return false;
  try {
    const manifest = JSON.parse(readFileSync(path.join(build.output_directory, 'manifest.json'), 'utf8')) as {
      cache?: { artifact_key?: string };
    };
    return manifest.cache?.artifact_key === key;
  } catch {
    return false;
  }
}

/** A layer and every layer it backs onto are published and whole (those in `verified` were checked already). */
async function verifyChain(
  store: LayerStore,
  key: string,
  verified: ReadonlySet<string>,
): Promise<{ ok: true } | { ok: false; key: string; problem: string }> {
  for (let m: LayerMeta | undefined = store.meta(key), k = key; ;) {
    if (!m) return { ok: false, key: k, problem: 'no metadata' };
    const check = verified.has(k) ? { ok: true as const } : await store.verify(k);
    if (!check.ok) return { ok: false, key: k, problem: check.problem };
    if (!m.parent) return { ok: true };
    k = m.parent;
    m = store.meta(k);
  }
}

/** The newest warm base in the store saved for `rootKey` with its VM, or null. */
function warmBaseFor(store: LayerStore, rootKey: string): NonNullable<BuildPlan['warmBase']> | null {
  const saved = store
    .list()
    .filter((m) => m.warmBase && m.rootKey === rootKey)
    .map((m) => ({ m, vm: readVmStateMeta(store.dir, m.key) }))
    .filter((w) => w.vm !== undefined)
    .sort((a, b) => Date.parse(b.m.created) - Date.parse(a.m.created))[0];
  return saved ? { key: saved.m.key, vmBytes: saved.vm!.size, created: saved.m.created } : null;
}

/** What building `build` would do with what the caches hold; reads, never writes. */
export async function planBuild(build: BuildConfig, options: PlanOptions): Promise<BuildPlan> {
  const store = options.store ?? new LayerStore(options.cacheDir);
  const baseSha256 = options.baseSha256 ?? (await knownBaseDigest(build, options.cacheDir));
  const fresh = { kind: 'fresh' } as const;
  if (!baseSha256) {
    return {
      build: build.name,
      layers: [],
      resume: fresh,
      upToDate: false,
      damaged: [],
      notes: [],
      unknown: `the base ${build.source.base_image ?? build.source.iso} is not downloaded yet and "checksum" is not a sha256: its digest (and every key) is known once it is fetched`,
    };
  }
  const rootKey = await sourceKey(build, baseSha256);
  const keyed: PlannedLayer[] = await planLayers(build, rootKey);
  const outputKey = await artifactKey(build, rootKey, keyed);
  const finalKey = finalLayerKey(build, rootKey, keyed, options.finishingScripts ?? []);
  const damaged: BuildPlan['damaged'] = [];
  const notes: string[] = [];
  const layers: PlanLayer[] = keyed.map((l) => ({ ...l, local: false }));
  const plan = (resume: Resume, final?: BuildPlan['final']): BuildPlan => ({
    build: build.name,
    base: { sha256: baseSha256 },
    rootKey,
    layers,
    final,
    artifactKey: outputKey,
    resume,
    upToDate: resume.kind === 'upToDate',
    damaged,
    notes,
  });

  /** A fresh start, with the warm base it would restore when asked for. */
  const freshPlan = (): BuildPlan => ({
    ...plan(fresh, final),
    ...(options.warmBase ? { warmBase: warmBaseFor(store, rootKey) } : {}),
  });

  if (outputKey && upToDate(build, store, outputKey)) return plan({ kind: 'upToDate', artifactKey: outputKey });

  // The deepest run of consecutive layers the store holds, each checked against its digest.
  let cachedCount = 0;
  while (cachedCount < layers.length && layers[cachedCount]!.key && store.meta(layers[cachedCount]!.key!)) {
    const key = layers[cachedCount]!.key!;
    if (options.verify) {
      const check = await store.verify(key);
      if (!check.ok) {
        damaged.push({ key, problem: check.problem });
        break;
      }
    }
    layers[cachedCount]!.local = true;
    cachedCount++;
  }

  // The final disk: locally (its whole chain intact), else remotely.
  let final: BuildPlan['final'];
  if (finalKey) {
    let local = store.meta(finalKey)?.final !== undefined;
    if (local && options.verify) {
      // A digest is a whole read of the layer: the provisioner layers checked above are not read again.
      const check = await verifyChain(store, finalKey, new Set(layers.filter((l) => l.local).map((l) => l.key!)));
      if (!check.ok) {
        if (!damaged.some((d) => d.key === check.key))
          damaged.push({ key: check.key, problem: check.problem, final: check.key === finalKey });
        local = false;
      }
    }
    final = { key: finalKey, local };
    if (local) return plan({ kind: 'fromFinalLayer', finalKey, source: 'local' }, final);
    if (options.remote && options.remoteFinal !== false) {
      final.remote = await options.remote.has(finalKey, 'final', options.signal);
      if (final.remote) return plan({ kind: 'fromFinalLayer', finalKey, source: 'remote' }, final);
    }
  }

  // Intermediate layers the remote holds (only when asked: they are not shared by default). A remote
  // chain is pulled from its bottom: it cannot go on this machine's own layers, whose bytes differ.
  let remoteCount = cachedCount;
  if (options.remote && options.remoteIntermediate && cachedCount === 0) {
    for (let i = layers.length - 1; i >= cachedCount; i--) {
      const key = layers[i]!.key;
      if (!key) continue;
      if (await options.remote.has(key, 'layer', options.signal)) {
        layers[i]!.remote = true;
        if (remoteCount === cachedCount) remoteCount = i + 1;
      }
    }
    // A chain is pulled whole: the remote must hold every layer from the first one it lacks locally.
    for (let i = cachedCount; i < remoteCount; i++)
      if (!layers[i]!.remote) {
        remoteCount = cachedCount;
        break;
      }
  }

  const source: LayerSource = remoteCount > cachedCount ? 'remote' : 'local';
  const count = Math.max(cachedCount, remoteCount);
  if (count === 0) return freshPlan();
  // A VM restored from its saved state did not boot: what a provisioner left in /tmp is still there.
  const restoreVm =
    source === 'local' && options.vmState === true && readVmStateMeta(store.dir, layers[count - 1]!.key!) !== undefined;
  const at = restoreVm ? count : resumePoint(keyed, count);
  if (at < count) {
    const again = layers
      .slice(at, count)
      .map((l) => `${l.index + 1} (${l.description})`)
      .join(', ');
    notes.push(
      `provisioner ${again} runs again: it uploads into a directory the guest empties at boot, and a later provisioner may need the file`,
    );
  }
  if (at === 0) return freshPlan();
  return plan({ kind: 'resume', at, key: layers[at - 1]!.key!, source, ...(restoreVm ? { restoreVm } : {}) }, final);
}
