/**
 * Shell text kiln sends to a guest: quoting, and running a command so that it can be stopped.
 *
 * Closing an SSH channel does not end the command behind it, and SSH "signal" requests are no remedy
 * (dropbear ignores them). So every command runs in a process group of its own, whose id it reports
 * first on stderr; to stop it, kiln kills that group through a second command.
 */

/** `s` as one word for a POSIX shell, whatever it contains. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * `s` as one word for a POSIX shell, quoted only when it needs to be: a plain path stays as it is, so a
 * Packer-style execute_command that wraps {{path}} in quotes of its own still works, and logs read
 * cleanly.
 */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : shellQuote(s);
}

/** A name a POSIX shell accepts as a variable (an environment key in `KEY=value`). */
export const shellVariableName = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Starts the first stderr line of a command run through `inOwnProcessGroup`: the group's id follows. */
export const processGroupMarker = 'kiln-process-group ';

/**
 * `command`, run as the leader of a process group of its own, which it reports first on stderr.
 * OpenSSH starts a command as a session leader already; dropbear starts it inside the group of its own
 * connection process, which must not be killed: there it goes through setsid, which does not fork for a
 * process that leads no group, so the exit status is still the command's. Without setsid the command
 * runs in the group it was given and only its own process can be stopped.
 * The command runs in the user's login shell, as SSH (and Packer) run a command: a bash-ism in a
 * shutdown_command keeps working, and a bare `sh` from PATH could be busybox's, whose ash runs its own
 * applet for `poweroff` instead of the image's /sbin/poweroff. Where it already leads its group, the
 * shell SSH started (the login shell) evals it, with the wrapper's variables and positional parameters
 * cleared first: it was an `exec "$SHELL" -c` of a second shell, whose start cost 0.06 s per command in
 * the Debian guest under TCG (8 alternating runs of `true`: medians 0.168 s against 0.104 s). Under
 * setsid it is that exec, from /bin/sh. The wrapper itself is POSIX shell text.
 */
export function inOwnProcessGroup(command: string): string {
  const quoted = shellQuote(command);
  const report = `echo ${processGroupMarker}$$ >&2`;
  const reportAndRun = `${report}; exec "\${SHELL:-/bin/sh}" -c ${quoted}`;
  // The group is the third field after the ") " that ends the process's name in /proc/$$/stat, read
  // with builtins: each process a command starts costs 50-100 ms in a guest under TCG, and this runs
  // before every command (it was a $(cut) subshell and a /bin/sh in between: 0.06 s more per command).
  // Where it cannot be read the command goes through setsid, as on dropbear.
  return (
    'g=; if read -r s < /proc/$$/stat; then s=${s##*) }; set -- $s; g=$3; fi 2>/dev/null; ' +
    `if [ "$g" != "$$" ] && command -v setsid >/dev/null 2>&1; then exec setsid /bin/sh -c ${shellQuote(reportAndRun)}; fi; ` +
    `${report}; set --; unset g s; eval ${quoted}`
  );
}

/** How long a stopped command has between SIGTERM and SIGKILL, in tenths of a second. */
const termGraceTenths = 30;

/**
 * Ends the process group `group` (or, if it is no group, the process): SIGTERM, then SIGKILL once the
 * grace is over. A command that became root through sudo is out of the login user's reach, so the
 * signals are sent as root where sudo allows it without a password.
 */
export function killProcessGroupCommand(group: number): string {
  if (!Number.isSafeInteger(group) || group <= 1)
    throw new Error(`internal: ${group} is not a process group kiln started`);
  return [
    'if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then as="sudo -n"; else as=; fi',
    `$as kill -TERM -${group} 2>/dev/null || $as kill -TERM ${group} 2>/dev/null`,
    `n=0; while [ $n -lt ${termGraceTenths} ] && $as kill -0 -${group} 2>/dev/null; do sleep 0.1; n=$((n + 1)); done`,
    `$as kill -KILL -${group} 2>/dev/null || $as kill -KILL ${group} 2>/dev/null; exit 0`,
  ].join('\n');
}

export interface ExecOptions {
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
  stdin?: string;
  /** Stops the command like `signal` after this long; the call fails with "timed out". */
  timeoutMs?: number;
  /** Stops the command (killed in the guest, see killProcessGroupCommand); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Takes the process group report (inOwnProcessGroup) off the front of a command's stderr. */
export class ProcessGroupReport {
  /** The group's id, once reported. */
  group?: number;
  /** Resolves when the group is known. */
  readonly known: Promise<void>;
  private resolveKnown!: () => void;
  /** Stderr held back until it is clear whether it starts with the report; undefined once it is. */
  private head: string | undefined = '';

  constructor() {
    this.known = new Promise((resolve) => {
      this.resolveKnown = resolve;
    });
  }

  /** Returns what of `chunk` is the command's own stderr. */
  take(chunk: string): string {
    if (this.head === undefined) return chunk;
    const head = this.head + chunk;
    const line = head.indexOf('\n');
    // Wait for the rest of a line that may yet turn out to be the report.
    if (
      line < 0 &&
      (processGroupMarker.startsWith(head) ||
        (head.startsWith(processGroupMarker) && /^\d*$/.test(head.slice(processGroupMarker.length))))
    ) {
      this.head = head;
      return '';
    }
    this.head = undefined;
    const report = new RegExp(`^${processGroupMarker}(\\d+)\\n`).exec(head);
    if (!report) return head;
    this.group = Number(report[1]);
    this.resolveKnown();
    return head.slice(report[0].length);
  }

  /** What is still held back when the output ends. */
  rest(): string {
    const held = this.head ?? '';
    this.head = undefined;
    return held;
  }
}
