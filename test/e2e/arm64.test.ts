// arch: aarch64: the tiny arm64 guest (scripts/fixtures/tiny-arm64.sh) built by kiln under
// qemu-system-aarch64 -M virt with AAVMF (from QEMU's firmware descriptors), emulated by TCG on this
// x86 host; a shell provisioner over SSH sees aarch64 and writes a file; the qcow2 artifact is then
// booted again by a second build, which reads the file back. No QEMU of either build is left.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { processesMentioning } from '../helpers/process-audit.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-arm64-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = path.join(imagesDir, 'tiny-arm64.qcow2');

/** One arm64 build of `image` whose shell provisioner runs `inline`; kiln's defaults otherwise (machine, firmware, CPU). */
function template(name: string, image: string, inline: string[]): { file: string; out: string } {
  const out = path.join(dir, `out-${name}`);
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: ${name}
    output_directory: ${out}
    source:
      arch: aarch64
      base_image: ${image}
      checksum: none
      cpus: 2
      memory: 512
      cloud_init: false
      communicator: { username: root, private_key_file: ${path.join(repoRoot, 'fixtures/keys/insecure_ed25519')}, trust_on_first_use: true, timeout: 3m }
    provisioners:
      - type: shell
        inline: [${inline.map((l) => JSON.stringify(l)).join(', ')}]
    outputs:
      - format: qcow2
`,
  );
  return { file, out };
}

const outputLines = (r: Awaited<ReturnType<typeof kiln>>) =>
  r.events.filter((e) => e.type === 'output').map((e) => String(e.line));
const logLines = (r: Awaited<ReturnType<typeof kiln>>) =>
  r.events.filter((e) => e.type === 'log').map((e) => String(e.message));

describe('arm64 guests (arch: aarch64, TCG)', () => {
  it('builds the tiny arm64 guest, provisions it over SSH (uname -m: aarch64), converts it, and its artifact boots again with the file', async () => {
    expect(existsSync(base), `${base} is missing: run make fixtures (scripts/fixtures/tiny-arm64.sh)`).toBe(true);
    const first = template('arm64-e2e', base, ['echo "arch=$(uname -m)"', 'echo kiln-arm64-ok > /root/marker', 'sync']);
    const started = performance.now();
    const r = await kiln(['build', first.file, '--events=json']);
    const firstSeconds = (performance.now() - started) / 1000;
    expect(r.exitCode, r.stderr).toBe(0);
    expect(outputLines(r)).toContain('arch=aarch64');
    const logs = logLines(r);
    // AAVMF from Debian's aarch64 descriptor, on virt, under TCG (no KVM tried for a foreign architecture), cortex-a72.
    expect(logs.find((m) => m.startsWith('firmware: '))).toMatch(/\(60-edk2-aarch64\.json; machine virt\)/);
    const argv = logs.find((m) => m.startsWith('qemu: '))!;
    expect(argv).toMatch(/^qemu: \S*qemu-system-aarch64 /);
    expect(argv).toContain('-machine virt -accel tcg,thread=multi -cpu cortex-a72');
    expect(argv).toContain('if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd');
    expect(logs.join('\n')).not.toMatch(/kvm is not usable/);
    const manifest = JSON.parse(readFileSync(path.join(first.out, 'manifest.json'), 'utf8')) as {
      arch: string;
      accelerator: string;
      platform: Record<string, unknown>;
      artifacts: { name: string; format: string }[];
    };
    expect(manifest).toMatchObject({
      arch: 'aarch64',
      accelerator: 'tcg',
      platform: {
        firmware: 'uefi',
        firmware_descriptor: '/usr/share/qemu/firmware/60-edk2-aarch64.json',
        machine: 'virt',
      },
    });
    const artifact = path.join(first.out, manifest.artifacts.find((a) => a.format === 'qcow2')!.name);

    // The converted artifact boots as a base image of its own, and the file the provisioner wrote is on it.
    const second = template('arm64-e2e-again', artifact, ['echo "marker=$(cat /root/marker) arch=$(uname -m)"']);
    const again = await kiln(['build', second.file, '--events=json']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(outputLines(again)).toContain('marker=kiln-arm64-ok arch=aarch64');
    console.log(
      `arm64 e2e: first build ${firstSeconds.toFixed(1)} s, second ${((performance.now() - started) / 1000 - firstSeconds).toFixed(1)} s`,
    );
    // Neither build's QEMU (-name <build>,process=kiln-<build>) outlives kiln.
    expect(processesMentioning('process=kiln-arm64-e2e')).toEqual([]);
  }, 400_000);
});
