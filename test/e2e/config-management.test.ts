// The ansible provisioner end to end, through kiln, on the tiny guest (no Python: raw tasks; its host key
// verified from kiln's own connection, not injected): editing one role file re-runs the build from that
// provisioner only, and a failing task's error names the task with what the host answered. Ansible on a
// Debian guest (a role with a template, a group variable and a handler, become, a sensitive extra var)
// runs in build-debian.test.ts's build, which boots that guest anyway.
// ansible-local and puppet-masterless need Ansible and Puppet inside the guest, about 2.5 min of
// apt-get under TCG: their end-to-end test is test/install/config-management.test.ts (make test-install).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, outputLines } from '../helpers/kiln.js';
import { writeFiles } from '../helpers/files.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-cm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ansible provisioner', () => {
  it('on the tiny guest: editing one role file re-runs the build from that provisioner only; a failing task names itself', async () => {
    const root = path.join(dir, 'tiny');
    const role = (tasks: string) => writeFiles(root, { 'play/roles/marker/tasks/main.yml': tasks });
    writeFiles(root, { 'play/site.yml': '- hosts: all\n  gather_facts: false\n  roles: [marker]\n' });
    role('- name: Write the marker\n  ansible.builtin.raw: echo "v1 {{ kiln_build_name }}" > /root/marker\n');
    const file = path.join(root, 'tiny.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: cm-tiny
    output_directory: ${path.join(root, 'out')}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo before > /root/before']
      - type: ansible
        playbook_file: play/site.yml
      - type: shell
        inline: ['cat /root/before /root/marker']
    outputs:
      - format: qcow2
`,
    );
    const env = { KILN_CACHE_DIR: path.join(root, 'cache') };
    const first = await kiln(['build', file, '--events=json'], env);
    expect(first.exitCode, first.stderr.slice(-3000)).toBe(0);
    expect(outputLines(first.events, 'provisioner 3')).toEqual(['before', 'v1 cm-tiny']);

    // One role file edited: the shell provisioner before comes from the cache, the ansible one re-runs
    // (its edited task is what fails, so the error must name it with what the guest printed).
    role(
      '- name: Write the marker\n  ansible.builtin.raw: echo "v2 {{ kiln_build_name }}" > /root/marker\n' +
        '- name: Check the disk is big enough\n  ansible.builtin.raw: echo "only 1 MiB free" >&2; exit 7\n',
    );
    const second = await kiln(['build', file, '--events=json', '--force'], env);
    expect(second.exitCode).toBe(1);
    expect(second.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0]);
    expect(second.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([1]);
    expect(outputLines(second.events, 'provisioner 2').filter((l) => /^(changed|fatal):/.test(l))).toEqual([
      'changed: [default]',
      expect.stringMatching(/^fatal: \[default\]: FAILED! => /),
    ]);
    const error = String(second.events.find((e) => e.type === 'build-end')?.error);
    expect(error).toMatch(
      /provisioner 2: ansible-playbook exited with 2 \(a task failed\):\n {2}task "marker : Check the disk is big enough" failed on default:\n[^]*only 1 MiB free/,
    );
    expect(readFileSync(path.join(root, 'out', 'manifest.json'), 'utf8')).toContain('"cm-tiny"'); // the first build's artifact stays
  }, 600_000);
});
