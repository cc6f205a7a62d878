// What the shell provisioner sends to the guest's shell: every value and path one quoted word, and env
// keys that are not variable names refused (the template check comes first; this is the last line).
// Each command is run by the local /bin/sh, as the guest's would run it.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { shellQuote } from '../../../src/communicator/remote-command.js';
import { shellEnv } from '../../../src/provisioners/context.js';
import { executeCommand } from '../../../src/provisioners/shell.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'shell-quote-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sh = (command: string) => spawnSync('/bin/sh', ['-c', command], { encoding: 'utf8', cwd: dir });

const hostile = [
  "it's",
  '$(touch pwned)',
  '`touch pwned`',
  'a"b',
  'back\\slash',
  'two\nlines',
  '; touch pwned #',
  '',
  '*',
  '${HOME}',
];

describe('shell quoting', () => {
  it('shellQuote makes any string one word that the shell reads back unchanged', () => {
    for (const s of hostile) expect(sh(`printf '%s' ${shellQuote(s)}`).stdout).toBe(s);
    expect(existsSync(path.join(dir, 'pwned'))).toBe(false);
  });

  it('shellEnv passes values verbatim and refuses keys that are not shell variable names', () => {
    const env = Object.fromEntries(hostile.map((v, i) => [`V_${i}`, v]));
    const r = sh(`${shellEnv(env)} env`);
    for (const [k, v] of Object.entries(env)) expect(r.stdout).toContain(`${k}=${v}\n`);
    expect(shellEnv({ _ok9: 1, B: true })).toBe("_ok9='1' B='true'");
    for (const key of ['9X', 'A-B', 'A B', 'X=$(id)', '', 'A;B', 'Ä'])
      expect(() => shellEnv({ [key]: 'v' }), key).toThrow(/not a shell variable name/);
  });

  it('execute_command gets the script path and the env as quoted words', () => {
    const folder = path.join(dir, 'remote folder; touch pwned');
    mkdirSync(folder);
    const script = path.join(folder, 'kiln-1.sh');
    writeFileSync(script, '#!/bin/sh\nprintf "%s|" "$0" "$GREETING"\n');
    chmodSync(script, 0o600);
    const command = executeCommand('chmod +x {{path}}; {{vars}} {{path}}', script, { GREETING: "it's $(touch pwned)" });
    const r = sh(command);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${script}|it's $(touch pwned)|`);
    expect(existsSync(path.join(dir, 'pwned'))).toBe(false);
    // sudo-style templates take the same words.
    expect(sh(executeCommand('env {{vars}} {{path}}', script, { GREETING: 'hi' })).stdout).toBe(`${script}|hi|`);
    // A plain path stays unquoted, so Packer-style templates that quote {{path}} themselves still work.
    const plain = path.join(dir, 'kiln-2.sh');
    writeFileSync(plain, '#!/bin/sh\nprintf "%s|" "$0" "$GREETING"\n');
    chmodSync(plain, 0o700);
    expect(sh(executeCommand('sh -c "{{path}}"', plain, {})).stdout).toBe(`${plain}||`);
    expect(sh(executeCommand("sh -c '{{vars}} {{path}}'", plain, { GREETING: 'hi' })).stdout).toBe(`${plain}|hi|`);
  });
});
