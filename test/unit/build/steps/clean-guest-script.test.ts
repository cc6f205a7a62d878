// The guest clean-up script (src/build/steps/clean-guest.ts): valid sh; a fixed handful of processes
// (one find, one shred with a single pass of zeros, one rm: each process costs 0.1-0.2 s under TCG);
// no global sync and no `cloud-init clean` Python start. Then the real script, run on a tree of files
// laid out as a guest's (its `root` option) with cloud-init, shred and rm wrapped to log their calls:
// the build key's lines leave authorized_keys and nothing else does, every file that can hold a
// secret is zeroed in place before anything is deleted, cloud-init's state goes but its seed stays,
// and the script waits for cloud-init's last stage to finish before touching its files.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanGuestScript } from '../../../../src/build/steps/clean-guest.js';
import { removeGuestProxyScript } from '../../../../src/provisioners/guest-proxy.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('cleanGuestScript', () => {
  for (const cloudInit of [true, false]) {
    it(`is valid sh, starts few processes and no global sync (cloud-init ${cloudInit})`, () => {
      const whole = cleanGuestScript(cloudInit);
      expect(spawnSync('sh', ['-n'], { input: whole }).status).toBe(0);
      // The build proxy's removal (guest-proxy-script.test.ts) starts nothing when there is no proxy to remove.
      expect(whole).toContain(removeGuestProxyScript().trimEnd());
      const script = whole.replace(removeGuestProxyScript().trimEnd(), '');
      expect(script).not.toMatch(/^\s*sync\b|;\s*sync\b|\bdd\b|\bgrep\b|cloud-init clean/m);
      expect(script.match(/\bshred\b/g)?.length ?? 0).toBe(cloudInit ? 1 : 0);
      if (cloudInit) expect(script).toContain('-exec shred -n0 -z -- {} +');
    });
  }

  it("without cloud-init only authorized_keys is touched (sshd's configuration is only read)", () => {
    expect(cleanGuestScript(false).replace(removeGuestProxyScript().trimEnd(), '')).not.toMatch(
      /\/var\/lib\/cloud|ssh_host_|machine-id/,
    );
  });
});

