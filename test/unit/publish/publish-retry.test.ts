// The publish targets' retry policy (exponential backoff, transient failures only, a veto before each
// retry) and the OCI push's pure pieces: the layer tar's size without reading it, and the "this tag
// already holds a containerDisk of this disk" check that lets a re-run skip reading the disk.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerDiskLayer, layerOfSameDisk, layerSize } from '../../../src/publish/oci.js';
import {
  HttpStatusError,
  PublishError,
  defaultRetryPolicy,
  isTransient,
  retryDelay,
  withRetries,
} from '../../../src/publish/target.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-publish-retry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function harness() {
  const waits: number[] = [];
  const lines: string[] = [];
  return {
    waits,
    lines,
    ctx: {
      signal: new AbortController().signal,
      log: (l: string) => {
        lines.push(l);
      },
    },
    sleep: async (ms: number) => {
      waits.push(ms);
    },
  };
}
const reset = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });

describe('retry policy', () => {
  it('waits 250, 500, 1000 ms ... capped at 8 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => retryDelay(n))).toEqual([250, 500, 1000, 2000, 4000, 8000, 8000]);
    expect(defaultRetryPolicy.attempts).toBe(4);
  });

  it('5xx, 429, 408 and connection resets are transient; 4xx, bad credentials and plain errors are not', () => {
    expect([500, 502, 503, 429, 408].map((s) => isTransient(new HttpStatusError('x', s)))).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect([400, 401, 403, 404, 409].map((s) => isTransient(new HttpStatusError('x', s)))).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
    expect(isTransient(reset())).toBe(true);
    expect(
      isTransient(
        new TypeError('fetch failed', {
          cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }),
        }),
      ),
    ).toBe(true);
    expect(isTransient(new PublishError('refused'))).toBe(false);
    expect(isTransient(new Error('the registry stored manifest x as y'))).toBe(false);
  });

  it('retries a transient failure with backoff and returns the first success', async () => {
    const h = harness();
    let calls = 0;
    const r = await withRetries(
      'upload',
      h.ctx,
      async () => {
        calls++;
        if (calls < 3) throw new HttpStatusError('upload: HTTP 503', 503);
        return 'ok';
      },
      { sleep: h.sleep },
    );
    expect([r, calls, h.waits]).toEqual(['ok', 3, [250, 500]]);
    expect(h.lines).toEqual([
      'upload: HTTP 503; retrying in 250 ms (attempt 2 of 4)',
      'upload: HTTP 503; retrying in 500 ms (attempt 3 of 4)',
    ]);
  });

  it("gives up after the last attempt with that attempt's error", async () => {
    const h = harness();
    let calls = 0;
    await expect(
      withRetries(
        'x',
        h.ctx,
        async () => {
          calls++;
          throw reset();
        },
        { sleep: h.sleep },
      ),
    ).rejects.toThrow('socket hang up');
    expect([calls, h.waits]).toEqual([4, [250, 500, 1000]]);
  });

  it('does not retry a non-transient failure, nor when the veto says the remote side cannot take it again', async () => {
    const h = harness();
    let calls = 0;
    await expect(
      withRetries(
        'x',
        h.ctx,
        async () => {
          calls++;
          throw new HttpStatusError('HTTP 404', 404);
        },
        { sleep: h.sleep },
      ),
    ).rejects.toThrow('404');
    expect(calls).toBe(1);
    let vetoed = 0;
    await expect(
      withRetries(
        'x',
        h.ctx,
        async () => {
          calls++;
          throw reset();
        },
        {
          sleep: h.sleep,
          stillRetryable: async () => {
            vetoed++;
            return false;
          },
        },
      ),
    ).rejects.toThrow('socket hang up');
    expect([calls, vetoed, h.waits]).toEqual([2, 1, []]);
  });

  it('an interrupt during the wait stops at once with the interrupt', async () => {
    const controller = new AbortController();
    const p = withRetries(
      'x',
      {
        signal: controller.signal,
        log: () => {
          controller.abort(new Error('interrupted'));
        },
      },
      async () => {
        throw reset();
      },
      { baseDelayMs: 60_000 },
    );
    await expect(p).rejects.toThrow('interrupted');
  });
});

describe('OCI containerDisk layer', () => {
  it('layerSize is the tar containerDiskLayer produces', async () => {
    for (const size of [0, 1, 511, 512, 513, 4096 + 17]) {
      const file = path.join(dir, `d${size}.qcow2`);
      writeFileSync(file, Buffer.alloc(size, 7));
      let n = 0;
      for await (const c of containerDiskLayer({ name: 'd.qcow2', path: file, format: 'qcow2', size, sha256: 'x' }))
        n += (c as Buffer).length;
      expect(n, `size ${size}`).toBe(layerSize({ size }));
    }
  });

  it('a tag holding a kiln containerDisk of the same disk gives its layer; anything else does not', () => {
    const artifact = { name: 'pub.qcow2', path: '/x', format: 'qcow2', size: 10, sha256: 'a'.repeat(64) };
    const layer = {
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      digest: `sha256:${'b'.repeat(64)}`,
      size: 3072,
    };
    const ours = {
      annotations: { 'org.opencontainers.image.title': 'pub.qcow2', 'io.kiln.disk.sha256': 'a'.repeat(64) },
      layers: [layer],
    };
    expect(layerOfSameDisk(ours, artifact)).toEqual({ digest: layer.digest, size: 3072 });
    expect(
      layerOfSameDisk(
        { ...ours, annotations: { ...ours.annotations, 'io.kiln.disk.sha256': 'c'.repeat(64) } },
        artifact,
      ),
    ).toBeUndefined();
    expect(
      layerOfSameDisk(
        { ...ours, annotations: { ...ours.annotations, 'org.opencontainers.image.title': 'other.qcow2' } },
        artifact,
      ),
    ).toBeUndefined();
    expect(layerOfSameDisk({ ...ours, layers: [layer, layer] }, artifact)).toBeUndefined();
    expect(
      layerOfSameDisk(
        { ...ours, layers: [{ ...layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] },
        artifact,
      ),
    ).toBeUndefined();
    expect(layerOfSameDisk({}, artifact)).toBeUndefined();
  });
});
