// Real ansible-playbook (Debian's ansible-core) with the inventory, known_hosts and environment kiln
// builds, against an SSH server in this process whose commands run on the host: with the host key
// kiln verified it logs in and runs the play, and a failing task is named; with any other host key
// OpenSSH refuses the server before a single authentication attempt.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../../src/communicator/keys.js';
import { ansibleArgv, ansibleEnv, inventoryYaml, knownHostsLine } from '../../../src/provisioners/ansible-inventory.js';
import { AnsibleOutput } from '../../../src/provisioners/ansible-output.js';
import { stopControlMasters } from '../../../src/provisioners/ansible.js';
import type { AnsibleProvisioner } from '../../../src/template/provisioner-kinds/ansible.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-ansible-'));
const hostKey = generateKeyPair('guest-host-key');
const clientKey = generateKeyPair('kiln-build-test');
const clientBlob = Buffer.from(clientKey.publicKey.split(' ')[1]!, 'base64');
let authAttempts = 0;
let port = 0;

// A guest stand-in: accepts the build key only, runs exec requests with /bin/sh on this machine.
const server = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (client) => {
  client.on('authentication', (auth) => {
    authAttempts++;
    if (auth.method !== 'publickey' || !auth.key.data.equals(clientBlob)) {
      auth.reject(['publickey']);
      return;
    }
    if (!auth.signature) {
      auth.accept();
      return;
    } // the key query before the signature
    const key = ssh2.utils.parseKey(clientKey.publicKey);
    if (!(key instanceof Error) && !Array.isArray(key) && key.verify(auth.blob!, auth.signature, auth.hashAlgo))
      auth.accept();
    else auth.reject();
  });
  client.on('ready', () =>
    client.on('session', (acceptSession) => {
      const session = acceptSession();
      session.on('pty', (accept) => accept?.()); // Ansible's raw asks for a terminal (ssh -tt)
      session.on('exec', (acceptExec, _reject, info) => {
        const channel = acceptExec();
        const child = spawn('/bin/sh', ['-c', info.command], { cwd: dir });
        channel.pipe(child.stdin);
        // The exit status must go out before the channel ends, or ssh reports 255.
        child.stdout.pipe(channel, { end: false });
        child.stderr.pipe(channel.stderr, { end: false });
        child.on('close', (code) => {
          channel.exit(code ?? 1);
          channel.end();
        });
      });
    }),
  );
  client.on('error', () => {
    /* the client hung up (a refused host key ends the connection) */
  });
});

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

writeFileSync(
  path.join(dir, 'site.yml'),
  `
- hosts: all
  gather_facts: false
  tasks:
    - name: leave a mark
      ansible.builtin.raw: echo "{{ greeting }}" > ${path.join(dir, 'mark')}
    - name: this task fails
      ansible.builtin.raw: echo about to fail; exit 3
`,
);

/** ansible-playbook as the ansible provisioner runs it, trusting `knownKey` for the server. */
async function runPlaybook(name: string, knownKey: string, extraVars: Record<string, unknown>) {
  const work = path.join(dir, name);
  mkdirSync(path.join(work, 'cp'), { recursive: true });
  mkdirSync(path.join(work, 'tmp'));
  const paths = {
    knownHostsFile: path.join(work, 'known_hosts'),
    controlPath: path.join(work, 'cp'),
    localTemp: path.join(work, 'tmp'),
  };
  writeFileSync(paths.knownHostsFile, knownHostsLine('127.0.0.1', port, knownKey));
  writeFileSync(path.join(work, 'id_build'), clientKey.privateKey, { mode: 0o600 });
  const files = { inventory: path.join(work, 'inventory.yml'), extraVars: path.join(work, 'vars.json') };
  writeFileSync(
    files.inventory,
    inventoryYaml({
      hostAlias: 'default',
      host: '127.0.0.1',
      port,
      user: 'kiln',
      groups: [],
      privateKeyFile: path.join(work, 'id_build'),
      knownHostsFile: paths.knownHostsFile,
    }),
  );
  writeFileSync(files.extraVars, JSON.stringify(extraVars));
  const p = {
    type: 'ansible',
    max_retries: 0,
    playbook_file: path.join(dir, 'site.yml'),
    command: 'ansible-playbook',
    extra_arguments: [],
    extra_vars: {},
    ansible_env_vars: {},
    groups: [],
    host_alias: 'default',
    keep_inventory_file: false,
    become: false,
  } satisfies AnsibleProvisioner;
  const r = await execa('ansible-playbook', ansibleArgv(p, files), {
    env: ansibleEnv(p, paths),
    reject: false,
    stdin: 'ignore',
    all: true,
    timeout: 120_000,
  });
  await stopControlMasters(paths.controlPath);
  const output = new AnsibleOutput();
  for (const line of String(r.all).split('\n')) output.observe(line);
  return { exitCode: r.exitCode, all: String(r.all), explained: output.explain() };
}

describe("ansible-playbook with kiln's inventory and known_hosts", () => {
  it('connects with the verified host key and runs the play; a failing task is named with its output', async () => {
    const run = await runPlaybook('ok', hostKey.publicKey, { greeting: 'hello from ansible' });
    expect(readFileSync(path.join(dir, 'mark'), 'utf8')).toBe('hello from ansible\n');
    expect(run.exitCode, run.all).toBe(2);
    expect(run.explained).toMatch(/^ {2}task "this task fails" failed on default:\n[^]*about to fail/);
  }, 120_000);

  it('refuses a guest whose host key is not the one kiln verified, before any login attempt', async () => {
    rmSync(path.join(dir, 'mark'), { force: true });
    authAttempts = 0;
    const wrong = await runPlaybook('wrong-key', generateKeyPair('another-host').publicKey, {
      greeting: 'must not run',
    });
    expect(wrong.exitCode).not.toBe(0);
    expect(wrong.all).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    expect(wrong.explained).toMatch(/host default was unreachable/);
    expect(authAttempts).toBe(0);
    expect(existsSync(path.join(dir, 'mark'))).toBe(false);
  }, 120_000);
});
