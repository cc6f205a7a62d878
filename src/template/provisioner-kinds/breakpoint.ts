/** breakpoint: waits for Enter on the terminal (to look at the guest mid-build), or does nothing without one. */
import { z } from 'zod';
import { defineKind } from './kind.js';
import { kindObject } from './common.js';

export const breakpointSchema = kindObject('breakpoint', {
  note: z.string().default('breakpoint'),
  disable: z.boolean().default(false),
});

export type BreakpointProvisioner = z.output<typeof breakpointSchema>;

export const breakpoint = defineKind(breakpointSchema, {
  summary: 'pauses the build until Enter is pressed',
  describe: (p) => `breakpoint (${p.note})`,
  resolvePaths() {},
  hostInputs: () => [],
  needs: 'nothing',
  fromPacker(m) {
    m.common();
    m.r.note = m.str('note');
    const d = m.take('disable');
    if (d) m.r.disable = d.value === true;
  },
});
