#!/usr/bin/env node
// `BENCH_ONLY=rss make bench`: kiln's own peak memory while it converts a disk holding 4 GiB of data.
// The base is the tiny fixture grown to 4.5 GiB with 4 GiB written past its partition (qemu-io, so
// no guest has to write it); kiln boots it, runs one command, trims, shuts down, converts it to qcow2
// and VMDK at once and digests both. The figure is the build-end event's peakRssBytes: the kiln
// process's maxRSS (QEMU and qemu-img are other processes). Target (issue 13): under 200 MiB.
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { root } from './debian-guest.mjs';

const GiB = 2 ** 30;

export async function peakMemory() {
  const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-rss-'));
  try {
    const base = path.join(work, 'base.qcow2');
    await execa('qemu-img', ['convert', '-O', 'qcow2', path.join(root, 'fixtures/images/tiny.qcow2'), base]);
    await execa('qemu-img', ['resize', '-q', base, String(4.5 * GiB)]);
    // The tiny disk ends at 512 MiB: its file system never sees (nor trims) what lies past it.
    for (let i = 0; i < 4; i++)
      await execa('qemu-io', ['-f', 'qcow2', '-c', `write -q -P ${0x41 + i} ${512 + i * 1024}M 1G`, base]);
    const template = path.join(work, 'rss.yaml');
    writeFileSync(
      template,
      [
        'builds:',
        '  - name: rss',
        `    output_directory: ${path.join(work, 'out')}`,
        '    source:',
        `      base_image: ${base}`,
        '      checksum: none',
        '      cpus: 1',
        '      memory: 256',
        '      cloud_init: false',
        '      communicator:',
        '        username: root',
        `        private_key_file: ${path.join(root, 'fixtures/keys/insecure_ed25519')}`,
        '        trust_on_first_use: true',
        '        timeout: 5m',
        '    provisioners:',
        '      - type: shell',
        '        inline: ["true"]',
        '    outputs:',
        '      - format: qcow2',
        '      - format: vmdk',
        '',
      ].join('\n'),
    );
    const started = performance.now();
    const r = await execa('node', [path.join(root, 'bin/kiln.js'), 'build', template, '--no-cache', '--events=json'], {
      reject: false,
    });
    const total = performance.now() - started;
    if (r.exitCode !== 0) throw new Error(`rss bench build failed:\n${r.stderr.split('\n').slice(-20).join('\n')}`);
    const events = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    const end = events.find((e) => e.type === 'build-end');
    const convert = events.find((e) => e.type === 'step-end' && e.step === 'convert disk');
    const artifacts = events.filter((e) => e.type === 'artifact');
    const mib = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    console.log(
      `\nkiln's peak memory, converting a disk with 4 GiB of data (tiny guest grown to 4.5 GiB; outputs ${artifacts.map((a) => `${a.format} ${mib(a.size)}`).join(', ')})`,
    );
    console.log(
      `  build ${(total / 1000).toFixed(1)} s, of which convert + check + sha256 ${(convert.ms / 1000).toFixed(1)} s`,
    );
    console.log(`  kiln peak RSS ${mib(end.peakRssBytes)} (target: under 200 MiB)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await peakMemory();
