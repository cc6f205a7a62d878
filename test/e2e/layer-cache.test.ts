// The layer cache end to end on the tiny guest: each provisioner's result is saved as a layer, a
// rebuild starts from the deepest layer whose inputs are unchanged (shown by events, not timing), an
// unchanged build reuses its artifact without booting, a build wanting other outputs converts from the cached
// final disk without booting, damaged layers are rebuilt, failures resume.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, installerSourceYaml, overlayOf, tinySourceYaml } from '../helpers/guest.js';
import { kiln, type KilnRun } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-layers-'));
const cacheDir = path.join(dir, 'cache');
const env = { KILN_CACHE_DIR: cacheDir };
const out = path.join(dir, 'out');
const template = path.join(dir, 'layers.yaml');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

writeFileSync(path.join(dir, 'two.sh'), 'echo two > /root/two\n');
/**
 * A last provisioner's line failing its build when an earlier provisioner's script is still in the
 * guest's /tmp (kiln removes each with its next command there, before the layer is frozen): its own is
 * the only one. In the VM-state builds /tmp (a tmpfs) comes back from the saved RAM.
 */
const leftScripts = 'set -- /tmp/kiln-*.sh; test $# = 1 || { echo "scripts left: $*"; exit 9; }';
/** The build, writing `outputs` into `output`; the cached-conversion case uses a second copy of it. */
const layersTemplate = (output: string, outputs: string) => `
variables:
  third: { default: a }
builds:
  - name: layers
    output_directory: ${output}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo one > /root/one', 'echo "runs: $(cat /root/runs 2>/dev/null)x" > /root/runs']
      - type: shell
        script: ${path.join(dir, 'two.sh')}
      - type: shell
        inline: ['test "\${var.third}" != fail || exit 7', 'echo "three-\${var.third}" > /root/three', '${leftScripts}']
    outputs:
${outputs}
`;
writeFileSync(template, layersTemplate(out, '      - format: qcow2'));

const build = (...args: string[]) => kiln(['build', template, '--events=json', ...args], env);
/** Provisioner indexes (0-based) that ran, and those the cache covered. */
const ran = (r: KilnRun) => r.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index);
const cached = (r: KilnRun) => r.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index);
const saved = (r: KilnRun) =>
  r.events.filter((e) => e.type === 'layer-saved' && !e.final && !e.warmBase).map((e) => e.index);
const savedFinal = (r: KilnRun) => r.events.filter((e) => e.type === 'layer-saved' && e.final);
const steps = (r: KilnRun) => r.events.filter((e) => e.type === 'step-start').map((e) => e.step);
const logs = (r: KilnRun) =>
  r.events
    .filter((e) => e.type === 'log')
    .map((e) => String(e.message))
    .join('\n');
const layerFiles = () => readdirSync(path.join(cacheDir, 'layers')).filter((f) => /^[0-9a-f]{64}\.qcow2$/.test(f));

/** Boots an artifact (on an overlay in `workDir`) as the tiny guest and returns what `command` prints. */
async function runInArtifact(artifact: string, workDir: string, command: string): Promise<string> {
  const disk = await overlayOf(artifact, workDir, `boot-${Date.now()}.qcow2`);
  const guest = await Guest.boot({ disk, memoryMiB: 256, cpus: 1 });
  try {
    const ssh = await guest.ssh('root', insecureKey);
    const text = await ssh.run(command);
    await guest.poweroff(ssh);
    return text;
  } finally {
    await guest.destroy();
    rmSync(disk, { force: true });
  }
}

const guestFiles = () =>
  runInArtifact(path.join(out, 'layers.qcow2'), dir, 'cat /root/one /root/two /root/three /root/runs');

