/**
 * The typed state a build's steps share. Fields appear as steps run; `need()` reads one that an
 * earlier step must have set, and names that step's absence clearly if the order is ever wrong.
 */
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import type { EventBus } from '../ui/events.js';
import type { Accelerator } from '../qemu/argv.js';
import type { Driver, QemuProcess, QmpClient } from '../qemu/driver.js';
import type { BootConfigServer } from '../http/server.js';
import type { KeyPair } from '../communicator/keys.js';
import type { ExecResult, SshSession, SshTarget } from '../communicator/ssh.js';
import type { Scalar } from '../template/interpolate.js';
import type { LayerMeta, LayerStore } from '../cache/layers.js';
import type { RemoteCache } from '../cache/remote/protocol.js';
import type { PlannedLayer } from '../cache/layer-keys.js';
import type { BuildPlan } from '../cache/plan.js';
import type { ArtifactRecord } from '../artifacts/manifest.js';
import type { GuestPackages } from '../artifacts/guest-packages.js';

export type OnError = 'cleanup' | 'abort' | 'ask';

export interface BuildOptions {
  force: boolean;
  onError: OnError;
  debug: boolean;
  cacheDir: string;
  /** --no-cache: neither use nor write provisioner layers or reuse a finished artifact. */
  noCache?: boolean;
  /** --cache-remote: a shared layer cache on an object store (src/cache/remote), one for all builds. */
  remoteCache?: RemoteCache;
  /** Ask the user something on the terminal (breakpoints, --debug pauses, --on-error=ask). */
  prompt?: (question: string) => Promise<string>;
  /** Air-gapped builds (src/airgap): the guest's package proxy and, offline, a network cut off but for kiln. */
  airgap?: AirgapGuestNetwork;
  /** Where work directories are made (default: os.tmpdir()). */
  tempDir?: string;
  /** How the user releases a build kept by --on-error=abort (the CLI's lines name Ctrl-C and its pid). */
  keptBuildRelease?: string[];
  /** The QEMU/qemu-img driver the builds use (build() makes it from its `qemu` options; the layers below take it from here). */
  driver: Driver;
  /** The GNU tar for GCE tarballs (the CLI: KILN_TAR). */
  tarBinary?: string;
}

/** How a recording or offline build's guest reaches kiln's package proxy (and, offline, its HTTP server). */
export interface AirgapGuestNetwork {
  /** kiln's proxy on 127.0.0.1. */
  proxyHostPort: number;
  /** What the guest uses: http://GUEST_IP:PORT, forwarded to the proxy (QEMU guestfwd). */
  guestProxy: { ip: string; port: number };
  /** QEMU restrict=on: the guest reaches kiln's forwards only; 10.0.2.2 is unreachable, so kiln's HTTP server gets httpIp. */
  offline: boolean;
  /** The guest address of kiln's HTTP server when offline (guestfwd cannot use slirp's host address). */
  httpIp: string;
  /** Replaying a bundle: the recorded responses served so far (URL, body digest), for the provenance. */
  replayed?: () => { url: string; sha256: string }[];
}

export type { ArtifactRecord } from '../artifacts/manifest.js';

export interface BuildState {
  /** Private (0700) scratch directory: disk overlay, sockets, keys, seed, serial log. */
  workDir: string;
  startedAt: Date;
  /** Where artifacts are written before the final rename into output_directory. */
  stagingDir?: string;
  base?: { path: string; format: string; sha256: string; source: string; kind: 'disk' | 'iso' };
  /** True from QEMU's start on the installer ISO until the installer has finished. */
  installing?: boolean;
  /** Extra install media kiln made: the cd_files ISO and the floppy image. */
  cdFilesIso?: string;
  floppyImage?: string;
  /** The active (top) image QEMU writes; it changes each time a layer is frozen below it. */
  disk?: { path: string; format: 'qcow2'; virtualSize: number };
  /** create-disk grew the base's root partition to disk_size on the host: the seed turns cloud-init's growpart off. */
  rootPartitionGrown?: boolean;
  layers?: LayerPlan;
  /**
   * What the layer cache decided (src/cache/plan.ts): up to date, converted from the final disk,
   * resumed at a cached layer, or fresh. Set by the layer-cache step; build.ts chooses the steps that
   * follow from it. Undefined with --no-cache.
   */
  plan?: BuildPlan;
  /** Applicable provisioners finished (run or cached), so a retried provision step resumes after them. */
  provisionersDone?: number;
  http?: { server: BootConfigServer; port: number; ip: string; url: string };
  buildKey?: KeyPair;
  hostKey?: KeyPair;
  sshTarget?: SshTarget;
  sshHostPort?: number;
  accelerator?: Accelerator;
  /** The -cpu model QEMU ran with (the template's cpu_model or qemu_args, else the accelerator's default). */
  cpuModel?: string;
  /** source.memory_prealloc as decided once for this build (auto looks at the host's free memory then). */
  memoryPrealloc?: boolean;
  /** Ends this build's promise of memory to allocate up front (src/qemu/memory.ts): once its QEMU holds it, or at the build's end. */
  preallocTaken?: () => void;
  qemu?: QemuProcess;
  qmp?: QmpClient;
  serialLog?: string;
  ssh?: SshSession;
  artifacts: ArtifactRecord[];
  timings: Record<string, number>;
  cloudInitInstanceId?: string;
  /** The seed skips cloud-init's config and final stages (cloud_init.later_stages: auto, nothing for them). */
  cloudInitLaterStagesSkipped?: boolean;
  /** Packages installed in the guest (dpkg or rpm) with their licences, read after the clean-up. */
  sbom?: GuestPackages;
  /**
   * Reads of the guest that run beside the steps after them (the package list beside the trim); they
   * never reject (each reports its own failure). The shut-down step waits for them: they need the guest.
   */
  besideGuest?: Promise<void>[];
  /**
   * The clean-up's root shell, still open after the clean-up and the trim when kiln powers the guest off
   * itself (no shutdown_command): the shut-down step sends it `poweroff` instead of starting another
   * session and sudo in the guest for it (src/build/steps/clean-guest.ts).
   */
  rootShell?: OpenRootShell;
  /** Actual size of the captured disk before and after trimming free space. */
  compaction?: { beforeBytes: number; afterBytes: number };
  /** The trim the clean-up's root shell ran after it (steps/compact.ts reports it): overlay size before, fstrim's status and output. */
  trimmedWithCleanUp?: { beforeBytes: number; exitCode: number; output: string };
  seed?: { kind: 'http'; url: string } | { kind: 'cdrom'; iso: string };
  /** Layers this build saved into the store (their time is timings['layer capture (background)']). */
  layerSaves?: number;
  /** The VM was restored from the state saved with this layer instead of booting (src/build/vm-state.ts). */
  restoredVm?: { key: string; ms: number; warmBase?: boolean };
}

