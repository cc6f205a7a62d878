import { describe, expect, it } from 'vitest';
import { formatBytes, parseDuration, parseSize } from '../../../src/template/units.js';

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['1m30s', 90_000],
    ['2h', 7_200_000],
    ['250ms', 250],
    ['1.5s', 1500],
    ['45', 45_000],
  ])('%s -> %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));
  it('takes numbers as seconds', () => expect(parseDuration(3)).toBe(3000));
  it.each(['', 'soon', '5 minutes', '1x', 'm5'])('rejects %j with a hint', (text) => {
    expect(() => parseDuration(text)).toThrow(/not a duration; write e.g./);
  });
});

describe('parseSize', () => {
  it.each([
    ['20G', 20 * 2 ** 30],
    ['512M', 512 * 2 ** 20],
    ['2GiB', 2 * 2 ** 30],
    ['1T', 2 ** 40],
    ['4096', 4096],
    ['1.5G', 1.5 * 2 ** 30],
  ])('%s -> %d bytes', (text, bytes) => expect(parseSize(text)).toBe(bytes));
  it.each(['big', '10X', '-1G', ''])('rejects %j', (text) => expect(() => parseSize(text)).toThrow(/not a size/));
  it('formats bytes', () => expect(formatBytes(27.8 * 2 ** 20)).toBe('27.8 MiB'));
});
