// Packer users' command lines: single-dash long flags, flags before the template, comma-separated -only.
import { describe, expect, it } from 'vitest';
import { main, normalizePackerFlags } from '../../../../src/cli/main.js';

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(args), out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

describe('Packer-style command lines', () => {
  it("turns Packer's single-dash long flags into kiln's, and leaves the rest alone", () => {
    expect(
      normalizePackerFlags([
        'build',
        '-var',
        'x=y',
        '-var-file=v.pkrvars.hcl',
        '-force',
        '-only=qemu.a',
        '-on-error=abort',
        't.pkr.hcl',
      ]),
    ).toEqual([
      'build',
      '--var',
      'x=y',
      '--var-file=v.pkrvars.hcl',
      '--force',
      '--only=qemu.a',
      '--on-error=abort',
      't.pkr.hcl',
    ]);
    expect(normalizePackerFlags(['build', '-h', '-v', '-x', 't.yaml', '--', '-var'])).toEqual([
      'build',
      '-h',
      '-v',
      '-x',
      't.yaml',
      '--',
      '-var',
    ]);
  });
  it('accepts --var before the template (an array option used to swallow it)', async () => {
    const r = await run(['validate', '--var', 'marker=x', 'examples/tiny.yaml']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain('valid (1 build: tiny)');
  });
  it('accepts -var, -var=, repeated, and -only=a,b with the template last', async () => {
    const r = await run(['inspect', '-var', 'marker=x', '-var=greeting=y', 'examples/tiny.yaml']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('marker = "x"  (--var marker)');
    const b = await run([
      'build',
      '-var',
      'marker=y',
      '-force',
      '-only=tiny,nope',
      '-on-error=abort',
      'examples/tiny.yaml',
    ]);
    expect(b.code).toBe(1);
    expect(b.err).toContain('no build named "nope"');
  });
  it('validate and inspect fail on -only/-except that match no build, as build does (issue 25: validate used to check every build)', async () => {
    const wild = 'test/fixtures/packer/wild/builder-name.json';
    const ok = await run(['validate', '-only=ubuntu-20.04-amd64', wild]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('valid (1 build: ubuntu-20.04-amd64)');
    for (const args of [
      ['validate', '-only=ubuntu---user--version----amd64', wild],
      ['inspect', '-only=nope', wild],
      ['validate', '-except=nope', wild],
      ['validate', '-only=nope', 'examples/tiny.yaml'],
      ['inspect', '--except=nope', 'examples/tiny.yaml'],
    ]) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err, args.join(' ')).toMatch(/no build (is )?(named|matches)/);
      expect(r.out).toBe('');
    }
  });
});
