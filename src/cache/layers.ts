/**
 * The layer store under <cache>/layers: each provisioner's result is an immutable qcow2 named by its
 * key, whose backing file is its parent layer (or the base image, hard-linked in as base-<sha256>)
 * named relative to the store, so the store can move as a whole. A layer's .json holds its digest;
 * a layer is published by rename only after it is complete, and checked against that digest before a
 * build boots from it, so a half-written or damaged layer is never used.
 *
 * Builds using layers list them in inuse/<pid>.json; prune and rm leave those alone.
 */
import {
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { ImageTool } from '../qemu/image-tool.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import { fileDigest } from './digest.js';
import { withLock } from './lock.js';
import { isAlive } from '../util/pid.js';
import { removeVmState, vmStateBytes, vmStateSummary, type VmStateSummary } from './vm-states.js';

export interface LayerMeta {
  key: string;
  /** Backing file name inside the store ("<parent key>.qcow2" or "base-<sha256>.<ext>"); null for none. */
  backing: string | null;
  /** The parent layer's key; null when the backing is a base image or there is none. */
  parent: string | null;
  sha256: string;
  /** Bytes the file occupies on disk (qcow2 layers hold only what the provisioner changed). */
  size: number;
  created: string;
  build: string;
  template: string;
  /** 1-based position of the provisioner in its build, and what it is. */
  provisioner: number;
  description: string;
  /**
   * A build's final disk (after clean-up, package list, trim and shutdown; provisioner 0), with what
   * those steps recorded, so a build made from it writes the manifest a booted build would.
   */
  final?: FinalLayerRecord;
  /** The disk of a guest booted and ready for provisioning, saved with its VM (cache.boot_snapshot; provisioner 0). */
  warmBase?: boolean;
  /** A warm base's root key (the base and the settings that shape its disk): what `kiln plan` finds it by. */
  rootKey?: string;
  /** The running VM saved with this layer (cache.vm_state; src/cache/vm-states.ts), read from its own file. */
  vmState?: VmStateSummary;
  /**
   * Whether the guest on this layer holds kiln's package proxy settings (saved by a --record/--offline
   * build: true; by an ordinary build: false). Absent in layers saved before kiln recorded it: unknown.
   */
  guestProxy?: boolean;
}

/** What the finishing steps of the build that saved a final layer found. */
export interface FinalLayerRecord {
  sbom?: { manager: 'dpkg' | 'rpm' | 'none'; packages: { name: string; version: string; arch: string }[] };
  compaction?: { beforeBytes: number; afterBytes: number };
  accelerator?: string;
}

/**
 * The finished outputs of a build whose artifact key this is, as they were when written, so an
 * identical later build can tell they are still in place (not the manifest's artifact list).
 */
export interface FinishedOutputRecord {
  key: string;
  outputDirectory: string;
  /** Identity of each finished file when it was written; any change means the output was touched. */
  files: { path: string; size: number; mtimeMs: number; ino: number }[];
  created: string;
}

const diskBytes = (file: string) => {
  const st = statSync(file);
  return Math.min(st.size, st.blocks * 512);
};

export class LayerStore {
  readonly dir: string;
  /**
   * `images`: what repoints a published layer's backing file (the build's image tool). A store only
   * read (plans, `kiln cache`, publish's freshness check) runs no qemu-img and needs none.
   */
  constructor(
    cacheDir: string,
    private readonly images?: Pick<ImageTool, 'rebaseUnsafe'>,
  ) {
    this.dir = path.join(cacheDir, 'layers');
  }

  private ensureDirs(): void {
    // Private: a layer is a whole disk, and may come with the build key that logs into it.
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    mkdirSync(path.join(this.dir, 'inuse'), { recursive: true });
    mkdirSync(path.join(this.dir, 'artifacts'), { recursive: true });
  }

  layerFile(key: string): string {
    return path.join(this.dir, `${key}.qcow2`);
  }
  private keyFile(key: string): string {
    return path.join(this.dir, `${key}.ssh-key`);
  }

  /** The build key a guest without cloud-init trusts in this layer (it cannot be given a new one). */
  sshKey(key: string): string | undefined {
    try {
      return readFileSync(this.keyFile(key), 'utf8');
    } catch {
      return undefined;
    }
  }
  private metaFile(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }

  meta(key: string): LayerMeta | undefined {
    let meta: LayerMeta;
    try {
      meta = JSON.parse(readFileSync(this.metaFile(key), 'utf8')) as LayerMeta;
    } catch {
      return undefined;
    }
    const vmState = vmStateSummary(this.dir, key);
    return vmState ? { ...meta, vmState } : meta;
  }

  /** Published and whole: the file exists and matches the digest its metadata recorded. */
  async verify(key: string): Promise<{ ok: true } | { ok: false; problem: string }> {
    const meta = this.meta(key);
    if (!meta) return { ok: false, problem: 'no metadata' };
    const file = this.layerFile(key);
    if (!existsSync(file)) return { ok: false, problem: 'layer file missing' };
    if (meta.backing && !existsSync(path.join(this.dir, meta.backing)))
      return { ok: false, problem: `backing file ${meta.backing} missing` };
    const got = await fileDigest(file);
    if (got !== meta.sha256)
      return {
        ok: false,
        problem: `digest mismatch (recorded ${meta.sha256.slice(0, 12)}..., file ${got.slice(0, 12)}...)`,
      };
    return { ok: true };
  }

  /** Removes a layer and, since they back onto it, every layer built on it. Returns the keys removed. */
  remove(key: string): string[] {
    const removed: string[] = [];
    const children = this.list().filter((m) => m.parent === key);
    for (const c of children) removed.push(...this.remove(c.key));
    rmSync(this.metaFile(key), { force: true });
    rmSync(this.layerFile(key), { force: true });
    rmSync(this.keyFile(key), { force: true });
    removeVmState(this.dir, key);
    removed.push(key);
    return removed;
  }

  /** Marks a layer used now (its .json mtime is the last-use time prune goes by). */
  touch(key: string): void {
    const now = new Date();
    try {
      utimesSync(this.metaFile(key), now, now);
    } catch {
      /* removed meanwhile */
    }
  }

  lastUsed(key: string): Date {
    try {
      return statSync(this.metaFile(key)).mtime;
    } catch {
      return new Date(0);
    }
  }

  list(): LayerMeta[] {
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => /^[0-9a-f]{64}\.json$/.test(n))
      .map((n) => this.meta(n.slice(0, 64)))
      .filter((m): m is LayerMeta => m !== undefined);
  }

  /** Base images the store holds (hard links where possible), with their size. */
  bases(): { name: string; size: number }[] {
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => n.startsWith('base-'))
      .map((name) => ({ name, size: diskBytes(path.join(this.dir, name)) }));
  }

  /**
   * Puts the base image into the store (a hard link: no copy on the same file system) and returns its
   * name there; layers name it as their backing file.
   */
  async ensureBase(file: string, sha256: string, format: string): Promise<string> {
    this.ensureDirs();
    const name = `base-${sha256}.${format}`;
    const dst = path.join(this.dir, name);
    if (existsSync(dst)) return name;
    await withLock(`${dst}.lock`, async () => {
      if (existsSync(dst)) return;
      const tmp = `${dst}.tmp-${process.pid}`;
      rmSync(tmp, { force: true });
      try {
        linkSync(file, tmp);
      } catch {
        copyFileSync(file, tmp);
      }
      renameSync(tmp, dst);
    });
    return name;
  }

  /**
   * Publishes `frozen` (an overlay QEMU no longer writes) as layer `key`: copied sparsely, its backing
   * file renamed to the store-relative name, digested, then renamed into place.
   */
  async publish(
    key: string,
    frozen: string,
    backing: { name: string; format: string } | null,
    meta: Omit<LayerMeta, 'key' | 'backing' | 'sha256' | 'size' | 'created'>,
    signal?: AbortSignal,
    sshKey?: string,
  ): Promise<LayerMeta> {
    const images = this.images;
    if (!images)
      throw new Error(
        'LayerStore.publish: this store was opened without an image tool (new LayerStore(cacheDir, driver))',
      );
    this.ensureDirs();
    const final = this.layerFile(key);
    return withLock(
      `${final}.lock`,
      async () => {
        const existing = this.meta(key);
        if (existing && existsSync(final)) return existing; // another build made it meanwhile
        const tmp = `${final}.tmp-${process.pid}`;
        try {
          await execa(...diesWithKiln('cp', ['--sparse=always', '--reflink=auto', frozen, tmp]), {
            cancelSignal: signal,
          });
          await images.rebaseUnsafe(tmp, backing, signal);
          const full: LayerMeta = {
            key,
            backing: backing?.name ?? null,
            ...meta,
            sha256: await fileDigest(tmp),
            size: diskBytes(tmp),
            created: new Date().toISOString(),
          };
          if (sshKey) writeFileSync(this.keyFile(key), sshKey, { mode: 0o600 });
          renameSync(tmp, final);
          const metaTmp = `${this.metaFile(key)}.tmp-${process.pid}`;
          writeFileSync(metaTmp, JSON.stringify(full, null, 2) + '\n');
          renameSync(metaTmp, this.metaFile(key));
          return full;
        } finally {
          rmSync(tmp, { force: true });
        }
      },
      30 * 60_000,
      signal,
    );
  }

  /** Records that this process uses these layers, until the returned function is called. */
  claim(keys: string[]): () => void {
    this.ensureDirs();
    const file = path.join(this.dir, 'inuse', `${process.pid}-${Math.random().toString(36).slice(2, 10)}.json`);
    writeFileSync(file, JSON.stringify({ pid: process.pid, keys }));
    return () => rmSync(file, { force: true });
  }

  /** Layers some live kiln process uses right now, with the layers they back onto. */
  inUse(): Set<string> {
    const used = new Set<string>();
    let names: string[] = [];
    try {
      names = readdirSync(path.join(this.dir, 'inuse'));
    } catch {
      return used;
    }
    for (const n of names) {
      const file = path.join(this.dir, 'inuse', n);
      try {
        const { pid, keys } = JSON.parse(readFileSync(file, 'utf8')) as { pid: number; keys: string[] };
        if (!isAlive(pid)) {
          rmSync(file, { force: true });
          continue;
        }
        for (const k of keys)
          for (let m = this.meta(k); m; m = m.parent ? this.meta(m.parent) : undefined) used.add(m.key);
      } catch {
        /* being written */
      }
    }
    return used;
  }

  /** Temporary files of publishers that died (kiln killed mid-copy). */
  removeStaleTemp(): string[] {
    const removed: string[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return removed;
    }
    for (const n of names) {
      const m = /\.tmp-(\d+)$/.exec(n);
      if (!m || isAlive(Number(m[1]))) continue;
      rmSync(path.join(this.dir, n), { force: true });
      removed.push(n);
    }
    return removed;
  }

  /** Base images no layer backs onto any more. */
  removeUnusedBases(): string[] {
    const wanted = new Set(this.list().map((m) => m.backing));
    const removed: string[] = [];
    for (const b of this.bases()) {
      if (b.name.endsWith('.lock') || wanted.has(b.name)) continue;
      rmSync(path.join(this.dir, b.name), { force: true });
      removed.push(b.name);
    }
    return removed;
  }

  totalBytes(): number {
    return (
      this.list().reduce(
        (n, m) =>
          n +
          (existsSync(this.layerFile(m.key)) ? diskBytes(this.layerFile(m.key)) : 0) +
          vmStateBytes(this.dir, m.key),
        0,
      ) + this.bases().reduce((n, b) => n + b.size, 0)
    );
  }

  /**
   * Removes least recently used layers (with what backs onto them) until the store fits in
   * `keepBytes`; layers in use are kept. Returns the keys removed.
   */
  prune(keepBytes: number): string[] {
    const removed: string[] = [];
    this.removeStaleTemp();
    const busy = this.inUse();
    const byAge = this.list().sort((a, b) => this.lastUsed(a.key).getTime() - this.lastUsed(b.key).getTime());
    for (const m of byAge) {
      if (this.totalBytes() <= keepBytes) break;
      if (busy.has(m.key) || !existsSync(this.metaFile(m.key))) continue;
      const descendants = this.descendants(m.key);
      if (descendants.some((k) => busy.has(k))) continue;
      removed.push(...this.remove(m.key));
      this.removeUnusedBases();
    }
    this.removeUnusedBases();
    return removed;
  }

  private descendants(key: string): string[] {
    const all = this.list();
    const out: string[] = [];
    const walk = (k: string) => {
      for (const c of all.filter((m) => m.parent === k)) {
        out.push(c.key);
        walk(c.key);
      }
    };
    walk(key);
    return out;
  }

  artifactRecord(key: string): FinishedOutputRecord | undefined {
    try {
      return JSON.parse(readFileSync(path.join(this.dir, 'artifacts', `${key}.json`), 'utf8')) as FinishedOutputRecord;
    } catch {
      return undefined;
    }
  }

  recordArtifacts(key: string, outputDirectory: string, files: string[]): void {
    this.ensureDirs();
    const record: FinishedOutputRecord = {
      key,
      outputDirectory,
      created: new Date().toISOString(),
      files: files.map((f) => {
        const st = statSync(f);
        return { path: f, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
      }),
    };
    const file = path.join(this.dir, 'artifacts', `${key}.json`);
    writeFileSync(`${file}.tmp-${process.pid}`, JSON.stringify(record, null, 2) + '\n');
    renameSync(`${file}.tmp-${process.pid}`, file);
  }

  /** True when every recorded file is still exactly as it was written. */
  static untouched(record: FinishedOutputRecord): boolean {
    return (
      record.files.length > 0 &&
      record.files.every((f) => {
        try {
          const st = statSync(f.path);
          return st.size === f.size && st.mtimeMs === f.mtimeMs && st.ino === f.ino;
        } catch {
          return false;
        }
      })
    );
  }
}
