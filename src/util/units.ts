/** Parsers for the human units templates use: durations ("1m30s", "500ms") and sizes ("20G"). Here, below every layer, so that a CLI flag (--keep-size) and the boot-command grammar read them as templates do. */

const durationPart = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
const durationWhole = /^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$/;

/** Milliseconds for "90s", "1m30s", "2h", "250ms", or a bare number of seconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') return value * 1000;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  if (!durationWhole.test(text))
    throw new Error(`"${value}" is not a duration; write e.g. "30s", "5m", "1m30s" or "500ms"`);
  const factor: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  for (const m of text.matchAll(durationPart)) ms += Number(m[1]) * (factor[m[2]!] ?? 0);
  return ms;
}

const sizeFactor: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Bytes for "20G", "512M", "2GiB", "1T", or a bare number of bytes. Binary multiples, as qemu-img. */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') return value;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) throw new Error(`"${value}" is not a size; write e.g. "20G", "512M" or a number of bytes`);
  return Math.round(Number(m[1]) * sizeFactor[m[2]!.toUpperCase()]!);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  return `${m}m${Math.round((ms % 60_000) / 1000)}s`;
}

/** A duration setting written back the way a template writes it ("1h", "1m30s", "500ms"): parseDuration's inverse. */
export function durationSetting(ms: number): string {
  if (ms === 0) return '0s';
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n) {
      parts.push(`${n}${unit}`);
      rest -= n * size;
    }
  }
  if (rest) parts.push(`${Math.round(rest * 1000) / 1000}ms`);
  return parts.join('');
}
