/** Step: run the build's provisioners in order. */
import type { Step } from '../step.js';
import { appliesTo, describeProvisioner, runProvisioner } from '../../provisioners/index.js';

export const provisionStep: Step = {
  name: 'provision',
  enabled: (ctx) => ctx.build.provisioners.length > 0,
  async run(ctx) {
    const list = ctx.build.provisioners;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      if (!appliesTo(p, ctx.build.name)) continue;
      const started = performance.now();
      ctx.events.emit({ type: 'provisioner-start', build: ctx.build.name, index: i, provisioner: describeProvisioner(p) });
      await runProvisioner(ctx, p, i);
      const ms = performance.now() - started;
      ctx.state.timings[`provisioner ${i + 1}`] = ms;
      ctx.events.emit({ type: 'provisioner-end', build: ctx.build.name, index: i, provisioner: describeProvisioner(p), ms });
    }
  },
};
