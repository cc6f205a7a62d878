// Checksumming streams: digesting a multi-GiB file keeps memory flat (measured in a child process).
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-digest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('streamed digests', () => {
  it('hash a 1 GiB file in well under 200 MiB of memory', async () => {
    const file = path.join(dir, 'big.img');
    const fd = openSync(file, 'w');
    // Sparse: cheap to make, still 1 GiB to read and hash, five times the memory bound (a reader that
    // buffered the file would show).
    ftruncateSync(fd, 2 ** 30);
    writeSync(fd, 'kiln', 2 ** 29);
    closeSync(fd);
    const script = `
      import { fileDigests } from '${path.join(repoRoot, 'dist/cache/digest.js')}';
      const d = await fileDigests(${JSON.stringify(file)}, ['sha256']);
      console.log(JSON.stringify({ ...d, maxRssKiB: process.resourceUsage().maxRSS }));`;
    const r = await execa('node', ['--input-type=module', '-e', script]);
    const result = JSON.parse(r.stdout);
    const expected = await execa('sh', ['-c', `sha256sum ${file} | cut -d' ' -f1`]);
    expect(result.sha256).toBe(expected.stdout.trim());
    expect(result.maxRssKiB / 1024).toBeLessThan(200);
  }, 600_000); // a deadline, not a speed check: it took over 120 s at load 16
});
