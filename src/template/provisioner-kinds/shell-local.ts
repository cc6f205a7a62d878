/** shell-local: commands or a script run on the host (the build machine), not in the guest. */
import { z } from 'zod';
import { baseName, defineKind } from './kind.js';
import { because, envMap, kindObject } from './common.js';

/** shell-local's own fields (the shell-local post-processor takes them too): the interpreter line for inline commands [/bin/sh -e], and the folder it runs in [the template's]. */
export const hostCommandFields = { inline_shebang: z.string().optional(), working_directory: z.string().optional() };

export const shellLocalSchema = kindObject('shell-local', {
  inline: z.array(z.string()).optional(),
  script: z.string().optional(),
  env: envMap,
  ...hostCommandFields,
  valid_exit_codes: z.array(z.number().int()).default([0]),
}).refine(
  (p) => (p.inline === undefined) !== (p.script === undefined),
  because(
    'a shell-local provisioner needs exactly one of "inline" or "script"',
    'keep one of them; to run both, use two shell-local provisioners',
  ),
);

export type ShellLocalProvisioner = z.output<typeof shellLocalSchema>;

export const shellLocal = defineKind(shellLocalSchema, {
  summary: 'runs commands or a script on the host',
  describe: (p) => (p.inline ? 'shell-local (inline)' : `shell-local (${baseName(p.script)})`),
  resolvePaths(p, paths) {
    if (p.script) p.script = paths.existing(p.script, ['script'], 'file');
  },
  hostInputs: (p) => (p.script ? [{ path: p.script, digest: 'path', role: 'shell-local script', follow: true }] : []),
  uncacheable: () => 'shell-local runs on the host (set cache: true if it only shapes the guest)',
  needs: 'nothing',
  /** Also the shell-local post-processor's mapping (mapping.ts keeps the fields a post-processor has). */
  fromPacker(m) {
    const { r } = m;
    if (m.kind === 'provisioner') m.common();
    r.inline = m.strs('inline');
    const scripts = m.strs('scripts');
    const script = m.str('script') ?? (scripts?.length === 1 ? scripts[0] : undefined);
    if (scripts && scripts.length > 1)
      m.problem('scripts', "kiln's shell-local runs one script", 'write one shell-local per script');
    if (script) r.script = m.abs(script);
    const cmd = m.str('command');
    if (cmd) r.inline = [...((r.inline as string[] | undefined) ?? []), cmd];
    r.inline_shebang = m.shebang();
    // Packer runs shell-local in the folder it was started in; kiln YAML's default is the template's folder.
    r.working_directory = process.cwd();
    r.env = m.env();
    const ve = m.take('valid_exit_codes');
    if (ve && Array.isArray(ve.value)) r.valid_exit_codes = ve.value.map(Number);
    if (m.take('execute_command'))
      m.problem('execute_command', 'kiln runs shell-local commands with /bin/sh', 'remove execute_command');
  },
});
