/** Step: wait boot_wait, then type boot_command on the keyboard (QMP) or the serial console. */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Step } from '../step.js';
import { need, onCachedLayer } from '../state.js';
import { parseBootCommands } from '../../bootcommand/parse.js';
import { KeyboardDriver, SerialDriver, type TypingDriver } from '../../bootcommand/drivers.js';
import { runBootCommand } from '../../bootcommand/run.js';
import { interpolateString } from '../../template/interpolate.js';
import { formatDuration } from '../../template/units.js';

export const bootCommandStep: Step = {
  name: 'type boot command',
  enabled: (ctx) => ctx.build.source.boot_command.length > 0,
  async run(ctx) {
    const src = ctx.build.source;
    if (onCachedLayer(ctx.state) && src.media.kind === 'iso') {
      ctx.log('boot command skipped: the disk comes from a cached layer, installed already', 'debug');
      return;
    }
    const lines = parseBootCommands(src.boot_command);
    const wait = src.boot_wait;
    if (wait) await sleep(wait, undefined, { signal: ctx.signal });
    const interval = src.boot_key_interval;
    const driver: TypingDriver =
      src.boot_console === 'serial'
        ? new SerialDriver(path.join(ctx.state.workDir, 'serial.sock'), interval)
        : new KeyboardDriver(need(ctx.state, 'qmp'), interval);
    const started = performance.now();
    await runBootCommand(lines, driver, {
      serialLog: need(ctx.state, 'serialLog'),
      signal: ctx.signal,
      render: (text) => String(interpolateString(text, { build: ctx.buildValues() })),
      onNode: (node) => {
        if (node.kind === 'waitFor')
          ctx.log(`boot command: waiting for ${String(node.pattern)} on the serial console`, 'debug');
      },
    });
    ctx.log(`boot command typed (${src.boot_console}) in ${formatDuration(performance.now() - started)}`);
  },
};
