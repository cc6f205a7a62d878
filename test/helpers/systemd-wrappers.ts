/**
 * Stand-ins for systemctl and systemd-run, for tests that run a guest script on the host: each call is
 * logged as one line (the newlines of an argument, such as a unit's script, logged as "~"), and
 * systemd-run runs the command it was given at once, as the unit would once its ordering allows.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function systemdWrappers(top: string, opts: { systemdRunFails?: boolean } = {}) {
  const bin = path.join(top, 'bin');
  mkdirSync(bin);
  const log = path.join(top, 'calls');
  const wrapper = (name: string, body: string) => {
    writeFileSync(
      path.join(bin, name),
      `#!/bin/sh\nprintf '%s' "${name} $*" | tr '\\n' '~' >> "${log}"; echo >> "${log}"\n${body}\n`,
    );
    chmodSync(path.join(bin, name), 0o755);
  };
  wrapper('systemctl', 'exit 0');
  // Drop the options up to the command, then run it.
  wrapper('systemd-run', opts.systemdRunFails ? 'exit 1' : 'while [ "$1" != sh ]; do shift; done; "$@"');
  return {
    /** The environment that puts the stand-ins first on PATH. */
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    /** The calls so far, one line each. */
    calls: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []),
  };
}
