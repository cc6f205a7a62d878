import { describe, expect, it } from 'vitest';
import { artifactName, planFor } from '../../../src/template/output-formats.js';
import { parsePackageList } from '../../../src/build/steps/sbom.js';
import { withLimit } from '../../../src/build/steps/convert.js';

const out = (format: string, extra: Record<string, unknown> = {}) => ({ format, compress: false, ...extra }) as never;

describe('output formats', () => {
  it('names artifacts by build and format', () => {
    expect(
      ['qcow2', 'raw', 'vmdk', 'vhdx', 'vhd', 'ova', 'vagrant', 'gce'].map((f) => artifactName('web', out(f))),
    ).toEqual(['web.qcow2', 'web.raw', 'web.vmdk', 'web.vhdx', 'web.vhd', 'web.ova', 'web.box', 'web.tar.gz']);
    expect(artifactName('web', out('qcow2', { name: 'x.img' }))).toBe('x.img');
  });
  it('plans qemu-img options per format', () => {
    expect(planFor(out('qcow2', { compress: true }))).toMatchObject({
      qemuFormat: 'qcow2',
      options: ['compat=1.1', 'compression_type=zstd'],
      compress: true,
    });
    expect(planFor(out('vmdk', { subformat: 'streamOptimized', adapter_type: 'lsilogic' }))).toMatchObject({
      options: ['subformat=streamOptimized', 'adapter_type=lsilogic'],
    });
    expect(planFor(out('vmdk', { compress: true }))).toMatchObject({ options: ['subformat=streamOptimized'] });
    expect(planFor(out('vhd'))).toMatchObject({ qemuFormat: 'vpc', options: ['subformat=fixed', 'force_size=on'] });
    expect(planFor(out('gce'))).toEqual({ kind: 'package', packageFormat: 'gce', extension: 'tar.gz' });
  });
});

describe('package list (SBOM)', () => {
  it('parses dpkg-query output, sorted', () => {
    expect(parsePackageList('#dpkg\nzlib1g\t1:1.2.13\tamd64\nbash\t5.2.15-2\tamd64\n')).toEqual({
      manager: 'dpkg',
      packages: [
        { name: 'bash', version: '5.2.15-2', arch: 'amd64' },
        { name: 'zlib1g', version: '1:1.2.13', arch: 'amd64' },
      ],
    });
  });
  it('reports a guest without a package manager', () =>
    expect(parsePackageList('#none\n')).toEqual({ manager: 'none', packages: [] }));
});

describe('withLimit', () => {
  it('never runs more than the limit at once and keeps result order', async () => {
    let running = 0;
    let peak = 0;
    const task = (v: number, ms: number) => async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, ms));
      running--;
      return v;
    };
    expect(await withLimit(2, [task(1, 30), task(2, 10), task(3, 20), task(4, 5)])).toEqual([1, 2, 3, 4]);
    expect(peak).toBe(2);
  });
  it('rejects with the first failure', async () => {
    await expect(
      withLimit(2, [
        async () => 1,
        async () => {
          throw new Error('boom');
        },
      ]),
    ).rejects.toThrow('boom');
  });
});