/** A root shell in the guest reading its commands from kiln, between two steps (BuildState.rootShell). */
export interface OpenRootShell {
  /** Sends the shell its last command and ends its input. */
  finish(command: string): void;
  /** The shell's end: its status, or undefined when the command failed to run at all; never rejects. */
  ended: Promise<ExecResult | undefined>;
  /** What the shell printed (stdout and stderr) since it was left open. */
  output(): string;
}

export interface LayerPlan {
  store: LayerStore;
  /** Key of the disk before any provisioner (base digest + disk-shaping source settings). */
  rootKey: string;
  /** The applicable provisioners in order, each with its key while the chain is cacheable. */
  plan: PlannedLayer[];
  /** How many of `plan` the cache already holds: provisioning resumes at plan[cachedCount]. */
  cachedCount: number;
  /** What the first new layer backs onto, named inside the store; null for a blank (ISO) disk. */
  rootBacking: { name: string; format: string } | null;
  artifactKey?: string;
  /**
   * Key of this build's final disk (after clean-up, package list, trim and shutdown); undefined when
   * it has none (a provisioner not cached, no communicator). Saved by the shut-down step.
   */
  finalKey?: string;
  /**
   * A layer this build froze that another build had published first (the store keeps theirs): this
   * build's later layers are deltas against its own copy, so they are not saved.
   */
  foreignParent?: string;
  /** Temporary VM state files this build had QEMU write (removed at the end; a published one is renamed away). */
  stateTemps?: Set<string>;
  /** Layers being copied into the store in the background while the next provisioner runs. */
  publishing: Promise<void>;
  /** cache.vm_state: captured layers also save the running VM beside them (all, or only the one before the last provisioner). */
  vmState?: boolean;
  /** cache.vm_state: before-last (the default): only the layer before the last provisioner saves its VM. */
  vmStateBeforeLastOnly?: boolean;
  /**
   * cache.boot_snapshot, for a build that starts fresh: launch restores the warm base under `key` when
   * the store holds it (`restored`), else the guest boots and is saved as one before provisioning.
   */
  warmBase?: { key?: string; restored?: boolean };
  /** Ends this build's claim on the warm base it restored (the layer-cache step's cleanup calls it). */
  releaseWarmBase?: () => void;
  /** The layer the first new layer backs onto when it is not the base: the warm base. */
  rootParent?: string;
  /** The key of the cached layer whose saved VM launch tries to restore (the last cached one). */
  restoreFrom?: string;
  /** Runs in the save queue after each layer is saved (sharing the final disk with a remote cache). */
  afterSave?: (meta: LayerMeta) => Promise<void>;
}

/** True when the build makes its outputs from a cached final layer: the steps that need a guest are off. */
export function convertsFromCache(ctx: Pick<BuildContext, 'state'>): boolean {
  return ctx.state.plan?.resume.kind === 'fromFinalLayer';
}

/** The disk is an overlay on a cached layer (or that layer): an ISO build's install is done, nothing boots the ISO. */
export function onCachedLayer(state: Pick<BuildState, 'plan'>): boolean {
  const kind = state.plan?.resume.kind;
  return kind === 'resume' || kind === 'fromFinalLayer';
}

export interface BuildContext {
  template: LoadedTemplate;
  build: BuildConfig;
  options: BuildOptions;
  events: EventBus;
  state: BuildState;
  /** QEMU and qemu-img: the steps reach them only through it (a fake one in the step tests). */
  driver: Driver;
  signal: AbortSignal;
  /** `${build.*}` values known so far. */
  buildValues(): Record<string, Scalar>;
  log(message: string, level?: 'info' | 'warn' | 'debug'): void;
}

export { need } from '../util/need.js';

/** Waits for the guest reads still running beside the steps (BuildState.besideGuest). */
export async function guestReadsDone(state: Pick<BuildState, 'besideGuest'>): Promise<void> {
  await Promise.all(state.besideGuest ?? []);
}