describe('layer cache (tiny guest)', () => {
  it('saves a layer after each provisioner; an unchanged rebuild reuses the artifact without booting', async () => {
    const first = await build();
    expect(first.exitCode, first.stderr.slice(-2000)).toBe(0);
    expect(ran(first)).toEqual([0, 1, 2]);
    expect(saved(first)).toEqual([0, 1, 2]);
    // And the final disk (cleaned, trimmed), in the background like the others.
    expect(savedFinal(first)).toHaveLength(1);
    // And the warm base (cache.boot_snapshot, on by default), which provisioner 1's layer backs onto.
    expect(layerFiles()).toHaveLength(5);
    // Layers back onto each other by names relative to the store, so the store can move as a whole.
    for (const f of layerFiles()) {
      const info = JSON.parse(
        (await execa('qemu-img', ['info', '--output=json', path.join(cacheDir, 'layers', f)])).stdout,
      );
      expect(path.isAbsolute(info['backing-filename'])).toBe(false);
      expect((await execa('qemu-img', ['check', path.join(cacheDir, 'layers', f)], { reject: false })).exitCode).toBe(
        0,
      );
    }
    const manifestFile = path.join(out, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const mtime = statSync(manifestFile).mtimeMs;

    const again = await build();
    expect(again.exitCode, again.stderr.slice(-2000)).toBe(0);
    expect(steps(again)).not.toContain('launch QEMU');
    expect(ran(again)).toEqual([]);
    expect(logs(again)).toMatch(/up to date/);
    const artifact = again.events.find((e) => e.type === 'artifact')!;
    expect(artifact.reused).toBe(true);
    expect(artifact.sha256).toBe(manifest.artifacts[0].sha256);
    expect(statSync(manifestFile).mtimeMs).toBe(mtime);
    expect(manifest.cache.artifact_key).toMatch(/^[0-9a-f]{64}$/);
  }, 300_000);

  it('another output directory and other formats: converted from the cached final layer, no QEMU; the same guest content', async () => {
    const other = path.join(dir, 'out-cached');
    const otherTemplate = path.join(dir, 'layers-other-outputs.yaml');
    writeFileSync(otherTemplate, layersTemplate(other, '      - format: qcow2\n      - format: vmdk'));
    const booted = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const r = await kiln(['build', otherTemplate, '--events=json'], env);
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    // Nothing that needs a guest ran: no disk, no QEMU, no provisioner, no clean-up.
    for (const step of ['create disk', 'launch QEMU', 'wait for SSH', 'provision', 'remove build access', 'shut down'])
      expect(steps(r)).not.toContain(step);
    expect(ran(r)).toEqual([]);
    expect(cached(r)).toEqual([0, 1, 2]);
    expect(savedFinal(r)).toEqual([]);
    expect(logs(r)).toMatch(
      /all 3 provisioners and the clean-up cached \(layer [0-9a-f]{12}…\); converting without booting/,
    );
    const manifest = JSON.parse(readFileSync(path.join(other, 'manifest.json'), 'utf8'));
    expect(manifest.cache.final_layer).toEqual({ key: booted.cache.final_layer.key, from_cache: true });
    expect(booted.cache.final_layer.from_cache).toBe(false);
    // The manifest a booted build writes, but for the outputs and times.
    for (const field of ['sbom', 'compaction', 'accelerator', 'base_image'])
      expect(manifest[field], field).toEqual(booted[field]);
    expect(manifest.artifacts.map((a: { format: string }) => a.format)).toEqual(['qcow2', 'vmdk']);
    for (const a of manifest.artifacts as { path: string; format: string; sha256: string }[]) {
      expect((await execa('qemu-img', ['check', '-f', a.format, a.path], { reject: false })).exitCode, a.path).toBe(0);
      expect((await execa('sha256sum', [a.path])).stdout.split(' ')[0]).toBe(a.sha256);
      // The same guest disk as the booted build's artifact, byte for byte as the guest sees it.
      const same = await execa(
        'qemu-img',
        ['compare', '-f', a.format, '-F', 'qcow2', a.path, path.join(out, 'layers.qcow2')],
        { reject: false },
      );
      expect(same.exitCode, same.stdout + same.stderr).toBe(0);
    }
  }, 300_000);

  it("after a change to the last provisioner, runs only it; the artifact has every provisioner's effect", async () => {
    const r = await build('--var', 'third=b', '--force');
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(cached(r)).toEqual([0, 1]);
    expect(ran(r)).toEqual([2]);
    expect(logs(r)).toContain('provisioners 1-2 cached, starting at 3 (shell (3 inline lines))');
    expect((await execa('qemu-img', ['check', path.join(out, 'layers.qcow2')], { reject: false })).exitCode).toBe(0);
    // Provisioner 1 ran exactly once across both builds: its effect came from the cached layer.
    expect(await guestFiles()).toBe('one\ntwo\nthree-b\nruns: x\n');
  }, 300_000);

  it('after a change to a script file of provisioner 2, runs 2 onwards', async () => {
    writeFileSync(path.join(dir, 'two.sh'), 'echo two-changed > /root/two\n');
    const r = await build('--var', 'third=b', '--force');
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(cached(r)).toEqual([0]);
    expect(ran(r)).toEqual([1, 2]);
    expect(await guestFiles()).toBe('one\ntwo-changed\nthree-b\nruns: x\n');
  }, 300_000);

  it('detects a damaged layer by its digest and rebuilds from there', async () => {
    const layers = JSON.parse((await kiln(['cache', 'ls', '--json'], env)).stdout).layers as {
      key: string;
      provisioner: number;
      description: string;
    }[];
    const first = layers.find((l) => l.provisioner === 1)!;
    const file = path.join(cacheDir, 'layers', `${first.key}.qcow2`);
    const bytes = readFileSync(file);
    bytes.fill(0x5a, bytes.length - 4096); // damage data, keep the file's size
    writeFileSync(file, bytes);
    const r = await build('--var', 'third=c', '--force');
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(logs(r)).toMatch(
      new RegExp(`layer ${first.key.slice(0, 12)} \\(provisioner 1\\) is damaged: digest mismatch`),
    );
    expect(ran(r)).toEqual([0, 1, 2]);
    expect(saved(r)).toEqual([0, 1, 2]);
  }, 300_000);

  it('a failed build keeps the layers it completed; the next run starts after the last good one', async () => {
    const failed = await build('--var', 'third=fail', '--force');
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toMatch(/provisioner 3/);
    expect(saved(failed)).toEqual([]); // 1 and 2 were cached already; 3 failed
    const resumed = await build('--var', 'third=d', '--force');
    expect(resumed.exitCode, resumed.stderr.slice(-2000)).toBe(0);
    expect(cached(resumed)).toEqual([0, 1]);
    expect(ran(resumed)).toEqual([2]);
  }, 300_000);

  it('--no-cache runs every provisioner and neither reads nor writes layers', async () => {
    const before = layerFiles().sort();
    const r = await build('--var', 'third=e', '--force', '--no-cache');
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(ran(r)).toEqual([0, 1, 2]);
    expect(saved(r)).toEqual([]);
    expect(steps(r)).not.toContain('check layer cache');
    expect(layerFiles().sort()).toEqual(before);
  }, 300_000);

  it('two builds sharing the cache at once each publish whole layers and leave no temporary file', async () => {
    const shared = path.join(dir, 'shared-cache');
    const twin = path.join(dir, 'twin.yaml');
    writeFileSync(
      twin,
      `
variables:
  out: {}
builds:
  - name: twin
    output_directory: \${var.out}
${tinySourceYaml()}
    provisioners:
      - { type: shell, inline: ['echo a > /root/a'] }
      - { type: shell, inline: ['echo b > /root/b'] }
`,
    );
    const runs = await Promise.all(
      ['x', 'y'].map((n) =>
        kiln(['build', twin, '--events=json', '--var', `out=${path.join(dir, `twin-${n}`)}`], {
          KILN_CACHE_DIR: shared,
        }),
      ),
    );
    for (const r of runs) expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    const files = readdirSync(path.join(shared, 'layers'));
    expect(files.filter((f) => /\.(tmp-\d+|lock)$/.test(f))).toEqual([]);
    const layers = files.filter((f) => /^[0-9a-f]{64}\.qcow2$/.test(f));
    // The warm base, two provisioners' and the final disk: one build's chain, as the other's disk differs
    // from the warm base the first published, so it saves nothing on top of it.
    expect(layers).toHaveLength(4);
    for (const f of layers)
      expect((await execa('qemu-img', ['check', path.join(shared, 'layers', f)], { reject: false })).exitCode).toBe(0);
    expect(readdirSync(path.join(shared, 'layers', 'inuse'))).toEqual([]);
  }, 300_000);

  it('an ISO build resumes on its installed layer: no installer, no boot command, the saved key logs in', async () => {
    const isoTemplate = path.join(dir, 'iso.yaml');
    const isoOut = path.join(dir, 'iso-out');
    writeFileSync(
      isoTemplate,
      `
variables:
  second: { default: a }
builds:
  - name: iso-layers
    output_directory: ${isoOut}
${installerSourceYaml()}
    provisioners:
      - { type: shell, inline: ['echo installed-once > /root/first'] }
      - { type: shell, inline: ['echo "second-\${var.second}" > /root/second'] }
`,
    );
    const isoBuild = (...args: string[]) => kiln(['build', isoTemplate, '--events=json', '--debug', ...args], env);
    const first = await isoBuild();
    expect(first.exitCode, first.stderr.slice(-2000)).toBe(0);
    expect(logs(first)).toMatch(/boot command typed/);
    const again = await isoBuild('--force', '--var', 'second=b');
    expect(again.exitCode, again.stderr.slice(-2000)).toBe(0);
    expect(cached(again)).toEqual([0]);
    expect(ran(again)).toEqual([1]);
    expect(logs(again)).not.toMatch(/boot command typed|booting the installer ISO/);
    expect(logs(again)).toMatch(/using the build key saved with the cached layer/);
    expect(
      (await execa('qemu-img', ['check', path.join(isoOut, 'iso-layers.qcow2')], { reject: false })).exitCode,
    ).toBe(0);
  }, 400_000);

  it('kiln cache ls / rm / prune', async () => {
    const ls = await kiln(['cache', 'ls'], env);
    expect(ls.exitCode).toBe(0);
    expect(ls.stdout).toMatch(/KEY\s+PARENT\s+SIZE\s+LAST USED\s+BUILD\s+PROVISIONER/);
    const listed = JSON.parse((await kiln(['cache', 'ls', '--json'], env)).stdout).layers as {
      key: string;
      parent: string | null;
      provisioner: number;
    }[];
    expect(listed.length).toBe(layerFiles().length);

    // Removing a layer removes what backs onto it.
    const second = listed.find((l) => l.provisioner === 2)!;
    const descendants = listed.filter((l) => l.parent === second.key);
    const rm = await kiln(['cache', 'rm', second.key.slice(0, 10)], env);
    expect(rm.exitCode, rm.stderr).toBe(0);
    for (const k of [second.key, ...descendants.map((d) => d.key)])
      expect(existsSync(path.join(cacheDir, 'layers', `${k}.qcow2`))).toBe(false);

    const bad = await kiln(['cache', 'rm', 'zzzz'], env);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/not a layer key/);

    const prune = await kiln(['cache', 'prune', '--keep-size', '0'], env);
    expect(prune.exitCode, prune.stderr).toBe(0);
    expect(layerFiles()).toEqual([]);
    expect(readdirSync(path.join(cacheDir, 'layers')).filter((f) => f.startsWith('base-'))).toEqual([]);
  }, 120_000);
});

