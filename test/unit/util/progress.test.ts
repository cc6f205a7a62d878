import { describe, expect, it } from 'vitest';
import { qemuImgProgressReader, risingPercent } from '../../../src/util/progress.js';

describe('risingPercent', () => {
  it('passes one figure per whole percent, never a lower one, and always the end', () => {
    const seen: number[] = [];
    const report = risingPercent((p) => seen.push(p));
    for (const p of [0, 0.4, 1.01, 1.5, 0.9, 2.18, 2.18, 57.333, 57.9, 99.6, 100, 100]) report(p);
    expect(seen).toEqual([0, 1.01, 2.18, 57.33, 99.6, 100]);
  });

  it('clamps figures outside 0-100', () => {
    const seen: number[] = [];
    const report = risingPercent((p) => seen.push(p));
    report(-3);
    report(140);
    expect(seen).toEqual([0, 100]);
  });

  it('bounds a per-chunk download to at most 101 events', () => {
    const seen: number[] = [];
    const report = risingPercent((p) => seen.push(p));
    const total = 500 * 2 ** 20;
    for (let done = 0; done <= total; done += 65536) report((done / total) * 100);
    expect(seen.length).toBe(101);
    expect(seen.at(-1)).toBe(100);
  });
});

describe('qemuImgProgressReader', () => {
  it('reports each figure once, in order, however the output is split', () => {
    const out = [0, 1.01, 2.18, 3.4, 4.62, 50, 100].map((p) => `    (${p.toFixed(2)}/100%)\r`).join('');
    for (const size of [1, 3, 7, 17, 64, out.length]) {
      const seen: number[] = [];
      const read = qemuImgProgressReader((p) => seen.push(p));
      for (let i = 0; i < out.length; i += size) read(out.slice(i, i + size));
      expect(seen, `chunks of ${size}`).toEqual([0, 1.01, 2.18, 3.4, 4.62, 50, 100]);
    }
  });

  it('ignores text that is not a figure', () => {
    const seen: number[] = [];
    const read = qemuImgProgressReader((p) => seen.push(p));
    read('qemu-img: warning: something\n    (10.00/100%)\r');
    read('x'.repeat(1000));
    read('    (20.00/100%)\r');
    expect(seen).toEqual([10, 20]);
  });
});
