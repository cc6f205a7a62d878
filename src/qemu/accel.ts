/**
 * Which accelerator can really run a guest here. Opening /dev/kvm proves nothing (on a paravirtual
 * host it opens, SeaBIOS runs, and a 64-bit kernel then hangs), so the probe boots a 512-byte guest
 * that reaches long mode, checks a computation and measures its own speed against the host clock:
 * on this project's CI hosts KVM "works" but runs guest code ~1000x slower than TCG, which looks like a
 * silent hang to a real guest. The answer is cached per boot of the host.
 */
import { lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import type { Accelerator } from './argv.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import { acceleratorFits, hostArch, type GuestArch } from './arch.js';
import {
  probeBootSector,
  probeExitCode,
  probeImageSize,
  probeMinSpeed,
  probeSpeedMarker,
  probeSuccessMarker,
} from './accel-probe-image.js';
import { KilnError } from '../util/errors.js';

export interface ProbeResult {
  accelerator: Accelerator;
  ok: boolean;
  reason?: string;
  ms: number;
}

/** Changes whenever the probe guest does, so a cached answer from an older probe is not reused. */
const probeId = createHash('sha256').update(probeBootSector).digest('hex').slice(0, 12);

function hostBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/**
 * Where the probe's answers are kept by default: they hold for the whole host until it reboots,
 * whichever cache directory a build uses, so they live in the user's runtime directory (`runtimeDir`,
 * XDG_RUNTIME_DIR), else in the temporary directory. Not named "kiln-*": that is the pattern of build
 * work directories in the temporary directory.
 */
export function defaultAcceleratorMemoDir(runtimeDir: string | undefined): string {
  return runtimeDir ? path.join(runtimeDir, 'kiln') : path.join(os.tmpdir(), `kiln.${os.userInfo().uid}`);
}

/** What choosing an accelerator needs besides the template's wish. */
export interface AcceleratorSettings {
  qemuBinary: string;
  /** Where the probe's answers are remembered (defaultAcceleratorMemoDir). */
  memoDir: string;
  /** Stands in for the template's `auto` (the CLI's KILN_ACCELERATOR); '' or undefined: none. */
  forced?: string;
  /** The setting `forced` came from, for messages ("KILN_ACCELERATOR"). */
  forcedSetting: string;
  /** The guest's architecture (default x86_64): a hardware accelerator runs only the host's own. */
  guestArch?: GuestArch;
  /** The host's, for tests (default: this machine's). */
  hostArch?: GuestArch | 'other';
}

/**
 * Creates the memo directory (0700) and checks that it is ours: in a shared temporary directory
 * someone else could have made it first, and a planted answer would choose the accelerator.
 */
function ownMemoDir(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === os.userInfo().uid && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** Boots the probe guest under `accel`; never throws (an aborted probe is a failed one). */
export async function probeAccelerator(
  qemuBinary: string,
  accel: Accelerator,
  cacheDir: string,
  timeoutMs = 12_000,
  signal?: AbortSignal,
): Promise<ProbeResult> {
  const started = performance.now();
  if (accel === 'tcg') return { accelerator: accel, ok: true, ms: 0 };
  if (accel === 'kvm' && !existsSync('/dev/kvm'))
    return { accelerator: accel, ok: false, reason: '/dev/kvm does not exist', ms: 0 };
  mkdirSync(cacheDir, { recursive: true });
  const image = path.join(cacheDir, `accel-probe-${probeId}.img`);
  if (!existsSync(image)) {
    const buf = Buffer.alloc(probeImageSize);
    probeBootSector.copy(buf, 0);
    writeFileSync(`${image}.${process.pid}`, buf);
    renameSync(`${image}.${process.pid}`, image);
  }
  const r = await execa(
    ...diesWithKiln(qemuBinary, [
      '-accel',
      accel,
      '-machine',
      'pc',
      '-nodefaults',
      '-display',
      'none',
      '-m',
      '32',
      '-no-reboot',
      '-drive',
      `file=${image},format=raw,if=ide,snapshot=on`,
      '-serial',
      'stdio',
      '-device',
      'isa-debug-exit,iobase=0xf4,iosize=0x04',
    ]),
    { reject: false, timeout: timeoutMs, all: true, stdin: 'ignore', cancelSignal: signal },
  );
  const ms = performance.now() - started;
  const out = String(r.all ?? '');
  const speed = Number(new RegExp(`${probeSpeedMarker} (\\d+)`).exec(out)?.[1] ?? NaN);
  if (r.exitCode === probeExitCode && out.includes(probeSuccessMarker)) {
    if (speed >= probeMinSpeed) return { accelerator: accel, ok: true, ms };
    return {
      accelerator: accel,
      ok: false,
      ms,
      reason: `guest code runs too slowly under ${accel} (${speed} loop iterations/ms; software emulation does ~500000)`,
    };
  }
  const firstError = out
    .split('\n')
    .reverse()
    .find((l) => l.trim() && !/warning:/i.test(l));
  const reason = r.isCanceled
    ? 'the probe was interrupted'
    : r.timedOut
      ? `a test guest did not reach 64-bit mode within ${timeoutMs / 1000} s`
      : firstError?.trim() || `QEMU exited with ${r.exitCode ?? r.signal}`;
  return { accelerator: accel, ok: false, reason, ms };
}

const accelerators: readonly Accelerator[] = ['kvm', 'tcg', 'hvf', 'whpx'];

const hostDefault: Accelerator[] =
  process.platform === 'darwin' ? ['hvf'] : process.platform === 'win32' ? ['whpx'] : ['kvm'];

/**
 * Resolves `auto` (or an explicit choice) to the accelerator to use. An explicit accelerator that does
 * not work is an error; `auto` falls back to TCG with one line saying why.
 */
export async function chooseAccelerator(
  wanted: Accelerator | 'auto',
  cacheDir: string,
  warn: (msg: string) => void,
  settings: AcceleratorSettings,
  signal?: AbortSignal,
): Promise<Accelerator> {
  // A forced accelerator stands in for the template's choice when that is auto, and is checked like one:
  // an unchecked kvm that does not work looks like a guest that never boots.
  const { qemuBinary, forcedSetting } = settings;
  const forced = wanted === 'auto' ? settings.forced || undefined : undefined;
  if (forced && !(accelerators as readonly string[]).includes(forced)) {
    throw new KilnError(`${forcedSetting}=${forced} is not an accelerator`, {
      fix: `set it to one of ${accelerators.join(', ')}, or unset it`,
    });
  }
  if (forced) wanted = forced as Accelerator;
  if (wanted === 'tcg') return 'tcg';
  // Another architecture than the host's is emulated, whatever the host has: KVM/HVF are not even tried.
  const guest = settings.guestArch ?? 'x86_64';
  const host = settings.hostArch ?? hostArch() ?? 'other';
  if (!acceleratorFits(wanted === 'auto' ? 'kvm' : wanted, guest, host === 'other' ? undefined : host)) {
    if (wanted === 'auto') return 'tcg';
    if (forced) {
      warn(`${forcedSetting}=${forced} cannot run this ${guest} guest on a ${host} host; using TCG software emulation`);
      return 'tcg';
    }
    throw new KilnError(
      `accelerator "${wanted}" cannot run an ${guest} guest on this ${host} host: a hardware accelerator runs only the host's own architecture`,
      { fix: `set accelerator: auto or tcg (software emulation) in the template, or build on an ${guest} host` },
    );
  }
  // The probe guest is x86 code: an arm64 guest on an arm64 host is trusted to the accelerator the host offers (untested here).
  if (guest !== 'x86_64') return nativeUnprobed(wanted, guest, warn);
  const memoDir = settings.memoDir;
  const memo = ownMemoDir(memoDir) ? path.join(memoDir, 'accelerator.json') : undefined;
  let table: Record<string, ProbeResult> = {};
  try {
    if (memo) table = JSON.parse(readFileSync(memo, 'utf8')) as Record<string, ProbeResult>;
  } catch {
    /* first run */
  }
  const candidates = wanted === 'auto' ? hostDefault : [wanted];
  for (const accel of candidates) {
    const key = `${hostBootId()}:${probeId}:${qemuBinary}:${accel}`;
    let result = table[key];
    if (!result) {
      result = await probeAccelerator(qemuBinary, accel, cacheDir, undefined, signal);
      // An interrupted probe says nothing about the host: neither remembered nor reported.
      signal?.throwIfAborted();
      table[key] = result;
      try {
        if (memo) {
          writeFileSync(`${memo}.${process.pid}`, JSON.stringify(table));
          renameSync(`${memo}.${process.pid}`, memo);
        }
      } catch {
        /* a cache we cannot write only costs a probe next time */
      }
    }
    if (result.ok) return accel;
    if (wanted !== 'auto') {
      const fix = forced
        ? `unset ${forcedSetting}, or set it to tcg`
        : 'set accelerator: auto (falls back to tcg) or accelerator: tcg in the template';
      throw new KilnError(
        `accelerator "${accel}"${forced ? ` (from ${forcedSetting})` : ''} does not work on this host: ${result.reason}`,
        { fix },
      );
    }
    warn(`${accel} is not usable (${result.reason}); falling back to TCG software emulation, which is much slower`);
  }
  return 'tcg';
}

/**
 * A guest of the host's own non-x86 architecture (arm64 on an arm64 host): no probe guest is written for
 * it, so KVM is used where /dev/kvm exists and HVF on macOS, as asked or as `auto` finds them.
 */
function nativeUnprobed(wanted: Accelerator | 'auto', guest: GuestArch, warn: (msg: string) => void): Accelerator {
  if (wanted === 'auto') {
    if (process.platform === 'darwin') return 'hvf';
    if (process.platform === 'linux' && existsSync('/dev/kvm')) return 'kvm';
    warn(
      `no hardware accelerator for this ${guest} guest (/dev/kvm does not exist); falling back to TCG software emulation, which is much slower`,
    );
    return 'tcg';
  }
  return wanted;
}
