/** shell: commands or scripts run in the guest over the communicator. */
import { z } from 'zod';
import path from 'node:path';
import { baseName, defineKind } from './kind.js';
import { because, envMap, kindObject } from './common.js';

export const shellSchema = kindObject('shell', {
  inline: z.array(z.string()).optional(),
  script: z.string().optional(),
  scripts: z.array(z.string()).optional(),
  env: envMap,
  /** The interpreter line for inline commands [/bin/sh -e]: "/bin/bash -e" for bash-only commands. */
  inline_shebang: z.string().optional(),
  /** How the uploaded script is run; {{path}} and {{vars}} are replaced. */
  execute_command: z.string().default('chmod +x {{path}}; {{vars}} {{path}}'),
  remote_folder: z.string().default('/tmp'),
  expect_disconnect: z.boolean().default(false),
  valid_exit_codes: z.array(z.number().int()).default([0]),
}).refine(
  (p) => [p.inline, p.script, p.scripts].filter((x) => x !== undefined).length === 1,
  because(
    'a shell provisioner needs exactly one of "inline", "script" or "scripts"',
    'keep one of them; to run both, use two shell provisioners',
  ),
);

export type ShellProvisioner = z.output<typeof shellSchema>;

const scriptsOf = (p: ShellProvisioner) => (p.script ? [p.script] : (p.scripts ?? []));

export const shell = defineKind(shellSchema, {
  summary: 'runs commands or scripts in the guest',
  describe: (p) =>
    p.inline
      ? `shell (${p.inline.length} inline line${p.inline.length === 1 ? '' : 's'})`
      : `shell (${scriptsOf(p).map(baseName).join(', ')})`,
  resolvePaths(p, paths) {
    if (p.script) p.script = paths.existing(p.script, ['script'], 'file');
    if (p.scripts) p.scripts = p.scripts.map((sc, k) => paths.existing(sc, ['scripts', k], 'file'));
  },
  // A script goes to remote_folder under a random name, runs, and is removed: recorded by its own name there.
  hostInputs: (p) =>
    scriptsOf(p).map((host) => ({
      path: host,
      digest: 'path',
      role: 'script',
      follow: true,
      guest: () => path.posix.join(p.remote_folder, path.basename(host)),
    })),
  needs: 'communicator',
  expectsDisconnect: (p) => p.expect_disconnect,
  fromPacker(m) {
    const { r } = m;
    m.common();
    r.inline = m.strs('inline');
    r.script = m.str('script');
    r.scripts = m.strs('scripts')?.map(m.abs);
    if (r.script) r.script = m.abs(r.script as string);
    r.inline_shebang = m.shebang();
    r.env = m.env();
    r.execute_command = m.str('execute_command', true);
    r.remote_folder = m.str('remote_folder');
    if (m.take('remote_path'))
      m.problem('remote_path', 'kiln names the uploaded script itself', 'set remote_folder instead');
    const ed = m.take('expect_disconnect');
    if (ed) r.expect_disconnect = ed.value === true;
    const ve = m.take('valid_exit_codes');
    if (ve && Array.isArray(ve.value)) r.valid_exit_codes = ve.value.map(Number);
  },
});
