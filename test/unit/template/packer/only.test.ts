// -only/-except as Packer 1.6.6 reads them (checked with `packer build -only=... t.pkr.hcl` on a template of
// two `null` sources and a named build, 2026-11-29): gobwas globs over the full build names, `*` crossing
// dots, so `*.debian` picks both qemu.debian and named.qemu.debian. Two deliberate differences: a name or
// glob that matches no build is an error in kiln (Packer builds nothing and exits 0), and kiln applies the
// glob to a legacy JSON template's builder names too (Packer 1.6.6 matches those literally).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { globMatch, globToRegExp, GlobError } from '../../../../src/util/glob.js';
import { loadTemplate } from '../../../../src/template/load.js';
import { selectBuilds } from '../../../../src/build/build.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-packer-only-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
const src = (name: string, type = 'qemu') => `
source "${type}" "${name}" {
  ${type === 'qemu' ? `iso_url = "${dir}/base.qcow2"\n  iso_checksum = "none"\n  disk_image = true\n  ssh_username = "root"\n  ssh_password = "pw"` : 'region = "x"'}
}
`;
const hcl = path.join(dir, 't.pkr.hcl');
writeFileSync(
  hcl,
  `${src('debian')}${src('alpine')}${src('cloud', 'amazon-ebs')}
build {
  sources = ["source.qemu.debian", "source.qemu.alpine", "source.amazon-ebs.cloud"]
}
build {
  name = "named"
  source "source.qemu.debian" {
    output_directory = "${dir}/named"
  }
}
`,
);

describe('Packer globs (src/util/glob.ts)', () => {
  it('matches as gobwas/glob without separators does', () => {
    expect(globMatch('qemu.*', 'qemu.debian')).toBe(true);
    expect(globMatch('*.debian', 'named.qemu.debian')).toBe(true);
    expect(globMatch('*.debian', 'qemu.alpine')).toBe(false);
    expect(globMatch('qemu.?ebian', 'qemu.debian')).toBe(true);
    expect(globMatch('qemu.[ad]*', 'qemu.alpine')).toBe(true);
    expect(globMatch('qemu.[!a]*', 'qemu.alpine')).toBe(false);
    expect(globMatch('qemu.[!a]*', 'qemu.debian')).toBe(true);
    expect(globMatch('qemu.[a-c]*', 'qemu.alpine')).toBe(true);
    expect(globMatch('qemu.{debian,alpine}', 'qemu.alpine')).toBe(true);
    expect(globMatch('\\*.debian', 'qemu.debian')).toBe(false);
    expect(globMatch('\\*.debian', '*.debian')).toBe(true);
    expect(globMatch('qemu.debian', 'qemuXdebian')).toBe(false);
    expect(globMatch('*', 'anything.at.all')).toBe(true);
  });
  it('refuses a malformed pattern, as Packer does ("Invalid -only pattern null.[")', () => {
    expect(() => globToRegExp('qemu.[')).toThrow(GlobError);
    expect(() => globToRegExp('qemu.{a')).toThrow(/never closed/);
    expect(() => globToRegExp('a\\')).toThrow(/backslash/);
  });
});

describe('-only/-except on a Packer template', () => {
  const names = (only?: string[], except?: string[]) => {
    const t = loadTemplate(hcl, {}, { only });
    return selectBuilds(t, only, except).map((b) => b.name);
  };
  it('selects by glob, over full names', () => {
    expect(names(['qemu.*'])).toEqual(['qemu.debian', 'qemu.alpine']);
    expect(names(['*.debian'])).toEqual(['qemu.debian', 'named.qemu.debian']);
    expect(names(['named.*'])).toEqual(['named.qemu.debian']);
    expect(names(['qemu.debian'])).toEqual(['qemu.debian']);
    expect(names(['qemu.?ebian', 'qemu.alpine'])).toEqual(['qemu.debian', 'qemu.alpine']);
    expect(names(['*qemu*'], ['*.debian'])).toEqual(['qemu.alpine']);
    expect(names(['*qemu*'], ['qemu.[!a]*'])).toEqual(['qemu.alpine', 'named.qemu.debian']);
  });
  it('refuses the other builder unless -only leaves it out', () => {
    expect(() => loadTemplate(hcl, {}, {})).toThrow(
      /amazon-ebs.*not supported[\s\S]*-only=qemu\.debian,qemu\.alpine,named\.qemu\.debian/,
    );
    expect(() => loadTemplate(hcl, {}, { only: ['*.cloud'] })).toThrow(/amazon-ebs/);
    // -except leaves it out too (issue 25: only -only did), and build's selection still accepts the name.
    const t = loadTemplate(hcl, {}, { except: ['amazon-ebs.cloud', 'named.*'] });
    expect(selectBuilds(t, undefined, ['amazon-ebs.cloud', 'named.*']).map((b) => b.name)).toEqual([
      'qemu.debian',
      'qemu.alpine',
    ]);
  });
  it('names a pattern that matches nothing (Packer would build nothing and exit 0)', () => {
    expect(() => names(['qemu.*', 'ubuntu*'])).toThrow(
      /t\.pkr\.hcl: -only: no build matches "ubuntu\*" \(builds: qemu\.debian, qemu\.alpine, named\.qemu\.debian, amazon-ebs\.cloud\)/,
    );
    expect(() => names(['qemu.*'], ['nope'])).toThrow(/no build named "nope"/);
    expect(() => names(['qemu.['])).toThrow(/never closed/);
  });
});
