/** Runs one provisioner with its common options: only/except, pause_before, timeout, max_retries. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildContext } from '../build/state.js';
import type { Provisioner } from '../template/schema.js';
import { parseDuration } from '../template/units.js';
import { runShell } from './shell.js';
import { runFile } from './file.js';
import { runShellLocal } from './shell-local.js';

export function describeProvisioner(p: Provisioner): string {
  switch (p.type) {
    case 'shell': return p.inline ? `shell (${p.inline.length} inline line${p.inline.length === 1 ? '' : 's'})` : `shell (${(p.script ? [p.script] : p.scripts ?? []).map((s) => s.split('/').pop()).join(', ')})`;
    case 'file': return p.direction === 'download' ? `file (download ${p.source})` : `file (${p.content !== undefined ? 'content' : p.source?.split('/').pop()} -> ${p.destination})`;
    case 'shell-local': return p.inline ? 'shell-local (inline)' : `shell-local (${p.script?.split('/').pop()})`;
    case 'breakpoint': return `breakpoint (${p.note})`;
  }
}

export function appliesTo(p: Provisioner, buildName: string): boolean {
  if (p.only && !p.only.includes(buildName)) return false;
  if (p.except?.includes(buildName)) return false;
  return true;
}

async function runOnce(ctx: BuildContext, p: Provisioner, label: string): Promise<void> {
  switch (p.type) {
    case 'shell': return runShell(ctx, p, label);
    case 'file': return runFile(ctx, p, label);
    case 'shell-local': return runShellLocal(ctx, p, label);
    case 'breakpoint':
      if (p.disable || !ctx.options.prompt) { ctx.log(`${label}: skipped (no terminal or disabled)`, 'debug'); return; }
      await ctx.options.prompt(`breakpoint: ${p.note} — press Enter to continue `);
  }
}

export async function runProvisioner(ctx: BuildContext, p: Provisioner, index: number): Promise<void> {
  const label = `provisioner ${index + 1}`;
  if (p.pause_before) await sleep(parseDuration(p.pause_before), undefined, { signal: ctx.signal });
  for (let attempt = 0; ; attempt++) {
    try {
      const work = runOnce(ctx, p, label);
      if (!p.timeout) { await work; return; }
      const ms = parseDuration(p.timeout);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([work, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${label} timed out after ${p.timeout}`)), ms); })])
        .finally(() => clearTimeout(timer));
      return;
    } catch (e) {
      if (attempt >= p.max_retries || ctx.signal.aborted) throw e;
      ctx.log(`${label} failed (${(e as Error).message}); retry ${attempt + 1} of ${p.max_retries}`, 'warn');
    }
  }
}
