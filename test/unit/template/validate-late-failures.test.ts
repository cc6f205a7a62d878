// Mistakes that used to pass `kiln validate` and fail only once the VM was built, or worse: an output
// named "..", a compress step for a format no output writes, a relative guest path for an upload,
// cd_content names that climb out of the CD, env names sh cannot export, cloud_init: { enabled: false }.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-validate-late-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
writeFileSync(path.join(dir, 'installer.iso'), 'x');
writeFileSync(path.join(dir, 'key'), 'x');
let n = 0;

/** Loads a one-build template from the lines after "- name: late" (indented 4). */
function load(build: string) {
  const file = path.join(dir, `t${++n}.yaml`);
  writeFileSync(file, `builds:\n  - name: late\n${build}`);
  return { file, build: () => loadTemplate(file).template.builds[0]! };
}
function problem(build: string): string {
  const { build: run } = load(build);
  try {
    run();
  } catch (e) {
    if (e instanceof TemplateError) return e.message;
    throw e;
  }
  throw new Error('expected a template error');
}

const source = '    source:\n      base_image: base.qcow2\n      checksum: none\n';
const iso =
  '    source:\n      iso: installer.iso\n      checksum: none\n      disk_size: 1G\n      communicator: { type: none }\n';

describe('mistakes caught at validate time instead of late in a build', () => {
  it.each(['.', '..'])('refuses an output named %s', (name) => {
    const msg = problem(`${source}    outputs: [{ format: qcow2, name: '${name}' }]\n`);
    expect(msg).toContain('builds[0].outputs[0].name: "." and ".." name directories, not a file');
    expect(msg).toContain('fix: give the artifact a file name');
  });
  it('accepts output names with dots in them', () => {
    expect(
      load(
        `${source}    outputs: [{ format: qcow2, name: '..disk.qcow2' }, { format: raw, name: web.v1.raw }]\n`,
      ).build().outputs,
    ).toHaveLength(2);
  });

  it('refuses a compress format that no output produces, listing those that are', () => {
    const msg = problem(
      `${source}    outputs: [{ format: qcow2 }, { format: vmdk }]\n    post_processors:\n      - { type: compress, formats: [vmdk, raw] }\n`,
    );
    expect(msg).toMatch(/:8: builds\[0\]\.post_processors\[0\]\.formats\[1\]: no output of this build is raw/);
    expect(msg).toContain('fix: list formats the build writes (qcow2, vmdk), or add an output with format: raw');
    expect(
      load(
        `${source}    outputs: [{ format: raw }]\n    post_processors: [{ type: compress, formats: [raw] }, { type: compress, algorithm: xz }]\n`,
      ).build().post_processors,
    ).toHaveLength(2);
  });

  it('refuses an upload to a relative guest path; downloads go to host paths, relative to the template', () => {
    for (const kind of ['content: hi', 'source: key']) {
      const msg = problem(`${source}    provisioners: [{ type: file, ${kind}, destination: etc/motd }]\n`);
      expect(msg).toContain(
        "builds[0].provisioners[0].destination: an upload's destination is a path in the guest, and it must be absolute",
      );
      expect(msg).toContain('fix: write an absolute guest path, e.g. destination: /tmp/motd');
    }
    const b = load(
      `${source}    provisioners: [{ type: file, direction: download, source: /etc/os-release, destination: got/os-release }]\n`,
    ).build();
    expect(b.provisioners[0]).toMatchObject({ destination: path.join(dir, 'got/os-release') });
  });

  it.each(['/ks.cfg', '../ks.cfg', 'a/../../ks.cfg', '..', '', '.', './'])('refuses the cd_content name %j', (name) => {
    const msg = problem(`${iso}      cd_content: { '${name}': text }\n`);
    expect(msg).toContain('a cd_content name is a path inside the CD: relative, without ".." parts');
    expect(msg).toContain("fix: write it relative to the CD's root, e.g. ks.cfg");
  });
  it('accepts cd_content names inside the CD', () => {
    expect(
      Object.keys(
        load(`${iso}      cd_content: { ks.cfg: a, kickstart/ks.cfg: b, ./x/..y: c }\n`).build().source.cd_content,
      ),
    ).toHaveLength(3);
  });

  const envOwners: [string, string][] = [
    ['provisioners[0]', "    provisioners: [{ type: shell, inline: ['true'], env: ENV }]\n"],
    ['provisioners[0]', "    provisioners: [{ type: shell-local, inline: ['true'], env: ENV }]\n"],
    ['post_processors[0]', "    post_processors: [{ type: shell-local, inline: ['true'], env: ENV }]\n"],
  ];
  it.each(envOwners)('refuses env names sh cannot export (%s: %s)', (field, owner) => {
    for (const bad of ['MY-VAR', '1ST', 'A B', 'X=Y', '']) {
      const msg = problem(`${source}${owner.replace('ENV', `{ '${bad}': v }`)}`);
      expect(msg).toContain(`builds[0].${field}.env.${bad}: not an environment variable name`);
      expect(msg).toContain('fix: use letters, digits and "_", not starting with a digit');
    }
    expect(load(`${source}${owner.replace('ENV', '{ _A1: v, lower_case: 2, B: true }')}`).build()).toBeDefined();
  });

  it('treats cloud_init: { enabled: false } as cloud_init: false', () => {
    const b = load(
      `${source}      cloud_init: { enabled: false, delivery: cdrom }\n      communicator: { private_key_file: key }\n`,
    ).build();
    expect(b.source.cloud_init).toBe(false);
    // ...so the check that a build key needs cloud-init applies to it too.
    expect(problem(`${source}      cloud_init: { enabled: false }\n`)).toContain(
      'builds[0].source.cloud_init: without cloud-init kiln cannot give the guest its build key',
    );
    expect(
      load(`${source}      cloud_init: { enabled: true, delivery: cdrom }\n`).build().source.cloud_init,
    ).toMatchObject({ enabled: true, delivery: 'cdrom' });
  });
});
