// Saved VM states (cache.vm_state): what makes a state loadable, the QMP exchange that saves and
// loads one (against a scripted QMP client), and the store's files: 0600, digest-checked, gone with
// their layer, counted by the store's size.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMismatch, loadVmState, saveVmState, vmStateShape } from '../../../src/qemu/vm-state.js';
import type { QmpClient } from '../../../src/qemu/qmp.js';
import {
  publishVmState,
  readVmStateMeta,
  verifyVmState,
  vmStateFile,
  vmStateTemp,
} from '../../../src/cache/vm-states.js';
import { LayerStore } from '../../../src/cache/layers.js';
import { buildQemuArgs, type VmSpec } from '../../../src/qemu/argv.js';
import { restoredGuestScript } from '../../../src/build/vm-state.js';

const spec = (workDir: string, port: number, over: Partial<VmSpec> = {}): VmSpec => ({
  name: 'b',
  accelerator: 'tcg',
  cpus: 1,
  memoryMiB: 256,
  machine: 'pc',
  firmware: { type: 'bios' },
  disks: [{ path: `${workDir}/disk.qcow2`, format: 'qcow2', interface: 'virtio', discard: true }],
  net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: port, guestPort: 22 }] },
  qmpSocket: `${workDir}/qmp.sock`,
  serial: { socket: `${workDir}/serial.sock`, log: `${workDir}/serial.log` },
  headless: true,
  vmgenid: true,
  ...over,
});

describe('what makes a saved VM loadable', () => {
  it('two builds with other work directories and SSH ports have the same shape; -incoming and the binary are not part of it', () => {
    const a = vmStateShape(
      ['/usr/bin/qemu-system-x86_64', ...buildQemuArgs(spec('/tmp/kiln-b-AAAA', 40000))],
      '/tmp/kiln-b-AAAA',
    );
    const b = vmStateShape(buildQemuArgs(spec('/tmp/kiln-b-BBBB', 41234, { incoming: true })), '/tmp/kiln-b-BBBB');
    expect(b).toEqual(a);
    expect(a.join(' ')).toContain('hostfwd=tcp:127.0.0.1:$PORT-:22');
    expect(a.join(' ')).toContain('vmgenid,guid=auto');
    expect(loadMismatch({ qemuVersion: '7.2.22', shape: a }, { qemuVersion: '7.2.22', shape: b })).toBeUndefined();
  });

  it('memory allocated up front or not is the same shape: memory_prealloc auto may decide either way', () => {
    const w = '/tmp/kiln-b-X';
    const without = vmStateShape(buildQemuArgs(spec(w, 1)), w);
    const up = vmStateShape(buildQemuArgs(spec(w, 1, { preallocMemory: true })), w);
    expect(buildQemuArgs(spec(w, 1, { preallocMemory: true }))).toContain('-mem-prealloc');
    expect(up).toEqual(without);
  });

  it('another memory size, CPU model or device is refused, naming the switch', () => {
    const w = '/tmp/kiln-b-X';
    const saved = { qemuVersion: '7.2.22', shape: vmStateShape(buildQemuArgs(spec(w, 1)), w) };
    const now = (over: Partial<VmSpec>) => ({
      qemuVersion: '7.2.22',
      shape: vmStateShape(buildQemuArgs(spec(w, 1, over)), w),
    });
    expect(loadMismatch(saved, now({ memoryMiB: 512 }))).toBe(
      'the VM differs: saved with -m 256M, this build has -m 512M',
    );
    expect(loadMismatch(saved, now({ cpuModel: 'max' }))).toMatch(/saved with -cpu qemu64.*this build has -cpu max/);
    expect(loadMismatch(saved, now({ vmgenid: false }))).toMatch(/saved with -device vmgenid,guid=auto/);
  });

  it('another QEMU is refused, naming both versions', () => {
    expect(
      loadMismatch({ qemuVersion: '7.2.22 (Debian 1:7.2+dfsg-7)', shape: [] }, { qemuVersion: '8.2.2', shape: [] }),
    ).toBe('it was saved by QEMU 7.2.22 (Debian 1:7.2+dfsg-7), this is QEMU 8.2.2');
  });
});

