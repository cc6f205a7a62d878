// Issue 23: `memory: 900000000` used to validate and then fail at QEMU's start with "Cannot allocate
// memory" and the whole argv. kiln validate now compares memory with the host's RAM (os.totalmem()).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../helpers/guest.js';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { formatBytes } from '../../../src/template/units.js';
import { memoryFit, preallocDecision, preallocPromisedMiB, promisePrealloc } from '../../../src/qemu/memory.js';

const GiB = 2 ** 30;
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-memory-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('preallocDecision (memory_prealloc, pure)', () => {
  const host = { totalBytes: 8 * GiB, freeBytes: 3 * GiB };
  it("auto allocates up front when the guest's memory and 1 GiB more are free now", () => {
    expect(preallocDecision('auto', 2048, host)).toEqual({ prealloc: true });
  });
  it('auto declines past that, saying how much is free and that the guest gets pages as it touches them', () => {
    const r = preallocDecision('auto', 2049, host);
    expect(r.prealloc).toBe(false);
    expect(r.why).toMatch(
      /^not giving the guest its 2049 MiB up front \(memory_prealloc: auto\): the host has 3\.0 GiB free, .*it gets pages as it touches them$/,
    );
  });
  it("counts memory promised to other builds' starting VMs as taken, until each promise is kept", () => {
    expect(preallocDecision('auto', 2048, host, 0)).toEqual({ prealloc: true });
    const r = preallocDecision('auto', 2048, host, 1024);
    expect(r.prealloc).toBe(false);
    expect(r.why).toMatch(/3\.0 GiB free, of which 1024 MiB is promised to other builds' starting VMs, less than/);
    const before = preallocPromisedMiB();
    const keep = promisePrealloc(512);
    expect(preallocPromisedMiB()).toBe(before + 512);
    keep();
    keep();
    expect(preallocPromisedMiB()).toBe(before);
  });
  it("true and false are the template's call, whatever is free", () => {
    expect(preallocDecision(true, 4096, host)).toEqual({ prealloc: true });
    expect(preallocDecision(false, 64, host)).toEqual({ prealloc: false });
  });
});

describe('memoryFit (pure)', () => {
  const host = { totalBytes: 8 * GiB, freeBytes: 3 * GiB };
  it("more than the host's RAM is an error naming the host's RAM and a size that fits", () => {
    const r = memoryFit(900_000_000, host);
    expect(r.error?.message).toMatch(
      /^900000000 MiB \(858\.3 TiB\) is more than this host's RAM \(8\.0 GiB\); QEMU would fail to start with "Cannot allocate memory"/,
    );
    expect(r.error?.fix).toMatch(/memory: 4096 \(half of it\)/);
    expect(memoryFit(9216, host).error?.message).toMatch(/^9216 MiB \(9\.0 GiB\) is more than this host's RAM/);
  });
  it('more than what is free now is a warning; what fits says nothing', () => {
    expect(memoryFit(4096, host)).toEqual({
      warning: expect.stringMatching(
        /^4096 MiB \(4\.0 GiB\) is more than this host's free memory now \(3\.0 GiB of 8\.0 GiB\).*e\.g\. 3072/,
      ),
    });
    expect(memoryFit(2048, host)).toEqual({});
  });
});

describe('validation', () => {
  const yaml = (memory: string) => {
    const file = path.join(dir, 'mem.yaml');
    writeFileSync(
      file,
      `builds:
  - name: m
    output_directory: ${path.join(dir, 'out')}
    source:
      base_image: ${repoRoot}/fixtures/images/tiny.qcow2
      checksum: none
      memory: ${memory}
      cloud_init: false
      communicator:
        username: root
        private_key_file: ${repoRoot}/fixtures/keys/insecure_ed25519
`,
    );
    return file;
  };

  it("memory: 900000000 fails at validate with the field, its line, the host's RAM and the fix", () => {
    const file = yaml('900000000');
    let err: unknown;
    try {
      loadTemplate(file, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TemplateError);
    const msg = (err as Error).message;
    expect(msg).toContain(
      `${file}:7: builds[0].source.memory: 900000000 MiB (858.3 TiB) is more than this host's RAM (${formatBytes(os.totalmem())})`,
    );
    expect(msg).toMatch(/fix: give the guest less than the host has, e\.g\. memory: \d+ \(half of it\)/);
  });

  it("a Packer template's memory is checked the same way, at its Packer line", () => {
    const file = path.join(dir, 'mem.pkr.hcl');
    writeFileSync(
      file,
      `source "qemu" "m" {
  iso_url      = "${repoRoot}/fixtures/images/tiny.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_private_key_file = "${repoRoot}/fixtures/keys/insecure_ed25519"
  output_directory = "${path.join(dir, 'out-pkr')}"
  memory       = 900000000
}
build { sources = ["source.qemu.m"] }
`,
    );
    let err: unknown;
    try {
      loadTemplate(file, { env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TemplateError);
    expect((err as Error).message).toMatch(/mem\.pkr\.hcl:8: .*is more than this host's RAM .*\(Packer: memory\)/);
  });

  it('a size that fits this host loads', () => {
    expect(loadTemplate(yaml('256'), {}).template.builds[0]!.source.memory).toBe(256);
  });
});
