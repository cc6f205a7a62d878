/**
 * The provisioner kinds as modules: one table (src/template/provisioner-kinds/index.ts) gives the
 * schema, paths, layer-key inputs, cacheability and Packer mapping of each kind, and the runners'
 * table (src/provisioners/index.ts) must name the same kinds, which the compiler checks.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  describeProvisioner,
  kindOf,
  provisionerKinds,
  provisionerSchema,
  provisionerTypes,
  withoutCommunicatorProblems,
  type Provisioner,
  type ProvisionerOf,
  type ProvisionerType,
} from '../../../src/template/provisioner-kinds/index.js';
import { defineKind, type HostInput } from '../../../src/template/provisioner-kinds/kind.js';
import { kindObject } from '../../../src/template/provisioner-kinds/common.js';
import { runners } from '../../../src/provisioners/index.js';
import { uncacheableReason } from '../../../src/cache/layer-keys.js';
import { relocateOutputs } from '../../../src/airgap/load-bundle.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

/** A fresh folder in the system temp dir, removed after the file's tests. */
const tempDir = tempDirMaker();

/** One valid provisioner of each kind, as a template would hold it. */
const examples: { [T in ProvisionerType]: Record<string, unknown> } = {
  shell: { type: 'shell', scripts: ['a.sh', 'b.sh'] },
  file: { type: 'file', source: 'motd', destination: '/etc/motd' },
  'shell-local': { type: 'shell-local', inline: ['true'] },
  breakpoint: { type: 'breakpoint', note: 'look' },
  ansible: { type: 'ansible', playbook_file: 'play/site.yml', galaxy_file: 'req/requirements.yml' },
  'ansible-local': { type: 'ansible-local', playbook_file: 'play/site.yml', role_paths: ['roles/web'] },
  'puppet-masterless': { type: 'puppet-masterless', manifest_file: 'manifests', hiera_config_path: 'hiera/hiera.yaml' },
};
const parsed = (t: ProvisionerType): Provisioner => provisionerSchema.parse(examples[t]);

