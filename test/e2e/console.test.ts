// kiln console, end to end: a tiny build waits in a provisioner until a file appears in the guest;
// from a real terminal (node-pty) we attach to its serial console (a root shell on ttyS0), run a
// command, detach with Ctrl-], attach again to create the file, and the build finishes normally.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot, writeTinyShellTemplate } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { KilnTerminal } from '../helpers/pty.js';
import { expectNoLeftovers, snapshotLeftovers } from '../helpers/leftovers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-console-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('kiln console', () => {
  it("attaches to a running build's serial console, runs a command, detaches; the build goes on", async () => {
    const name = 'console-demo';
    const { file, out } = writeTinyShellTemplate(dir, name, [
      `'while [ ! -f /tmp/go ]; do sleep 0.2; done'`,
      `'echo released-from-the-console'`,
    ]);
    const before = snapshotLeftovers({ build: name });
    const build = execa('node', [path.join(repoRoot, 'bin/kiln.js'), 'build', file, '--no-cache', '--events=json'], {
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    let finished = false;
    void build.then(() => {
      finished = true;
    });
    let events = '';
    // Driven by the event stream: attach once the provisioner is waiting for us.
    await new Promise<void>((resolve, reject) => {
      build.stdout!.on('data', (chunk: Buffer) => {
        events += chunk.toString();
        if (events.includes('"type":"provisioner-start"')) resolve();
      });
      void build.then((r) => reject(new Error(`the build ended before provisioning:\n${String(r.stderr)}`)));
    });

    // A name that is not running: exit 1, and the list shows ours.
    const none = await kiln(['console', 'no-such-build']);
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toContain('error: no build named "no-such-build" is running; running builds:');
    expect(none.stderr).toMatch(new RegExp(`\\n  ${name}  \\(kiln pid ${build.pid}, started `));

    const first = new KilnTerminal(['console', name]);
    const at = (await first.waitFor(/Ctrl-\] detaches; the VM keeps running/, 30_000)).end;
    // The fact that the shell ran it is its output, not a prompt: the guest's dropbear logs kiln's SSH
    // polls onto the same console, so a prompt line can read "/ # [151] Child connection from ...".
    first.write('echo kiln-console-$((40+2))\r');
    await first.waitFor(/kiln-console-42/, 60_000, at); // the typed line shows $((40+2)); only output shows 42
    first.write('\x1d');
    expect((await first.exited).exitCode, first.output).toBe(0);
    expect(first.output).toMatch(/detached from "console-demo"; the VM keeps running/);
    expect(finished).toBe(false); // still waiting in its provisioner

    // Attach again, release the provisioner, and stay attached: the console closes when the build
    // powers the VM off.
    const second = new KilnTerminal(['console', name]);
    await second.waitFor(/Ctrl-\] detaches/, 30_000);
    second.write('touch /tmp/go\r');
    expect((await second.exited).exitCode, second.output).toBe(0);
    expect(second.output).toMatch(/the serial console of "console-demo" closed: its VM stopped/);

    const r = await build;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(events).toContain('released-from-the-console');
    expect((await execa('qemu-img', ['check', path.join(out, `${name}.qcow2`)], { reject: false })).exitCode).toBe(0);
    expectNoLeftovers(before);
  }, 600_000);
});
