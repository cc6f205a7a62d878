// Checksumming streams: digesting a multi-GiB file keeps memory flat (measured in a child process),
// and the chunked read under it hands over every byte once, in order, and closes its file.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
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

describe('forEachChunk (the read under every file digest)', () => {
  it('hands over every byte in order, for sizes around the chunk size; digests agree with one read of the file', async () => {
    const { fileDigests, forEachChunk } = await import('../../../src/cache/digest.js');
    const chunk = 4096;
    for (const size of [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 17]) {
      const file = path.join(dir, `f-${size}`);
      const data = randomBytes(size);
      writeFileSync(file, data);
      const seen: Buffer[] = [];
      // Copies: the two buffers are read into again once a chunk is handed over.
      await forEachChunk(file, (c) => seen.push(Buffer.from(c)), chunk);
      expect(Buffer.concat(seen).equals(data)).toBe(true);
      expect(seen.every((c) => c.length > 0 && c.length <= chunk)).toBe(true);
      expect(await fileDigests(file, ['sha256', 'sha512'])).toEqual({
        sha256: createHash('sha256').update(data).digest('hex'),
        sha512: createHash('sha512').update(data).digest('hex'),
      });
    }
  });

  it('a failing handler rejects with its error and leaves no file open', async () => {
    const { forEachChunk } = await import('../../../src/cache/digest.js');
    const file = path.join(dir, 'fail');
    writeFileSync(file, randomBytes(64 * 1024));
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    const failure = new Error('stop here');
    await expect(
      forEachChunk(
        file,
        () => {
          throw failure;
        },
        4096,
      ),
    ).rejects.toBe(failure);
    expect(open()).toBe(before);
  });
});
