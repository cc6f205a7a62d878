/**
 * Watches the VM while a provisioner runs, so a guest that powers off or panics fails the build at
 * once, saying so. The SSH connection alone tells too little, too late: a guest that powered off looks
 * like any dropped connection, and a panicked one keeps its TCP connections open until SSH keepalives
 * give up (~30 s).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { ProvisionerContext } from './context.js';
import { ConnectionLostError } from '../communicator/ssh.js';
import { serialTail } from '../util/serial-log.js';
import type { QemuExit } from '../qemu/process.js';

export class VmLostError extends Error {}

/** What Linux prints on the console when it panics. */
const panicMarker = 'Kernel panic - not syncing';
const pollMs = 250;
/** Let the panic's backtrace reach the log before quoting it. */
const panicSettleMs = 1000;
/** How long a dropped connection waits for QEMU to exit before it counts as just a dropped connection. */
const exitGraceMs = 2000;

export interface VmWatch {
  /** `work`, unless the VM is lost first. */
  during<T>(work: Promise<T>): Promise<T>;
  /** The VM's loss if that explains `error` (a connection lost as QEMU exits), else `error`. */
  explain(error: Error): Promise<Error>;
  stop(): void;
}

function exitDescription(exit: QemuExit): string {
  if (exit.code === 0) return 'the guest powered off (QEMU exited with status 0)';
  return `QEMU exited with ${exit.code !== null ? `status ${exit.code}` : `signal ${exit.signal}`}${exit.stderr ? `: ${exit.stderr}` : ''}`;
}

export function watchVm(ctx: ProvisionerContext, label: string, expectDisconnect: boolean): VmWatch {
  const qemu = ctx.state.qemu;
  const serialLog = ctx.state.serialLog;
  const tail = () =>
    `\n--- last lines of the serial console (${serialLog ?? 'none'}) ---\n${serialTail(serialLog, 20)}`;
  let stopped = false;
  let fail!: (e: VmLostError) => void;
  const lost = new Promise<never>((_, reject) => {
    fail = (e) => {
      if (!stopped) reject(e);
    };
  });
  lost.catch(() => undefined); // observed through during()/explain(); never an unhandled rejection

  void qemu?.exited.then((exit) =>
    fail(
      new VmLostError(
        `${label}: the VM exited while the provisioner ran: ${exitDescription(exit)}` +
          (expectDisconnect
            ? ' (expect_disconnect allows a reboot, not a power-off: kiln shuts the guest down itself after provisioning)'
            : '') +
          tail(),
      ),
    ),
  );

  // The serial log only grows; read what is new since the last poll (with an overlap, so a marker
  // split across two reads is still found).
  let offset = 0;
  let carry = '';
  let fd: number | undefined;
  try {
    if (serialLog) fd = openSync(serialLog, 'r');
  } catch {
    /* no serial log: only QEMU's exit is watched */
  }
  const readNew = (): string => {
    if (fd === undefined) return '';
    const buf = Buffer.alloc(64 * 1024);
    let text = '';
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, offset)) > 0;) {
        offset += n;
        text += buf.subarray(0, n).toString('latin1');
      }
    } catch {
      /* a log we cannot read only means no panic detection */
    }
    return text;
  };
  // What the guest printed before this provisioner is not this provisioner's panic.
  try {
    if (fd !== undefined) offset = fstatSync(fd).size;
  } catch {
    /* read from the start */
  }
  const timer = setInterval(() => {
    const text = carry + readNew();
    const at = text.indexOf(panicMarker);
    if (at < 0) {
      carry = text.slice(-200);
      return;
    }
    clearInterval(timer);
    // "Kernel panic - not syncing: <why>", once the rest of its line has arrived.
    setTimeout(() => {
      const why = (text.slice(at) + readNew()).split(/\r?\n/)[0]!.trim();
      fail(new VmLostError(`${label}: the guest kernel panicked while the provisioner ran (${why})${tail()}`));
    }, panicSettleMs).unref();
  }, pollMs);
  timer.unref();

  return {
    during: (work) => Promise.race([work, lost]),
    async explain(error) {
      if (error instanceof VmLostError || !(error instanceof ConnectionLostError) || !qemu) return error;
      let timeout: NodeJS.Timeout | undefined;
      const result = await Promise.race([
        lost.catch((e: VmLostError) => e),
        new Promise<Error>((resolve) => {
          timeout = setTimeout(() => resolve(error), exitGraceMs);
        }),
      ]);
      clearTimeout(timeout);
      return result;
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
