// The field registry: one row per template field, and what is derived from it (resolved values, the
// layer-key filter, kiln inspect, Packer hints).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { loadTemplate } from '../../../src/template/load.js';
import { sourceKey } from '../../../src/cache/layer-keys.js';
import { inspectTemplate } from '../../../src/cli/inspect.js';
import { type Fields, fieldsWithRole } from '../../../src/template/fields/field.js';
import { sourceFields } from '../../../src/template/fields/source.js';
import { sshCommunicatorFields } from '../../../src/template/fields/communicator.js';
import { buildSpec, packerSourceAliases } from '../../../src/template/schema.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-fields-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'not really an image');
writeFileSync(path.join(dir, 'install.iso'), 'not really an ISO');

let n = 0;
function load(source: string, media = 'base_image: base.qcow2') {
  const file = path.join(dir, `t${n++}.yaml`);
  writeFileSync(
    file,
    `builds:\n  - name: f\n    source:\n      ${media}\n      checksum: none\n${source
      .split('\n')
      .map((l) => `      ${l}`)
      .join('\n')}\n`,
  );
  return loadTemplate(file, { vars: [], varFiles: [], env: {} });
}
const keyOf = (source: string) => sourceKey(load(source).template.builds[0]!, 'a'.repeat(64));

describe('resolved values', () => {
  it('sizes are bytes, durations milliseconds, memory MiB, output_directory absolute', () => {
    const b = load('disk_size: 20G\nmemory: 2G\nboot_wait: 1m30s\ncommunicator: { timeout: 90 }').template.builds[0]!;
    expect(b.source.disk_size).toBe(20 * 2 ** 30);
    expect(b.source.memory).toBe(2048);
    expect(b.source.boot_wait).toBe(90_000);
    expect(b.source.communicator.type === 'ssh' && b.source.communicator.timeout).toBe(90_000);
    // Defaults are resolved too.
    expect(b.source.shutdown_timeout).toBe(5 * 60_000);
    expect(b.source.install_timeout).toBe(3_600_000);
    expect(b.output_directory).toBe(path.join(dir, 'output', 'f'));
    expect(b.source.media).toEqual({ kind: 'image', location: path.join(dir, 'base.qcow2') });
  });

  it('an ISO source is {kind: iso} with its disk size', () => {
    const b = load('disk_size: 4096M', 'iso: install.iso').template.builds[0]!;
    expect(b.source.media).toEqual({ kind: 'iso', location: path.join(dir, 'install.iso'), diskSize: 4 * 2 ** 30 });
  });

  it('buildSpec() gives code without a template file the same types', () => {
    const b = buildSpec({ name: 'x', source: { base_image: '/b.qcow2', checksum: 'none', memory: '1G' } });
    expect([b.source.memory, b.output_directory, b.source.media.kind]).toEqual([1024, 'output/x', 'image']);
  });
});

describe("the layer key, from the fields' cache roles", () => {
  it('disk_size: 20G and 20480M give one layer key; 21G another', async () => {
    const k20g = await keyOf('disk_size: 20G');
    expect(await keyOf('disk_size: 20480M')).toBe(k20g);
    expect(await keyOf(`disk_size: ${20 * 2 ** 30}`)).toBe(k20g);
    expect(await keyOf('disk_size: 21G')).not.toBe(k20g);
  });

  it('a runtime field (memory, cpus, timeouts) leaves it alone; a disk field changes it', async () => {
    const base = await keyOf('memory: 1024');
    expect(await keyOf('memory: 4G')).toBe(base);
    expect(await keyOf('memory: 1024\ncpus: 4\nshutdown_timeout: 20m\ncommunicator: { timeout: 1h }')).toBe(base);
    expect(await keyOf('memory: 1024\nmachine: q35')).not.toBe(base);
    expect(await keyOf('memory: 1024\ncommunicator: { username: other }')).not.toBe(base);
  });

  it('every field has a role, and the runtime ones are the ones the cache used to ignore', () => {
    expect([...fieldsWithRole(sourceFields, 'runtime')].sort()).toEqual([
      'accelerator',
      'boot_key_interval',
      'cpu_model',
      'cpus',
      'headless',
      'install_timeout',
      'memory',
      'memory_prealloc',
      'shutdown_timeout',
    ]);
    expect([...fieldsWithRole(sourceFields, 'base')].sort()).toEqual(['base_image', 'checksum', 'iso']);
    expect([...fieldsWithRole(sshCommunicatorFields, 'runtime')].sort()).toEqual([
      'host_key_fingerprint',
      'private_key_file',
      'timeout',
      'trust_on_first_use',
    ]);
  });

  it('a field without a cache role does not compile', () => {
    const rows = {
      // @ts-expect-error: `cache` is required, so a new field must say whether it shapes the disk
      fresh: { schema: z.string(), doc: 'a new field' },
    } satisfies Fields;
    expect(Object.keys(rows)).toEqual(['fresh']);
  });
});

describe('kiln inspect prints resolved values', () => {
  it('an image build: memory in MiB once, the disk as a size, the timeout as written', () => {
    const out = inspectTemplate(load('memory: 2G\ndisk_size: 20480M\ncommunicator: { timeout: 90s }'), false);
    expect(out).toContain(`base image: ${path.join(dir, 'base.qcow2')} (checksum not verified)`);
    expect(out).toContain('2 vCPU, 2048 MiB, firmware bios');
    expect(out).toContain('disk 20.0 GiB');
    expect(out).toContain('timeout 1m30s');
    expect(out).not.toMatch(/undefined|G MiB/);
  });

  it('an ISO build names its installer ISO', () => {
    const out = inspectTemplate(load('disk_size: 10G', 'iso: install.iso'), false);
    expect(out).toContain(`installer ISO: ${path.join(dir, 'install.iso')}`);
    expect(out).not.toContain('undefined');
  });
});

describe('Packer names', () => {
  it('a plain rename in the registry is the hint for a Packer name in a kiln template', () => {
    expect(packerSourceAliases.machine_type).toBe('machine: ...');
    expect(packerSourceAliases.iso_checksum).toBe('checksum: ...');
    expect(packerSourceAliases.ssh_username).toBe('communicator: { username: ... }');
    expect(packerSourceAliases.ssh_wait_timeout).toBe('communicator: { timeout: ... }');
    expect(packerSourceAliases.disk_image).toMatch(/base_image/);
  });
});
