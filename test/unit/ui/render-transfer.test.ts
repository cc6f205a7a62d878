// transfer-progress events on the terminal UI (src/ui/render.ts): off a terminal, a plain line per
// quarter of a transfer of known size, none for one of unknown size, none with --progress=never.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { humanRenderer, type ProgressMode } from '../../../src/ui/render.js';
import type { BuildEvent } from '../../../src/ui/events.js';

function render(events: BuildEvent[], progress: ProgressMode = 'auto'): string {
  let text = '';
  const stream = new Writable({
    write(chunk, _e, cb) {
      text += String(chunk);
      cb();
    },
  });
  const sink = humanRenderer({ stream, progress });
  for (const e of events) sink({ ...e, time: new Date(0).toISOString() });
  return text;
}

const step = (done: number, total?: number): BuildEvent => ({
  type: 'transfer-progress',
  build: 'web',
  index: 2,
  direction: 'upload',
  path: '/opt/app.tar',
  done,
  ...(total !== undefined ? { total } : {}),
});

describe('transfer progress rendering', () => {
  it('prints a line per quarter, with bytes, off a terminal', () => {
    const total = 256 * 2 ** 20;
    const text = render([0, 0.1, 0.3, 0.31, 0.6, 0.8, 1].map((f) => step(Math.round(f * total), total)));
    expect(text.trim().split('\n')).toEqual([
      'web: upload /opt/app.tar: 0% (0 B of 256.0 MiB)',
      'web: upload /opt/app.tar: 30% (76.8 MiB of 256.0 MiB)',
      'web: upload /opt/app.tar: 60% (153.6 MiB of 256.0 MiB)',
      'web: upload /opt/app.tar: 80% (204.8 MiB of 256.0 MiB)',
      'web: upload /opt/app.tar: 100% (256.0 MiB of 256.0 MiB)',
    ]);
  });

  it('prints nothing for an unknown size or with --progress=never', () => {
    expect(render([step(10), step(20)])).toBe('');
    expect(render([step(1, 4), step(4, 4)], 'never')).toBe('');
  });
});
