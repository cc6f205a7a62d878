// --events=json carries an error's fix as its own field: build-end (a build failing at its checksum
// check, which needs no QEMU) and publish-end (a manifest naming a host not confirmed with --allow-host,
// refused before anything is contacted).
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kiln } from '../../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-events-fix-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('--events=json fix field', { timeout: 120_000 }, () => {
  it("build-end has the failure's fix, and its error still ends with the fix line", async () => {
    writeFileSync(path.join(dir, 'base.qcow2'), 'x');
    const template = path.join(dir, 't.yaml');
    writeFileSync(
      template,
      `builds:\n  - name: a\n    source: { base_image: base.qcow2, checksum: "sha256:${'0'.repeat(64)}" }\n    output_directory: out\n`,
    );
    const r = await kiln(['build', template, '--events=json']);
    expect(r.exitCode).toBe(1);
    const end = r.events.find((e) => e.type === 'build-end')!;
    const fix = 'the file changed or the checksum is wrong; correct "checksum" or use "none"';
    expect(end).toMatchObject({ ok: false, fix });
    expect(end.error).toMatch(
      /^fetch base image: checksum mismatch for .*base\.qcow2: expected sha256:0+, got sha256:/,
    );
    expect(end.error).toMatch(new RegExp(`\\n  fix: ${fix.replace(/[.*"()]/g, '\\$&')}$`));
    expect(r.stderr).toContain(`  fix: ${fix}`);
  });

  it("publish-end has the refused target's fix", async () => {
    const data = Buffer.alloc(4096, 3);
    const artifact = path.join(dir, 'disk.qcow2');
    writeFileSync(artifact, data);
    const manifest = path.join(dir, 'manifest.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        build: 'b',
        artifacts: [
          {
            name: 'disk.qcow2',
            path: artifact,
            format: 'qcow2',
            size: data.length,
            sha256: createHash('sha256').update(data).digest('hex'),
          },
        ],
        // TEST-NET-3, and refused before any connection: kiln sends credentials only to confirmed hosts.
        published: [
          {
            target: 's3',
            type: 's3',
            format: 'qcow2',
            status: 'published',
            config: { type: 's3', bucket: 'images', endpoint: 'http://203.0.113.7:9000', force_path_style: true },
          },
        ],
      }),
    );
    const r = await kiln(['publish', '--events=json', manifest], {
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'secret-example',
    });
    expect(r.exitCode).toBe(1);
    const end = r.events.at(-1)!;
    const fix = `check the host is yours, then run kiln publish --allow-host 203.0.113.7:9000 ${manifest}`;
    expect(end).toMatchObject({ type: 'publish-end', ok: false, fix });
    expect(end.error).toMatch(
      /^publish target "s3": .* names S3 at 203\.0\.113\.7:9000, .*\n  fix: check the host is yours/,
    );
    expect(JSON.stringify(r.events)).not.toContain('secret-example');
  });
});
