/**
 * Everything a build reports is a typed event. The human renderer (stderr) and the JSON-lines
 * renderer (--events=json, stdout) both subscribe; steps never print directly.
 */
export type BuildEvent =
  | { type: 'build-start'; build: string; steps: string[] }
  | { type: 'step-start'; build: string; step: string; index: number }
  | { type: 'step-end'; build: string; step: string; index: number; ms: number }
  | { type: 'step-error'; build: string; step: string; index: number; error: string }
  | { type: 'cleanup'; build: string; step: string; error?: string }
  | { type: 'log'; build: string; level: 'info' | 'warn' | 'debug'; message: string }
  | { type: 'output'; build: string; stream: 'stdout' | 'stderr'; source: string; line: string }
  | { type: 'provisioner-start'; build: string; index: number; provisioner: string }
  | { type: 'provisioner-end'; build: string; index: number; provisioner: string; ms: number }
  | { type: 'progress'; build: string; task: string; percent: number }
  /**
   * A file provisioner's transfer, a few times a second at most: bytes done of `total` (unset while
   * unknown, e.g. a folder downloaded as a tar stream). `path` is the guest's side.
   */
  | {
      type: 'transfer-progress';
      build: string;
      index: number;
      direction: 'upload' | 'download';
      path: string;
      done: number;
      total?: number;
    }
  | { type: 'provisioner-cached'; build: string; index: number; provisioner: string; key: string }
  /**
   * A layer saved into the store in the background: `ms` the copy + digest, `queuedMs` the wait behind
   * earlier saves; `final` for a build's final disk (after clean-up and trim; index -1).
   */
  | {
      type: 'layer-saved';
      build: string;
      index: number;
      key: string;
      size: number;
      ms: number;
      queuedMs?: number;
      final?: boolean;
      /** The warm base (cache.boot_snapshot): the disk of the guest ready for provisioning. */
      warmBase?: boolean;
    }
  /**
   * At the end of a build that saved layers: their saves took `ms` in all, in the background; the build
   * waited `waitedMs` of it at the end (the rest overlapped other steps).
   */
  | { type: 'layer-capture'; build: string; layers: number; ms: number; waitedMs: number }
  /**
   * cache.vm_state: the running VM saved beside layer `key` (`size` bytes of RAM and device state);
   * `pausedMs` the guest was paused for it, `ms` the digest and rename in the background. `warmBase`:
   * the state of the guest ready for provisioning (cache.boot_snapshot; `index` -1).
   */
  | {
      type: 'vm-state-saved';
      build: string;
      index: number;
      key: string;
      size: number;
      pausedMs: number;
      ms: number;
      vmgenid?: string;
      warmBase?: boolean;
    }
  /**
   * The VM saved with layer `key` was loaded instead of booting (`ms` from QEMU's start to the guest
   * running): the one saved after provisioner `provisioner`, or the warm base (`warmBase`, provisioner 0).
   */
  | {
      type: 'vm-restored';
      build: string;
      key: string;
      provisioner: number;
      size: number;
      ms: number;
      vmgenid?: string;
      warmBase?: boolean;
    }
  | { type: 'artifact'; build: string; path: string; format: string; size: number; sha256: string; reused?: boolean }
  /** A publish target's outcome (no credentials: where the image lives, its digest, bytes sent). */
  | {
      type: 'published';
      build: string;
      target: string;
      targetType: string;
      ok: boolean;
      location?: string;
      id?: string;
      remoteDigest?: string;
      unchanged?: boolean;
      bytesSent?: number;
      ms?: number;
      error?: string;
    }
  /** `kiln publish`'s outcome once every selected target ran (each also has its `published` event); `error` as printed, `fix` (also its last line) on its own when kiln knows one. */
  | { type: 'publish-end'; build: string; ok: boolean; ms: number; error?: string; fix?: string }
  /** `peakRssBytes`: the peak resident memory of the process running the build (kiln's own, not QEMU's or qemu-img's). */
  | {
      type: 'build-end';
      build: string;
      ok: boolean;
      ms: number;
      error?: string;
      /** How to fix `error` (which also ends with it, as printed), when kiln knows. */
      fix?: string;
      outputDirectory?: string;
      peakRssBytes: number;
    };

export type EventSink = (event: BuildEvent & { time: string }) => void;

/** Replaces every secret (sensitive variable value, password) in a string with "<sensitive>". */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  // Longest first: a secret that contains a shorter one must not leave its remainder readable.
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) if (s) out = out.split(s).join('<sensitive>');
  return out;
}

/**
 * Masks the string values of an event, however deeply nested. Only values: masking the serialized
 * JSON would also rewrite field names and numbers (a secret "build" renamed the field; "1234" turned
 * `"ms":1234.5` into invalid JSON and threw out of emit).
 */
export function maskValues<T>(value: T, secrets: readonly string[], keep: readonly string[] = []): T {
  if (!secrets.length) return value;
  if (typeof value === 'string') return maskSecrets(value, secrets) as T;
  if (Array.isArray(value)) return value.map((v) => maskValues(v, secrets)) as T;
  if (value && typeof value === 'object') {
    // `keep`: top-level fields left as they are (a manifest's artifact paths name files that exist).
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, keep.includes(k) ? v : maskValues(v, secrets)]),
    ) as T;
  }
  return value;
}

export class EventBus {
  private sinks: EventSink[] = [];
  constructor(private readonly secrets: string[] = []) {}

  subscribe(sink: EventSink): () => void {
    this.sinks.push(sink);
    return () => {
      this.sinks = this.sinks.filter((s) => s !== sink);
    };
  }

  addSecret(secret: string): void {
    if (secret && !this.secrets.includes(secret)) this.secrets.push(secret);
  }

  emit(event: BuildEvent): void {
    const masked = maskValues(event, this.secrets);
    const stamped = { ...masked, time: new Date().toISOString() };
    for (const sink of this.sinks) sink(stamped);
  }
}
