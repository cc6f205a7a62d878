// The guest's CPU model under TCG, end to end on the tiny fixture: by default an x86-64-v2 model (the
// guest sees SSSE3, SSE4.2 and POPCNT but not max's AVX2 or 5-level paging), named in the log and the
// manifest; cpu_model: max gives the guest max; and cpu_model is not part of the layer key (a build
// differing only in it reuses every cached layer, no boot).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, type KilnRun } from '../helpers/kiln.js';
import { TCG_DEFAULT_CPU_MODEL } from '../../src/qemu/argv.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-cpu-'));
const cache = path.join(dir, 'cache');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function template(name: string, cpuModel?: string): { file: string; out: string } {
  const out = path.join(dir, 'out', name);
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: cpu
    output_directory: ${out}
${tinySourceYaml('    ')}
      accelerator: tcg
${cpuModel ? `      cpu_model: ${cpuModel}\n` : ''}    provisioners:
      - type: shell
        inline: ['echo "flags: $(grep -m1 ^flags /proc/cpuinfo | grep -o -w -E "ssse3|sse4_2|popcnt|avx2|la57" | sort -u | tr "\\\\n" " ")"']
`,
  );
  return { file, out };
}

const flagsOf = (r: KilnRun) =>
  r.events
    .filter((e) => e.type === 'output')
    .map((e) => String(e.line))
    .find((l) => l.startsWith('flags: '));
const manifestOf = (out: string) =>
  JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as { cpu_model?: string };

describe('CPU model under TCG (tiny fixture)', () => {
  it('defaults to x86-64-v2 on qemu64, in the log and the manifest; cpu_model: max reuses the layers and, rebuilt, gives the guest max', async () => {
    const base = template('default');
    const a = await kiln(['build', base.file, '--events=json'], { KILN_CACHE_DIR: cache });
    expect(a.exitCode, a.stderr).toBe(0);
    expect(flagsOf(a)).toMatch(/popcnt/);
    expect(flagsOf(a)).toMatch(/sse4_2/);
    expect(flagsOf(a)).toMatch(/ssse3/);
    expect(flagsOf(a)).not.toMatch(/avx2|la57/);
    expect(
      a.events.some((e) => e.type === 'log' && String(e.message).includes(`CPU model ${TCG_DEFAULT_CPU_MODEL},`)),
    ).toBe(true);
    expect(manifestOf(base.out).cpu_model).toBe(TCG_DEFAULT_CPU_MODEL);

    // Only the CPU model differs: the same layer keys, so the cached provisioner and final disk serve it without a boot.
    const max = template('max', 'max');
    const b = await kiln(['build', max.file, '--events=json'], { KILN_CACHE_DIR: cache });
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.events.some((e) => e.type === 'step-start' && e.step === 'launch QEMU')).toBe(false);

    const c = await kiln(['build', max.file, '--events=json', '--force', '--no-cache']);
    expect(c.exitCode, c.stderr).toBe(0);
    expect(flagsOf(c)).toMatch(/avx2/);
    expect(manifestOf(max.out).cpu_model).toBe('max');
  }, 600_000);
});