describe('provisioner kinds', () => {
  it('lists every kind kiln has, each with its own schema, summary and facts', () => {
    expect(provisionerTypes).toEqual([
      'shell',
      'file',
      'shell-local',
      'breakpoint',
      'ansible',
      'ansible-local',
      'puppet-masterless',
    ]);
    for (const t of provisionerTypes) {
      const p = parsed(t);
      expect(p.type).toBe(t);
      expect(provisionerKinds[t].summary).toMatch(/^[a-z].+[^.]$/);
      expect(['communicator', 'ssh', 'nothing']).toContain(provisionerKinds[t].needs);
    }
  });

  it('has a runner for each kind and no other', () => {
    expect(Object.keys(runners).sort()).toEqual([...provisionerTypes].sort());
    // A kind missing from a per-kind table does not compile (the tables are typed by the kinds' list):
    // @ts-expect-error -- 'puppet-masterless' and others are missing
    const partial: { [T in ProvisionerType]: unknown } = { shell: 1, file: 1 };
    expect(partial).toBeDefined();
  });

  it('gives runners typed values: durations in ms, sizes in bytes', () => {
    const p = provisionerSchema.parse({
      type: 'file',
      direction: 'download',
      source: '/x',
      destination: 'x',
      max_size: '20G',
      timeout: '5m',
      pause_before: '1m30s',
    }) as ProvisionerOf<'file'>;
    expect([p.max_size, p.timeout, p.pause_before]).toEqual([20 * 2 ** 30, 300_000, 90_000]);
    expect(
      provisionerSchema.safeParse({ type: 'shell', inline: ['x'], timeout: 'soon' }).error?.issues[0]?.message,
    ).toBe('"soon" is not a duration');
  });

  it('describes one provisioner in a line, as before the kinds were modules', () => {
    expect(provisionerTypes.map((t) => describeProvisioner(parsed(t)))).toEqual([
      'shell (a.sh, b.sh)',
      'file (motd -> /etc/motd)',
      'shell-local (inline)',
      'breakpoint (look)',
      'ansible (site.yml)',
      'ansible-local (site.yml)',
      'puppet-masterless (manifests)',
    ]);
    expect(describeProvisioner(provisionerSchema.parse({ type: 'shell', inline: ['a'] }))).toBe(
      'shell (1 inline line)',
    );
    expect(
      describeProvisioner(
        provisionerSchema.parse({ type: 'file', direction: 'download', source: '/var/log/x', destination: 'x' }),
      ),
    ).toBe('file (download /var/log/x)');
  });

  it("resolves each kind's paths against the template folder and names the field of a missing one", () => {
    const dir = tempDir('kiln-kinds-');
    for (const d of ['play', 'req', 'roles/web', 'manifests', 'hiera'])
      mkdirSync(path.join(dir, d), { recursive: true });
    for (const f of ['a.sh', 'motd', 'play/site.yml', 'req/requirements.yml', 'hiera/hiera.yaml'])
      writeFileSync(path.join(dir, f), '');
    const missing: string[] = [];
    const paths = {
      existing: (written: string, field: (string | number)[]) => {
        if (written === 'b.sh') missing.push(field.join('.'));
        return path.resolve(dir, written);
      },
      resolve: (written: string) => path.resolve(dir, written),
    };
    const all = provisionerTypes.map((t) => {
      const p = parsed(t);
      kindOf(p).resolvePaths(p, paths);
      return p;
    });
    expect(missing).toEqual(['scripts.1']);
    expect((all[0] as ProvisionerOf<'shell'>).scripts).toEqual([path.join(dir, 'a.sh'), path.join(dir, 'b.sh')]);
    expect((all[4] as ProvisionerOf<'ansible'>).galaxy_file).toBe(path.join(dir, 'req/requirements.yml'));
    const download = provisionerSchema.parse({
      type: 'file',
      direction: 'download',
      source: '/etc/hostname',
      destination: 'out/hostname',
    });
    kindOf(download).resolvePaths(download, paths);
    expect((download as ProvisionerOf<'file'>).destination).toBe(path.join(dir, 'out/hostname'));
  });

  it('moves what a kind writes on the host, not what it reads, when an offline bundle is unpacked elsewhere', () => {
    const tree = '/unpacked/tree';
    const download = provisionerSchema.parse({
      type: 'file',
      direction: 'download',
      source: '/etc/os-release',
      destination: `${tree}/proj/out/os-release`,
    });
    const upload = provisionerSchema.parse({ type: 'file', source: `${tree}/proj/motd`, destination: '/etc/motd' });
    const t = { template: { builds: [{ outputs: [], provisioners: [download, upload] }] } };
    relocateOutputs(t as never, { template: `${tree}/proj/kiln.yaml`, treeRoot: tree }, '/work');
    expect((download as ProvisionerOf<'file'>).destination).toBe('/work/out/os-release');
    expect((upload as ProvisionerOf<'file'>).source).toBe(`${tree}/proj/motd`);
  });

  it("lists the host inputs of each kind for its layer key: files as they are, a playbook's folder as a tree", () => {
    const inputs = (t: ProvisionerType) =>
      kindOf(parsed(t))
        .hostInputs(parsed(t))
        .map((i: HostInput) => `${i.digest}:${i.path}`);
    expect(inputs('shell')).toEqual(['path:a.sh', 'path:b.sh']);
    expect(inputs('file')).toEqual(['path:motd']);
    expect(inputs('shell-local')).toEqual([]);
    expect(inputs('breakpoint')).toEqual([]);
    expect(inputs('ansible')).toEqual(['tree:play', 'tree:req']);
    expect(inputs('ansible-local')).toEqual(['tree:play', 'tree:play/site.yml', 'tree:roles/web']);
    expect(inputs('puppet-masterless')).toEqual(['tree:manifests', 'tree:hiera']);
    const shell = provisionerSchema.parse({ type: 'shell', script: 'x/setup.sh', remote_folder: '/var/tmp' });
    expect(kindOf(shell).hostInputs(shell)[0]!.guest?.('')).toBe('/var/tmp/setup.sh');
  });

  it('leaves out of the cache by default only what acts on the host', () => {
    const reasons = provisionerTypes.map((t) => uncacheableReason(parsed(t)));
    expect(reasons.map((r, i) => (r ? provisionerTypes[i] : undefined)).filter(Boolean)).toEqual(['shell-local']);
    expect(
      uncacheableReason(
        provisionerSchema.parse({ type: 'file', direction: 'download', source: '/x', destination: 'x' }),
      ),
    ).toMatch(/writes to the host/);
    expect(
      uncacheableReason(provisionerSchema.parse({ type: 'shell-local', inline: ['true'], cache: true })),
    ).toBeUndefined();
  });

  it('knows which uploads a guest resumed from a layer no longer has (folders emptied at boot)', () => {
    const upload = (destination: string) => provisionerSchema.parse({ type: 'file', content: 'x', destination });
    const volatile = (p: Provisioner) => kindOf(p).bootVolatile?.(p) ?? false;
    expect(['/tmp/x', '/run/a/b', '/tmp', '/var/run/x', '/etc/../tmp/y'].map((d) => volatile(upload(d)))).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(['/etc/motd', '/tmpfoo', '/var/tmp/x'].map((d) => volatile(upload(d)))).toEqual([false, false, false]);
    expect(provisionerTypes.filter((t) => volatile(parsed(t)))).toEqual([]);
  });

  it('says which kinds cannot run without a communicator, naming each group once', () => {
    expect(withoutCommunicatorProblems([parsed('shell-local'), parsed('breakpoint')])).toEqual([]);
    expect(withoutCommunicatorProblems([parsed('file'), parsed('ansible'), parsed('puppet-masterless')])).toEqual([
      'shell and file provisioners need a communicator, but it is "none"',
      'ansible, ansible-local and puppet-masterless provisioners reach the guest over SSH, but the communicator is "none"',
    ]);
  });

  it('makes a new kind from a schema and its facts, the methods typed by that schema', () => {
    // What a new kind's module holds (the table line and its runner are the other two lines).
    const greet = defineKind(kindObject('greet', { name: z.string() }), {
      summary: 'says hello in the guest',
      describe: (p) => `greet (${p.name})`,
      resolvePaths() {},
      hostInputs: () => [],
      needs: 'communicator',
      fromPacker(m) {
        m.r.name = m.str('name');
      },
    });
    const p = greet.schema.parse({ type: 'greet', name: 'world', timeout: '5m' });
    expect(greet.describe(p)).toBe('greet (world)');
    expect(greet.schema.safeParse({ type: 'greet', name: 'x', nmae: 'y' }).success).toBe(false);
  });
});
