/**
 * The value types fields share. Each checks the value as written (with a fix in its error) and then
 * parses it, so what the loader returns is typed: a duration in milliseconds, a size in bytes, memory
 * in MiB. Nothing after the loader parses a unit again.
 */
import { z } from 'zod';
import { parseDuration, parseSize } from '../../util/units.js';

/** A check whose failure carries its fix (errors.ts prints `params.fix` under the message). */
export const because = (message: string, fix: string) => ({ message, params: { fix } });

/** "1m30s", "500ms", "2h" or a number of seconds -> milliseconds. */
export const duration = z
  .union([z.string(), z.number().nonnegative()])
  .superRefine((v, ctx) => {
    try {
      parseDuration(v);
    } catch {
      ctx.addIssue({
        code: 'custom',
        ...because(`${JSON.stringify(v)} is not a duration`, 'write e.g. "30s", "5m", "1m30s" or "500ms"'),
      });
    }
  })
  .transform((v) => parseDuration(v));

/** "20G", "512M", "2GiB" or a number of bytes -> bytes. */
export const size = z
  .union([z.string(), z.number().int().positive()])
  .superRefine((v, ctx) => {
    try {
      parseSize(v);
    } catch {
      ctx.addIssue({
        code: 'custom',
        ...because(`${JSON.stringify(v)} is not a size`, 'write e.g. "20G", "512M" or a number of bytes'),
      });
    }
  })
  .transform((v) => parseSize(v));

/** MiB as a number, or a size string ("2G") -> MiB. QEMU wants at least 64 MiB either way. */
export const memory = z
  .union([z.number().int().min(64), z.string()])
  .superRefine((v, ctx) => {
    if (typeof v === 'number') return;
    let bytes: number;
    try {
      bytes = parseSize(v);
    } catch {
      ctx.addIssue({
        code: 'custom',
        ...because(
          `${JSON.stringify(v)} is not an amount of memory`,
          'write MiB as a number (memory: 2048) or a size (memory: "2G")',
        ),
      });
      return;
    }
    if (bytes < 64 * 2 ** 20)
      ctx.addIssue({
        code: 'custom',
        ...because(`${JSON.stringify(v)} is less than 64 MiB`, 'give at least 64 MiB, e.g. memory: 1024'),
      });
  })
  .transform((v) => (typeof v === 'number' ? v : Math.round(parseSize(v) / 2 ** 20)));
