// The library entry point (src/index.ts): importing it reads no environment variable, and build()
// refuses bad options before it creates anything. (The end-to-end use is test/e2e/api.test.ts.)
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-api-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('library API', () => {
  it('reads no environment variable when imported', async () => {
    const read = new Set<string>();
    const real = process.env;
    process.env = new Proxy(real, {
      get: (t, k) => {
        if (typeof k === 'string') read.add(k);
        return Reflect.get(t, k) as unknown;
      },
    });
    try {
      const api = await import('../../src/index.js');
      expect(Object.keys(api)).toEqual(
        expect.arrayContaining([
          'loadTemplate',
          'build',
          'verify',
          'publish',
          'createDriver',
          'TemplateError',
          'BuildInterrupted',
          'version',
        ]),
      );
    } finally {
      process.env = real;
    }
    // Dependencies look at TERM, NO_COLOR and the like when loaded; kiln's own variables are the CLI's.
    expect([...read].filter((k) => k.startsWith('KILN_'))).toEqual([]);
  });

  it('build() refuses an unknown build name and onError "ask" without a prompt, creating nothing', async () => {
    const { build, loadTemplate } = await import('../../src/index.js');
    const file = path.join(dir, 't.yaml');
    writeFileSync(
      file,
      'builds:\n  - name: one\n    source: { base_image: base.qcow2, checksum: none, communicator: { type: none } }\n',
    );
    writeFileSync(path.join(dir, 'base.qcow2'), '');
    const tempDir = mkdtempSync(path.join(dir, 'tmp-'));
    const template = loadTemplate(file, {}, { cacheDir: path.join(dir, 'cache') });
    await expect(build(template, { only: ['two'], tempDir })).rejects.toThrow(
      /no build named "two" in .*t\.yaml \(builds: one\)/,
    );
    await expect(build(template, { onError: 'ask', tempDir })).rejects.toThrow(
      /onError "ask" needs a prompt callback \(options\.prompt\)/,
    );
    expect(readdirSync(tempDir)).toEqual([]);
  });
});