/** A guest-like tree, and wrappers on PATH that log each call of shred and rm, then run the real one. */
function fakeGuest(opts: { rmFails?: boolean } = {}) {
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-clean-guest-'));
  dirs.push(root);
  const file = (p: string, content: string) => {
    mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    writeFileSync(path.join(root, p), content);
  };
  const id = 'kiln-0123456789abcdef';
  const secret = 'ed25519_private: -----BEGIN OPENSSH PRIVATE KEY----- SECRET';
  file('etc/ssh/ssh_host_ed25519_key', 'PRIVATE HOST KEY\n');
  file('etc/ssh/ssh_host_ed25519_key.pub', 'ssh-ed25519 AAAAhost root@deb\n');
  file('etc/ssh/sshd_config', 'Include /etc/ssh/sshd_config.d/*.conf\n');
  file('etc/machine-id', '0123456789abcdef0123456789abcdef\n');
  file('etc/ssh/sshd_config.d/50-cloud-init.conf', 'PasswordAuthentication no\n');
  file(`var/lib/cloud/instances/${id}/user-data.txt`, `#cloud-config\n${secret}\n`);
  file(`var/lib/cloud/instances/${id}/cloud-config.txt`, `${secret}\n`);
  file(`var/lib/cloud/instances/${id}/obj.pkl`, `pickled ${secret}`);
  file(`var/lib/cloud/instances/${id}/vendor-data.txt`, '');
  file(`var/lib/cloud/instances/${id}/sem/config_ssh`, '1764410000.0\n');
  file('var/lib/cloud/instances/kiln-older/user-data.txt', "an earlier build's seed (a cached layer)\n");
  file('var/lib/cloud/data/instance-id', `${id}\n`);
  file('var/lib/cloud/sem/config_scripts_per_once.once', '1764410000.0\n');
  file('var/lib/cloud/.hidden', 'x\n');
  file('var/lib/cloud/seed/nocloud/user-data', "#cloud-config\n# the image's own seed\n");
  file('var/log/cloud-init.log', 'log\n');
  file('var/log/cloud-init-output.log', 'output\n');
  file('var/log/syslog', 'kept\n');
  file(
    'home/kiln/.ssh/authorized_keys',
    'ssh-ed25519 AAAAbuild kiln-build-abc_1.2-x\nssh-ed25519 AAAAuser alice@laptop\nssh-ed25519 AAAAodd kiln-build-with space\n',
  );
  file('home/alice/.ssh/authorized_keys', 'ssh-ed25519 AAAAuser alice@laptop');
  file('root/.ssh/authorized_keys', 'ssh-ed25519 AAAAold kiln-build-old\n');
  const bin = path.join(root, 'bin');
  const log = path.join(root, 'calls.log');
  mkdirSync(bin);
  const wrap = (name: string, body: string) => {
    writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`);
    chmodSync(path.join(bin, name), 0o755);
  };
  wrap('cloud-init', 'exit 0');
  // shred notes whether cloud-init's last stage had finished when it ran, then does its work.
  wrap(
    'shred',
    `[ -e ${root}/run/cloud-init/result.json ] && done=finished || done=running; echo "shred cloud-init:$done $*" >> ${log}; exec ${spawnSync('sh', ['-c', 'command -v shred']).stdout.toString().trim()} "$@"`,
  );
  // rmFails: an rm that deletes nothing and fails, as on an immutable file or a read-only mount.
  wrap(
    'rm',
    opts.rmFails
      ? `echo "rm $*" >> ${log}; echo "rm: cannot remove: Operation not permitted" >&2; exit 1`
      : `echo "rm $*" >> ${log}; exec ${spawnSync('sh', ['-c', 'command -v rm']).stdout.toString().trim()} "$@"`,
  );
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  return {
    root,
    id,
    log,
    env,
    file,
    read: (p: string) => readFileSync(path.join(root, p), 'utf8'),
    exists: (p: string) => existsSync(path.join(root, p)),
  };
}

describe('the clean-up script on a guest-like tree', () => {
  it('takes out the build keys, zeroes what can hold a secret, then deletes it; keeps the seed and the rest', () => {
    const g = fakeGuest();
    const inode = statSync(path.join(g.root, 'home/kiln/.ssh/authorized_keys')).ino;
    const aliceBefore = statSync(path.join(g.root, 'home/alice/.ssh/authorized_keys')).mtimeMs;
    const r = spawnSync('sh', ['-s'], { input: cleanGuestScript(true, g.root), env: g.env });
    expect(r.stderr.toString()).toBe('');
    expect(r.status).toBe(0);

    // authorized_keys: only lines whose last field is a build key's comment go; the file is the same inode
    expect(g.read('home/kiln/.ssh/authorized_keys')).toBe(
      'ssh-ed25519 AAAAuser alice@laptop\nssh-ed25519 AAAAodd kiln-build-with space\n',
    );
    expect(statSync(path.join(g.root, 'home/kiln/.ssh/authorized_keys')).ino).toBe(inode);
    expect(g.read('root/.ssh/authorized_keys')).toBe('');
    // a file without a build key is not rewritten (no trailing newline added)
    expect(g.read('home/alice/.ssh/authorized_keys')).toBe('ssh-ed25519 AAAAuser alice@laptop');
    expect(statSync(path.join(g.root, 'home/alice/.ssh/authorized_keys')).mtimeMs).toBe(aliceBefore);

    const calls = readFileSync(g.log, 'utf8').trim().split('\n');
    expect(calls).toHaveLength(2);
    const [shred, rm] = calls as [string, string];
    expect(shred).toMatch(/^shred cloud-init:running -n0 -z -- /);
    const zeroed = shred
      .split(' -- ')[1]!
      .split(' ')
      .map((f) => path.relative(g.root, f))
      .sort();
    expect(zeroed).toEqual([
      'etc/ssh/ssh_host_ed25519_key',
      'etc/ssh/ssh_host_ed25519_key.pub',
      'var/lib/cloud/.hidden',
      'var/lib/cloud/data/instance-id',
      'var/lib/cloud/instances/kiln-0123456789abcdef/cloud-config.txt',
      'var/lib/cloud/instances/kiln-0123456789abcdef/obj.pkl',
      'var/lib/cloud/instances/kiln-0123456789abcdef/user-data.txt',
      'var/lib/cloud/instances/kiln-older/user-data.txt',
      'var/log/cloud-init-output.log',
      'var/log/cloud-init.log',
    ]);
    expect(rm).toMatch(/^rm -rf -- /);

    for (const gone of [
      'var/lib/cloud/instances',
      'var/lib/cloud/data',
      'var/lib/cloud/sem',
      'var/lib/cloud/.hidden',
      'var/log/cloud-init.log',
      'var/log/cloud-init-output.log',
      'etc/ssh/ssh_host_ed25519_key',
      'etc/ssh/ssh_host_ed25519_key.pub',
    ])
      expect(g.exists(gone), gone).toBe(false);
    expect(g.read('var/lib/cloud/seed/nocloud/user-data')).toBe("#cloud-config\n# the image's own seed\n");
    expect(g.read('etc/ssh/sshd_config')).toContain('Include');
    expect(g.read('var/log/syslog')).toBe('kept\n');
    // Emptied, not deleted: systemd makes a new one at each instance's first boot.
    expect(g.read('etc/machine-id')).toBe('');
  });

  it('shred -n0 -z, as the script calls it, leaves zeros in the same file (same inode, not truncated)', () => {
    const g = fakeGuest();
    const f = path.join(g.root, 'var/lib/cloud/instances', g.id, 'user-data.txt');
    const { size, ino } = statSync(f);
    const r = spawnSync('shred', ['-n0', '-z', '--', f]);
    expect(r.status).toBe(0);
    const after = readFileSync(f);
    expect(after.length).toBeGreaterThanOrEqual(size);
    expect(after.subarray(0, size).every((b) => b === 0)).toBe(true);
    expect(statSync(f).ino).toBe(ino);
  });

  it("waits for cloud-init's last stage when it is still running (cloud_init.wait: false), then wipes", async () => {
    const g = fakeGuest();
    mkdirSync(path.join(g.root, 'run/cloud-init'), { recursive: true });
    writeFileSync(path.join(g.root, 'run/cloud-init/status.json'), '{}');
    const child = spawn('sh', ['-s'], { env: g.env, stdio: ['pipe', 'ignore', 'pipe'] });
    child.stdin.end(cleanGuestScript(true, g.root));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // The script is still waiting: nothing zeroed or deleted while result.json is missing. Checked
    // after its own wait loop has run at least once (it sleeps 1 s between looks).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(existsSync(g.log)).toBe(false);
    expect(g.exists(`var/lib/cloud/instances/${g.id}/user-data.txt`)).toBe(true);
    writeFileSync(path.join(g.root, 'run/cloud-init/result.json'), '{}');
    expect(await exited).toBe(0);
    expect(readFileSync(g.log, 'utf8')).toMatch(/^shred cloud-init:finished /);
    expect(g.exists('var/lib/cloud/instances')).toBe(false);
  });

  it('finds the build key wherever sshd reads keys: homes from /etc/passwd, AuthorizedKeysFile patterns, included files', () => {
    const g = fakeGuest();
    g.file(
      'etc/passwd',
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n' +
        'deploy:x:1001:1001::/var/lib/deploy:/bin/sh\nkiln:x:1000:1000::/home/kiln:/bin/sh\n',
    );
    // An image that keeps keys outside the homes, quoted and lower-case as sshd accepts it.
    g.file(
      'etc/ssh/sshd_config.d/10-keys.conf',
      '  authorizedkeysfile "/etc/ssh/keys/%u" .ssh/authorized_keys\nInclude extra/*.conf\nMatch User deploy\n  AuthorizedKeysFile /srv/keys/%U-%%\n',
    );
    // Included relative to /etc/ssh; keyword=value with a ~, and no newline after the last line.
    g.file('etc/ssh/extra/more.conf', 'AuthorizedKeysFile=~/.ssh/more_keys');
    g.file('home/kiln/.ssh/more_keys', 'ssh-ed25519 AAAAbuild kiln-build-abc\nssh-ed25519 AAAAk kiln@laptop\n');
    g.file('etc/ssh/keys/kiln', 'ssh-ed25519 AAAAbuild kiln-build-abc\nssh-ed25519 AAAAops ops@desk\n');
    g.file('srv/keys/1001-%', 'ssh-ed25519 AAAAbuild kiln-build-abc\n');
    g.file(
      'var/lib/deploy/.ssh/authorized_keys2',
      'ssh-ed25519 AAAAbuild kiln-build-abc\nssh-ed25519 AAAAd deploy@ci\n',
    );
    const r = spawnSync('sh', ['-s'], { input: cleanGuestScript(false, g.root), env: g.env });
    expect(r.stderr.toString()).toBe('');
    expect(r.status).toBe(0);
    expect(g.read('etc/ssh/keys/kiln')).toBe('ssh-ed25519 AAAAops ops@desk\n');
    expect(g.read('srv/keys/1001-%')).toBe('');
    expect(g.read('var/lib/deploy/.ssh/authorized_keys2')).toBe('ssh-ed25519 AAAAd deploy@ci\n');
    expect(g.read('home/kiln/.ssh/authorized_keys')).not.toContain('kiln-build-abc');
    expect(g.read('home/kiln/.ssh/more_keys')).toBe('ssh-ed25519 AAAAk kiln@laptop\n');
  });

  it('stops with the file named when a key file cannot be rewritten: the image would let the build key in', () => {
    const g = fakeGuest();
    // As root no mode stops a write: a file size limit of 0 makes the rewrite fail as a full disk would.
    const r = spawnSync('sh', ['-s'], {
      input: `trap '' XFSZ; ulimit -f 0\n${cleanGuestScript(false, g.root)}`,
      env: g.env,
    });
    expect(r.status).toBe(4);
    expect(r.stderr.toString()).toMatch(
      /could not take kiln's build key out of \/home\/kiln\/\.ssh\/authorized_keys: .*Fix: /,
    );
  });

  it('stops with the files named when the host keys or the seed copies could not be deleted', () => {
    const g = fakeGuest({ rmFails: true });
    writeFileSync(path.join(g.root, 'etc/machine-id'), 'kept\n');
    mkdirSync(path.join(g.root, 'run/cloud-init'), { recursive: true });
    writeFileSync(path.join(g.root, 'run/cloud-init/result.json'), '{}');
    const r = spawnSync('sh', ['-s'], { input: cleanGuestScript(true, g.root), env: g.env });
    expect(r.status).toBe(5);
    const err = r.stderr.toString();
    expect(err).toContain('could not delete /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub');
    expect(err).toContain('/var/lib/cloud/instances');
    expect(err).not.toContain('/var/lib/cloud/seed');
    expect(err).toMatch(/Fix: /);
  });
});