/** A QMP client that answers from a script and records what it was asked. */
function scriptedQmp(
  answers: Record<string, unknown[]>,
): QmpClient & { asked: { command: string; args?: Record<string, unknown> }[] } {
  const asked: { command: string; args?: Record<string, unknown> }[] = [];
  return {
    asked,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      asked.push({ command, args });
      const queue = answers[command];
      const answer = queue && queue.length > 1 ? queue.shift() : queue?.[0];
      return (answer ?? {}) as T;
    },
    close() {},
  };
}

describe('saving and loading over QMP', () => {
  it('saves through exec:cat (QEMU 7.2 has no file: URI) with the bandwidth limit lifted, and waits for completion', async () => {
    const qmp = scriptedQmp({
      'query-migrate': [{ status: 'active' }, { status: 'completed', ram: { transferred: 1234 } }],
    });
    const r = await saveVmState(qmp, "/cache/it's.vmstate");
    expect(r.bytes).toBe(1234);
    expect(qmp.asked.find((a) => a.command === 'migrate-set-parameters')!.args!['max-bandwidth']).toBeGreaterThan(
      2 ** 30,
    );
    expect(qmp.asked.find((a) => a.command === 'migrate')!.args).toEqual({
      uri: `exec:cat > '/cache/it'\\''s.vmstate'`,
    });
  });

  it('sends nothing after a completed save until QEMU has left finish-migrate (cont would be refused there)', async () => {
    const qmp = scriptedQmp({
      'query-migrate': [{ status: 'completed', ram: { transferred: 1 } }],
      'query-status': [{ status: 'finish-migrate' }, { status: 'finish-migrate' }, { status: 'postmigrate' }],
    });
    await saveVmState(qmp, '/x.vmstate');
    expect(qmp.asked.filter((a) => a.command === 'query-status')).toHaveLength(3);
    expect(qmp.asked.at(-1)!.command).toBe('query-status');
  });

  it("a completed load returns once QEMU has left inmigrate, so the caller's cont resumes a paused VM", async () => {
    const qmp = scriptedQmp({
      'query-migrate': [{ status: 'active' }, { status: 'completed' }],
      'query-status': [{ status: 'inmigrate' }, { status: 'paused' }],
    });
    await loadVmState(qmp, '/x.vmstate');
    expect(qmp.asked.map((a) => a.command)).toEqual([
      'migrate-incoming',
      'query-migrate',
      'query-migrate',
      'query-status',
      'query-status',
    ]);
  });

  it("a failed load is an error carrying QEMU's reason", async () => {
    const qmp = scriptedQmp({
      'query-migrate': [{ status: 'failed', 'error-desc': 'load of migration failed: Invalid argument' }],
    });
    await expect(loadVmState(qmp, '/x.vmstate')).rejects.toThrow(
      'loading the VM state failed: load of migration failed: Invalid argument',
    );
    expect(qmp.asked[0]).toEqual({ command: 'migrate-incoming', args: { uri: "exec:cat '/x.vmstate'" } });
  });
});