// cache.vm_state: layers hold the running VM, and a rebuild whose change is at the last provisioner
// restores the VM saved after the one before instead of booting. Its own cache, so the cases above
// keep testing the booted path.
describe('layer cache with saved VM states (tiny guest)', () => {
  const vmDir = path.join(dir, 'vm-state');
  const vmCache = path.join(vmDir, 'cache');
  const vmOut = path.join(vmDir, 'out');
  const vmTemplate = (memory: number) => `
variables:
  third: { default: a }
builds:
  - name: vmstate
    output_directory: ${vmOut}
${tinySourceYaml().replace('memory: 256', `memory: ${memory}`)}
    cache: { vm_state: true }
    provisioners:
      - type: shell
        inline: ['echo one > /root/one', 'cat /proc/sys/kernel/random/boot_id > /root/boot1']
      - type: shell
        inline: ['echo two > /root/two']
      - type: shell
        inline: ['echo "three-\${var.third}" > /root/three', 'cat /proc/sys/kernel/random/boot_id > /root/boot3', 'date +%s > /root/date3', '${leftScripts}']
`;
  const vmBuild = (memory: number, ...args: string[]) => {
    const file = path.join(vmDir, `vm-${memory}.yaml`);
    writeFileSync(file, vmTemplate(memory));
    return kiln(['build', file, '--events=json', ...args], { KILN_CACHE_DIR: vmCache });
  };
  const restored = (r: KilnRun) => r.events.filter((e) => e.type === 'vm-restored');
  const statesSaved = (r: KilnRun) => r.events.filter((e) => e.type === 'vm-state-saved' && !e.warmBase);

  const artifactFiles = () =>
    runInArtifact(
      path.join(vmOut, 'vmstate.qcow2'),
      vmDir,
      'cat /root/one /root/two /root/three /root/boot1 /root/boot3 /root/date3; grep -c kiln-build /root/.ssh/authorized_keys || true',
    );

  it('saves the VM with each layer; a rebuild with the last provisioner changed restores it (no boot), its clock set, a new vmgenid', async () => {
    mkdirSync(vmDir, { recursive: true });
    const first = await vmBuild(256);
    expect(first.exitCode, first.stderr.slice(-2000)).toBe(0);
    const saves = statesSaved(first);
    expect(saves.map((e) => e.index)).toEqual([0, 1, 2]);
    for (const s of saves) {
      expect(s.size).toBeGreaterThan(1024 * 1024);
      expect(statSync(path.join(vmCache, 'layers', `${s.key}.vmstate`)).mode & 0o777).toBe(0o600);
    }
    const listed = JSON.parse((await kiln(['cache', 'ls', '--json'], { KILN_CACHE_DIR: vmCache })).stdout).layers as {
      key: string;
      vmState?: { size: number; saveMs: number };
    }[];
    expect(listed.find((l) => l.key === saves[1]!.key)!.vmState!.size).toBe(saves[1]!.size);

    const started = Date.now();
    const again = await vmBuild(256, '--var', 'third=b', '--force');
    expect(again.exitCode, again.stderr.slice(-2000)).toBe(0);
    expect(cached(again)).toEqual([0, 1]);
    expect(ran(again)).toEqual([2]);
    const [r] = restored(again);
    expect(r, logs(again)).toBeDefined();
    expect(r!.key).toBe(saves[1]!.key);
    expect(r!.provisioner).toBe(2);
    // The restored VM has another generation ID than the one saved (QEMU's vmgenid device, guid=auto).
    expect(r!.vmgenid).toMatch(/^[0-9a-f-]{36}$/);
    expect(r!.vmgenid).not.toBe(saves[1]!.vmgenid);
    expect(logs(again)).toMatch(
      /restored the VM saved after provisioner 2 \(layer [0-9a-f]{12}, [\d.]+ MiB\) in [\d.]+m?s: no boot/,
    );

    // The artifact boots and holds every provisioner's result and no kiln key. What provisioner 3 saw:
    // another boot ID than provisioner 1 of the first build, though nothing booted (the events above say
    // so: the kernel's stays, kiln binds a new one over it), and the host's time, not the saved guest's
    // (which stood at the first build's provisioner 3).
    const [one, two, three, boot1, boot3, date3, kilnKeys] = (await artifactFiles()).trim().split('\n');
    expect([one, two, three, kilnKeys]).toEqual(['one', 'two', 'three-b', '0']);
    expect(boot3).toMatch(/^[0-9a-f-]{36}$/);
    expect(boot1).toMatch(/^[0-9a-f-]{36}$/);
    expect(boot3).not.toBe(boot1);
    expect(logs(again)).toMatch(/restored guest: clock set to the host's, random pool .*, a new boot ID/);
    expect(Number(date3)).toBeGreaterThanOrEqual(Math.floor(started / 1000) - 1);
    expect(Number(date3)).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  }, 400_000);

  it('a state saved with another memory size is refused: the build boots the layer, saying why', async () => {
    const r = await vmBuild(384, '--var', 'third=c', '--force');
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(restored(r)).toEqual([]);
    expect(ran(r)).toEqual([2]);
    expect(logs(r)).toMatch(
      /booting layer [0-9a-f]{12} instead of restoring the VM saved with it: the VM differs: saved with -m 256M, this build has -m 384M/,
    );
    // What the restore refused stays for builds that match it; this build saves its own for provisioner 3.
    expect(statesSaved(r).map((e) => e.index)).toEqual([2]);
  }, 300_000);
});

// cache.boot_snapshot (on by default): the first build on a base saves the guest as it is once ready for
// provisioning, and a build of another template on the same base and source settings restores it
// instead of booting. Its own cache.
describe('warm base (tiny guest)', () => {
  const warmDir = path.join(dir, 'warm');
  const warmCache = path.join(warmDir, 'cache');
  const warmTemplate = (name: string, inline: string[]) => {
    const file = path.join(warmDir, `${name}.yaml`);
    writeFileSync(
      file,
      `
builds:
  - name: warm
    output_directory: ${path.join(warmDir, 'out', name)}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: [${inline.map((l) => `'${l}'`).join(', ')}]
`,
    );
    return file;
  };
  const warmBuild = (name: string, inline: string[], ...args: string[]) =>
    kiln(['build', warmTemplate(name, inline), '--events=json', ...args], { KILN_CACHE_DIR: warmCache });
  const warmPlan = (name: string, inline: string[]) =>
    kiln(['plan', warmTemplate(name, inline)], { KILN_CACHE_DIR: warmCache });
  const restored = (r: KilnRun) => r.events.filter((e) => e.type === 'vm-restored');
  const warmSaved = (r: KilnRun) => r.events.filter((e) => e.type === 'vm-state-saved' && e.warmBase);

  const artifactFiles = (name: string, files: string) =>
    runInArtifact(
      path.join(warmDir, 'out', name, 'warm.qcow2'),
      warmDir,
      `cat ${files}; ls /root; grep -c kiln-build /root/.ssh/authorized_keys || true`,
    );

  it('the first build saves the warm base; a build of another template on the base restores it (no boot) and its artifact holds only its own work', async () => {
    mkdirSync(warmDir, { recursive: true });
    const inlineA = ['echo a > /root/a', 'cat /proc/sys/kernel/random/boot_id > /root/boot-a'];
    expect((await warmPlan('a', inlineA)).stdout).toMatch(
      /note: no warm base for this base image and source settings yet/,
    );
    const first = await warmBuild('a', inlineA);
    expect(first.exitCode, first.stderr.slice(-2000)).toBe(0);
    expect(restored(first)).toEqual([]);
    const [state] = warmSaved(first);
    expect(state, logs(first)).toBeDefined();
    expect(state!.index).toBe(-1);
    expect(statSync(path.join(warmCache, 'layers', `${state!.key}.vmstate`)).mode & 0o777).toBe(0o600);
    expect(first.events.filter((e) => e.type === 'layer-saved' && e.warmBase).map((e) => e.key)).toEqual([state!.key]);
    // Provisioner 1's layer backs onto the warm base.
    const listed = JSON.parse((await kiln(['cache', 'ls', '--json'], { KILN_CACHE_DIR: warmCache })).stdout).layers as {
      key: string;
      parent: string | null;
      provisioner: number;
      warmBase?: boolean;
      vmState?: { size: number };
    }[];
    const warm = listed.find((l) => l.key === state!.key)!;
    expect(warm.warmBase).toBe(true);
    expect(warm.vmState!.size).toBe(state!.size);
    expect(listed.find((l) => l.provisioner === 1)!.parent).toBe(state!.key);

    // kiln plan, before the second template's build: it names the warm base it would restore.
    const planned = await warmPlan('b', ['echo b > /root/b']);
    expect(planned.exitCode, planned.stderr).toBe(0);
    expect(planned.stdout).toContain(
      `(layer ${String(state!.key).slice(0, 12)}, VM ${(Number(state!.size) / 2 ** 20).toFixed(0)} MiB) is restored instead of booting (cache.boot_snapshot)`,
    );
    const started = Date.now();
    const second = await warmBuild('b', [
      'echo b > /root/b',
      'cat /proc/sys/kernel/random/boot_id > /root/boot-b',
      'date +%s > /root/date-b',
    ]);
    expect(second.exitCode, second.stderr.slice(-2000)).toBe(0);
    const [r] = restored(second);
    expect(r, logs(second)).toBeDefined();
    expect(r!.warmBase).toBe(true);
    expect(r!.key).toBe(state!.key);
    expect(r!.provisioner).toBe(0);
    expect(r!.vmgenid).toMatch(/^[0-9a-f-]{36}$/);
    expect(r!.vmgenid).not.toBe(state!.vmgenid);
    expect(logs(second)).toMatch(
      /warm base: restored the booted guest \(layer [0-9a-f]{12}, [\d.]+ MiB\) in [\d.]+m?s: no boot/,
    );
    expect(warmSaved(second)).toEqual([]);

    // b's artifact: its own file, not a's; the host's clock; no kiln key. Nothing booted, yet b's boot ID is
    // not a's: kiln gave the restored guest a new one.
    const [bootA] = (await artifactFiles('a', '/root/boot-a')).trim().split('\n');
    const lines = (await artifactFiles('b', '/root/b /root/boot-b /root/date-b')).trim().split('\n');
    const [b, bootB, dateB] = lines;
    expect(b).toBe('b');
    expect(lines).not.toContain('a');
    expect(lines.at(-1)).toBe('0');
    expect(bootB).toMatch(/^[0-9a-f-]{36}$/);
    expect(bootB).not.toBe(bootA);
    expect(logs(second)).toMatch(/restored guest: clock set to the host's, .*, a new boot ID/);
    expect(Number(dateB)).toBeGreaterThanOrEqual(Math.floor(started / 1000) - 1);
    expect(Number(dateB)).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  }, 400_000);

  it('a damaged warm-base state is removed and the build boots instead, saying why', async () => {
    const stateFile = readdirSync(path.join(warmCache, 'layers')).find((f) => f.endsWith('.vmstate'))!;
    const file = path.join(warmCache, 'layers', stateFile);
    const bytes = readFileSync(file);
    const mid = bytes.length >> 1;
    bytes.writeUInt8(bytes[mid]! ^ 0xff, mid);
    writeFileSync(file, bytes);
    const r = await warmBuild('c', ['echo c > /root/c']);
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    expect(restored(r)).toEqual([]);
    expect(logs(r)).toMatch(
      /warm base: booting instead of restoring the VM saved with layer [0-9a-f]{12}: the state file is damaged/,
    );
    expect(existsSync(file)).toBe(false);
    expect((await artifactFiles('c', '/root/c')).trim().split('\n')[0]).toBe('c');
  }, 300_000);
});
