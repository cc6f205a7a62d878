/**
 * Saving a paused VM's state (RAM and devices, not disks) to a file, and loading it into a new QEMU
 * started with `-incoming defer`: QEMU 7.2 has no `file:` migration URI (8.2 added it), so the stream
 * goes through `exec:` (cat). What makes a state loadable is the destination's QEMU and its command
 * line's shape (machine, CPU, memory, devices, in order); paths in the work directory and forwarded
 * ports vary from build to build and are normalised out, so a restored VM forwards SSH on a new port.
 */
import { shellQuote as shellQuoteOne } from '../communicator/remote-command.js';
import type { QmpClient } from './qmp.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** QEMU's own version and package string (`query-version`), part of a state's load key. */
export async function qemuVersionOf(qmp: QmpClient): Promise<string> {
  const v = await qmp.execute<{ qemu: { major: number; minor: number; micro: number }; package: string }>(
    'query-version',
  );
  return `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}${v.package ? ` (${v.package.trim()})` : ''}`;
}

/**
 * The command line as far as loading a state cares: everything but the values that change each
 * build (the work directory, the SSH forward's and guest forwards' host ports), -incoming and
 * -mem-prealloc (source.memory_prealloc: auto decides by the host's free memory at each start).
 */
export function vmStateShape(argv: readonly string[], workDir: string): string[] {
  const shape: string[] = [];
  // QemuProcess.argv starts with the binary; the binary is known by its version instead.
  for (let i = argv[0]?.startsWith('-') ? 0 : 1; i < argv.length; i++) {
    if (argv[i] === '-incoming') {
      i++;
      continue;
    }
    // Whether RAM was allocated up front is the host's business: a state loads either way.
    if (argv[i] === '-mem-prealloc') continue;
    shape.push(
      argv[i]!.split(workDir)
        .join('$WORK')
        .replace(/hostfwd=tcp:127\.0\.0\.1:\d+-/g, 'hostfwd=tcp:127.0.0.1:$PORT-')
        .replace(/TCP:127\.0\.0\.1:\d+/g, 'TCP:127.0.0.1:$PORT'),
    );
  }
  return shape;
}

/**
 * Why a state saved from `saved` cannot be loaded into `now`, in a few words, or undefined when it can.
 * The first differing switch is named (memory size, CPU model...), as that is what the user changed.
 */
export function loadMismatch(
  saved: { qemuVersion: string; shape: string[] },
  now: { qemuVersion: string; shape: string[] },
): string | undefined {
  if (saved.qemuVersion !== now.qemuVersion)
    return `it was saved by QEMU ${saved.qemuVersion}, this is QEMU ${now.qemuVersion}`;
  const n = Math.max(saved.shape.length, now.shape.length);
  for (let i = 0; i < n; i++) {
    if (saved.shape[i] === now.shape[i]) continue;
    const flag = (s: string[]) => {
      if (s[i] === undefined) return '(nothing more)';
      return s[i]!.startsWith('-')
        ? `${s[i]} ${s[i + 1] ?? ''}`.trim()
        : s[i - 1]?.startsWith('-')
          ? `${s[i - 1]} ${s[i]}`
          : s[i]!;
    };
    return `the VM differs: saved with ${flag(saved.shape)}, this build has ${flag(now.shape)}`;
  }
  return undefined;
}

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  'total-time'?: number;
  ram?: { transferred?: number };
}

/**
 * Asks QEMU `command` every `everyMs` until `done` accepts its answer (which it returns), or throws
 * `tooLong(answer)` past `timeoutMs`. Polled rather than awaited as events: QEMU sends the MIGRATION
 * event only with the `events` migration capability turned on, and a query every few ms costs nothing
 * beside a save of a second or so.
 */
async function pollQmp<T>(
  qmp: QmpClient,
  command: string,
  done: (answer: T) => boolean,
  tooLong: (answer: T) => string,
  opts: { timeoutMs: number; everyMs: number; signal?: AbortSignal },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    const answer = await qmp.execute<T>(command);
    if (done(answer)) return answer;
    if (Date.now() > deadline) throw new Error(tooLong(answer));
    await sleep(opts.everyMs);
  }
}

/** Polls query-migrate until the migration completed or failed. */
function migrationDone(qmp: QmpClient, what: string, signal?: AbortSignal, timeoutMs = 10 * 60_000) {
  return pollQmp<MigrateInfo>(
    qmp,
    'query-migrate',
    (info) => {
      if (info.status === 'failed' || info.status === 'cancelled')
        throw new Error(`${what} ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
      return info.status === 'completed';
    },
    (info) => `${what} did not finish in ${timeoutMs / 1000} s (status ${info.status ?? 'none'})`,
    { timeoutMs, everyMs: 20, signal },
  );
}

/**
 * Waits for QEMU to leave the runstate a finished migration passes through. QEMU 7.2 reports
 * "completed" from its migration thread and only then, in a bottom half, moves the source from
 * finish-migrate to postmigrate (where `cont` is refused until then: "Migration is not finalized
 * yet") and the destination from inmigrate to paused (where `cont` would only arm autostart).
 */
async function runstateLeft(
  qmp: QmpClient,
  transient: string,
  what: string,
  signal?: AbortSignal,
  timeoutMs = 30_000,
): Promise<void> {
  await pollQmp<{ status?: string }>(
    qmp,
    'query-status',
    ({ status }) => status !== transient,
    () => `${what}: QEMU stayed in runstate ${transient} for ${timeoutMs / 1000} s after the migration completed`,
    { timeoutMs, everyMs: 10, signal },
  );
}

/**
 * Writes the state of a VM that is stopped (QMP `stop`) to `file`. The VM stays stopped (runstate
 * postmigrate) until `cont`; its disks are not in the file. Returns the bytes QEMU wrote.
 */
export async function saveVmState(qmp: QmpClient, file: string, signal?: AbortSignal): Promise<{ bytes: number }> {
  // The default limit (128 MiB/s) is for live migration over a network; a paused VM to a file has no reason to wait.
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 ** 3 });
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuoteOne(file)}` });
  try {
    const info = await migrationDone(qmp, 'saving the VM state', signal);
    await runstateLeft(qmp, 'finish-migrate', 'saving the VM state', signal);
    return { bytes: info.ram?.transferred ?? 0 };
  } catch (e) {
    // Interrupted or failed: the VM must not stay mid-migration (its cat may still be writing the file).
    await qmp.execute('migrate_cancel').catch(() => undefined);
    // A failed migration passes through finish-migrate too; the caller's `cont` follows.
    await runstateLeft(qmp, 'finish-migrate', 'saving the VM state', undefined, 5_000).catch(() => undefined);
    throw e;
  }
}

/** Loads a state file into a QEMU started with `-incoming defer`; the VM is left paused (it was saved paused). */
export async function loadVmState(qmp: QmpClient, file: string, signal?: AbortSignal): Promise<void> {
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuoteOne(file)}` });
  await migrationDone(qmp, 'loading the VM state', signal);
  await runstateLeft(qmp, 'inmigrate', 'loading the VM state', signal);
}

/** The VM generation ID the guest sees now (QEMU's vmgenid device), to show that a restored VM got a new one. */
export async function vmGenerationId(qmp: QmpClient): Promise<string | undefined> {
  try {
    return (await qmp.execute<{ guid: string }>('query-vm-generation-id')).guid;
  } catch {
    return undefined;
  }
}