describe("the restored guest's first command", () => {
  it('sets the clock to the given time and mixes in the given randomness, reseeding where perl or python3 can', () => {
    const s = restoredGuestScript(1796265394, 'ab'.repeat(64), '0b6f3f0e-4f47-4c1c-9a57-2a0c1f1d7a11');
    expect(s).toContain('date -u -s @1796265394');
    expect(s).toContain(`printf %s ${'ab'.repeat(64)} > /dev/urandom`);
    expect(s).toMatch(/ioctl\(\$f, 0x5207, 0\)/);
  });

  it("binds a file holding the new boot ID over the kernel's, once: a guest restored again rewrites the file", async () => {
    // Run for real against a tree of its own: /run and /proc/mounts replaced, mount(8) a recording stub.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bootid-'));
    try {
      const id = '0b6f3f0e-4f47-4c1c-9a57-2a0c1f1d7a11';
      const script = restoredGuestScript(1, 'ab', id)
        .split('\n')
        .filter((l) => !/date -u|urandom|reseeded/.test(l))
        .join('\n')
        .replaceAll('/run/', `${dir}/run/`)
        .replace('[ -d /run ]', `[ -d ${dir}/run ]`)
        .replace('< /proc/mounts', `< ${dir}/mounts`);
      mkdirSync(path.join(dir, 'run'));
      mkdirSync(path.join(dir, 'bin'));
      writeFileSync(path.join(dir, 'bin', 'mount'), `#!/bin/sh\necho "$@" >> ${dir}/mount-calls\n`, { mode: 0o755 });
      writeFileSync(path.join(dir, 'mounts'), 'proc /proc proc rw 0 0\n');
      const run = () =>
        execFileSync('sh', ['-c', script], { env: { PATH: `${dir}/bin:/usr/bin:/bin` }, encoding: 'utf8' });
      expect(run()).toBe('new-boot-id\n');
      expect(readFileSync(path.join(dir, 'run', 'kiln-boot-id'), 'utf8')).toBe(`${id}\n`);
      expect(statSync(path.join(dir, 'run', 'kiln-boot-id')).mode & 0o777).toBe(0o444);
      expect(readFileSync(path.join(dir, 'mount-calls'), 'utf8')).toBe(
        `-o bind ${dir}/run/kiln-boot-id /proc/sys/kernel/random/boot_id\n`,
      );
      // Restored again from a state saved after this: the bind is there, the file takes the next ID.
      writeFileSync(path.join(dir, 'mounts'), 'tmpfs /proc/sys/kernel/random/boot_id tmpfs ro 0 0\n');
      rmSync(path.join(dir, 'run', 'kiln-boot-id'));
      expect(run()).toBe('new-boot-id\n');
      expect(readFileSync(path.join(dir, 'mount-calls'), 'utf8').split('\n').filter(Boolean)).toHaveLength(1);
      expect(readFileSync(path.join(dir, 'run', 'kiln-boot-id'), 'utf8')).toBe(`${id}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('state files in the layer store', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-vmstate-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const store = new LayerStore(dir, { rebaseUnsafe: async () => {} });
  const key = 'a'.repeat(64);

  it('are 0600, digest-checked, counted in the store size, and removed with their layer', async () => {
    const layerSrc = path.join(dir, 'frozen.qcow2');
    writeFileSync(layerSrc, Buffer.alloc(4096, 1));
    await store.publish(key, layerSrc, null, {
      parent: null,
      build: 'b',
      template: 't',
      provisioner: 1,
      description: 'shell',
    });
    const before = store.totalBytes();
    const tmp = vmStateTemp(store.dir, key);
    writeFileSync(tmp, Buffer.alloc(64 * 1024, 7));
    await publishVmState(store.dir, tmp, {
      key,
      qemuVersion: '7.2.22',
      shape: ['-m', '256M'],
      saveMs: 5,
      buildKey: { privateKey: 'PRIVATE', publicKey: 'ssh-ed25519 AAAA', fingerprint: 'SHA256:x' },
    });
    expect(existsSync(tmp)).toBe(false);
    for (const f of [vmStateFile(store.dir, key), `${vmStateFile(store.dir, key)}.json`])
      expect(statSync(f).mode & 0o777, f).toBe(0o600);
    expect(store.totalBytes()).toBeGreaterThanOrEqual(before + 64 * 1024);
    expect(store.meta(key)!.vmState).toMatchObject({ size: 64 * 1024, saveMs: 5, qemuVersion: '7.2.22' });
    // What `kiln cache ls --json` shows of it holds no key.
    expect(JSON.stringify(store.list())).not.toContain('PRIVATE');
    expect((await verifyVmState(store.dir, key)).ok).toBe(true);

    writeFileSync(vmStateFile(store.dir, key), Buffer.alloc(64 * 1024, 8));
    const damaged = await verifyVmState(store.dir, key);
    expect(damaged.ok).toBe(false);
    expect(!damaged.ok && damaged.problem).toMatch(/state file is damaged/);

    store.remove(key);
    expect(existsSync(vmStateFile(store.dir, key))).toBe(false);
    expect(readVmStateMeta(store.dir, key)).toBeUndefined();
  });
});
