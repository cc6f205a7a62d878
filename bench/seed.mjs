// `BENCH_ONLY=seed`: the Debian fixture booted with kiln's seed and with a minimal one (a user and a
// key, as a plain Packer seed), rounds alternating which goes first: QEMU start -> SSH login, and
// QEMU start -> cloud-init done (what a build with cloud_init.wait: true waits for). On each guest
// booted with kiln's seed, kiln's clean-up script (the "remove build access" step) is then timed
// through the same SSH session, sudo included. Figures only; the load is printed beside them.
import os from 'node:os';
import { bootDebian } from './debian-guest.mjs';
import { cleanGuestScript } from '../dist/build/steps/clean-guest.js';

const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');

export async function seedBootTimes(rounds = Number(process.env.BENCH_ROUNDS ?? 3)) {
  const t = { kiln: { login: [], done: [] }, minimal: { login: [], done: [] } };
  const cleanup = [];
  const loads = [load()];
  for (let r = 0; r < rounds; r++) {
    for (const seed of r % 2 === 0 ? ['kiln', 'minimal'] : ['minimal', 'kiln']) {
      const g = await bootDebian({ seed });
      const loggedIn = performance.now();
      try {
        t[seed].login.push(g.loginMs);
        // cloud-init's last stage writes result.json: polled with the shell, the same for both seeds.
        await g.session.run('while [ ! -e /run/cloud-init/result.json ]; do sleep 0.2; done');
        t[seed].done.push(g.loginMs + performance.now() - loggedIn);
        if (seed === 'kiln') {
          let err = '';
          const started = performance.now();
          const res = await g.session.exec('sudo -n sh -s', {
            stdin: cleanGuestScript(true),
            stderr: (s) => {
              err += s;
            },
          });
          if (res.exitCode !== 0) throw new Error(`the clean-up script failed (exit ${res.exitCode}): ${err}`);
          cleanup.push(performance.now() - started);
        }
      } finally {
        await g.stop();
      }
      loads.push(load());
      console.log(
        `  round ${r + 1} ${seed}: login ${fmt(g.loginMs)}, cloud-init done ${fmt(t[seed].done.at(-1))}, load ${load()}`,
      );
    }
  }
  const row = (name, xs) => `${fmt(median(xs)).padStart(9)} [${xs.map(fmt).join(', ')}]`;
  console.log(
    `\nDebian fixture (TCG, 2 vCPUs), kiln's seed vs a minimal seed, medians of ${rounds} rounds alternating; load (1/5/15 min) ${loads[0]} at the start, ${loads.at(-1)} at the end`,
  );
  for (const [what, key] of [
    ['QEMU start -> SSH login', 'login'],
    ['QEMU start -> cloud-init done', 'done'],
  ]) {
    console.log(
      `  ${what.padEnd(30)} kiln ${row('kiln', t.kiln[key])}   minimal ${row('minimal', t.minimal[key])}   kiln/minimal ${(median(t.kiln[key]) / median(t.minimal[key])).toFixed(2)}`,
    );
  }
  console.log(`  ${'guest clean-up (sudo + script)'.padEnd(30)} ${row('cleanup', cleanup)}`);
  return { t, cleanup, loads };
}
