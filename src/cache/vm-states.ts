/**
 * Saved VM states beside their layers in <cache>/layers: `<key>.vmstate` is the running VM (RAM and
 * devices) at the moment layer <key> was frozen, `<key>.vmstate.json` what loading it needs (QEMU
 * version and command-line shape, src/qemu/vm-state.ts), its digest, and the SSH keys the guest in it
 * trusts. A state holds the guest's RAM, so its keys and whatever secrets the guest held: both files
 * are 0600 in the 0700 store, published by rename after their layer, removed with it (LayerStore.remove),
 * and never put in a bundle.
 */
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { KeyPair } from '../communicator/keys.js';
import { fileDigest } from './digest.js';

export interface VmStateMeta {
  key: string;
  qemuVersion: string;
  /** The command line, normalised (vmStateShape): what a QEMU that loads this state must be started with. */
  shape: string[];
  sha256: string;
  size: number;
  /** How long the VM was paused to write it (ms). */
  saveMs: number;
  created: string;
  /** The key kiln logged in with (a generated build key) and the host key it gave the guest, if any. */
  buildKey?: KeyPair;
  hostKey?: KeyPair;
  /** The digest of the layer this state was frozen with: the guest's RAM matches those blocks only. */
  layerSha256?: string;
}

/** What `kiln cache ls --json` shows of a layer's state (no keys). */
export type VmStateSummary = Pick<VmStateMeta, 'size' | 'saveMs' | 'created' | 'qemuVersion'>;

export const vmStateFile = (dir: string, key: string) => path.join(dir, `${key}.vmstate`);
const vmStateMetaFile = (dir: string, key: string) => path.join(dir, `${key}.vmstate.json`);

export function readVmStateMeta(dir: string, key: string): VmStateMeta | undefined {
  try {
    return JSON.parse(readFileSync(vmStateMetaFile(dir, key), 'utf8')) as VmStateMeta;
  } catch {
    return undefined;
  }
}

export function vmStateSummary(dir: string, key: string): VmStateSummary | undefined {
  const m = readVmStateMeta(dir, key);
  return m && existsSync(vmStateFile(dir, key))
    ? { size: m.size, saveMs: m.saveMs, created: m.created, qemuVersion: m.qemuVersion }
    : undefined;
}

export function vmStateBytes(dir: string, key: string): number {
  try {
    const st = statSync(vmStateFile(dir, key));
    return Math.min(st.size, st.blocks * 512);
  } catch {
    return 0;
  }
}

export function removeVmState(dir: string, key: string): void {
  rmSync(vmStateMetaFile(dir, key), { force: true });
  rmSync(vmStateFile(dir, key), { force: true });
}

/** A temporary name in the store for QEMU to write a state into (swept as `.tmp-<pid>` if kiln dies). */
export const vmStateTemp = (dir: string, key: string) => `${vmStateFile(dir, key)}.tmp-${process.pid}`;

/**
 * Publishes a state QEMU wrote to `tmp`: digested, then renamed into place, its metadata last (a
 * state without metadata is never used). The layer `key` must be published already.
 */
export async function publishVmState(
  dir: string,
  tmp: string,
  meta: Omit<VmStateMeta, 'sha256' | 'size' | 'created'>,
): Promise<VmStateMeta> {
  try {
    chmodSync(tmp, 0o600);
    const full: VmStateMeta = {
      ...meta,
      sha256: await fileDigest(tmp),
      size: statSync(tmp).size,
      created: new Date().toISOString(),
    };
    renameSync(tmp, vmStateFile(dir, meta.key));
    const metaTmp = `${vmStateMetaFile(dir, meta.key)}.tmp-${process.pid}`;
    writeFileSync(metaTmp, JSON.stringify(full, null, 2) + '\n', { mode: 0o600 });
    renameSync(metaTmp, vmStateMetaFile(dir, meta.key));
    return full;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** The state for layer `key` if its file is whole (its digest matches), else why not. */
export async function verifyVmState(
  dir: string,
  key: string,
): Promise<{ ok: true; meta: VmStateMeta } | { ok: false; problem: string }> {
  const meta = readVmStateMeta(dir, key);
  if (!meta) return { ok: false, problem: 'no metadata' };
  const file = vmStateFile(dir, key);
  if (!existsSync(file)) return { ok: false, problem: 'state file missing' };
  const got = await fileDigest(file);
  if (got !== meta.sha256)
    return {
      ok: false,
      problem: `the state file is damaged (digest ${got.slice(0, 12)}..., recorded ${meta.sha256.slice(0, 12)}...)`,
    };
  return { ok: true, meta };
}
