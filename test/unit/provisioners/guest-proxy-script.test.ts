// The guest's system proxy for --record/--offline builds (src/provisioners/guest-proxy.ts), run for
// real with sh (and busybox sh, the tiny guest's) on trees laid out as guests' (the scripts' `root`):
// what the install writes, that a reset environment (pam_env's /etc/environment, a login shell's
// profile.d, sudo's env_keep checked by the real visudo) finds the proxy, that installing twice changes
// nothing, and that the clean-up's removal gives back every byte and mode it found, keeps a provisioner's
// own edit of a file kiln edited, and starts no process on a guest where nothing was installed.
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  appendFileSync,
  chmodSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  GUEST_PROXY_FILES,
  guestProxyEnv,
  guestProxyFor,
  installGuestProxyScript,
  removeGuestProxyScript,
} from '../../../src/provisioners/guest-proxy.js';
import { cleanGuestScript } from '../../../src/build/steps/clean-guest.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const proxy = guestProxyFor({ guestProxy: { ip: '10.0.2.100', port: 3128 } }, '10.0.2.101')!;
const shells = ['sh', ...(spawnSync('sh', ['-c', 'command -v busybox']).status === 0 ? ['busybox sh'] : [])];

function tree(files: Record<string, string>, dirsToMake: string[] = []): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-guest-proxy-'));
  dirs.push(root);
  for (const d of dirsToMake) mkdirSync(path.join(root, d), { recursive: true });
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    writeFileSync(path.join(root, p), content);
  }
  return root;
}

/** Every file and directory under root with its mode and (for files) its bytes. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel))) {
      const p = path.join(rel, name);
      const st = statSync(path.join(root, p));
      out[p] = st.isDirectory()
        ? `dir ${(st.mode & 0o7777).toString(8)}`
        : `${(st.mode & 0o7777).toString(8)} ${readFileSync(path.join(root, p), 'latin1')}`;
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out;
}

function run(shell: string, script: string, env: NodeJS.ProcessEnv = process.env) {
  const [cmd, ...args] = shell.split(' ');
  const r = spawnSync(cmd!, [...args, '-s'], { input: script, env });
  return { status: r.status, stderr: r.stderr.toString() };
}

const debianLike = () =>
  tree(
    {
      'etc/environment': 'LANG=C.UTF-8', // no trailing newline: given back without one
      'etc/dnf/dnf.conf': '[main]\ngpgcheck=1\ninstallonly_limit=3\n',
      'etc/sudoers.d/README': '# sudoers.d\n',
      'etc/apt/apt.conf.d/70debconf': 'DPkg::Pre-Install-Pkgs {"/usr/sbin/dpkg-preconfigure --apt || true";};\n',
      'etc/profile.d/locale.sh': 'true\n',
    },
    ['run/systemd/system', 'etc/systemd'],
  );

describe('the guest proxy scripts', () => {
  it('are valid sh', () => {
    for (const shell of shells) {
      const [cmd, ...args] = shell.split(' ');
      expect(spawnSync(cmd!, [...args, '-n'], { input: installGuestProxyScript(proxy) }).status, shell).toBe(0);
      expect(spawnSync(cmd!, [...args, '-n'], { input: removeGuestProxyScript() }).status, shell).toBe(0);
    }
  });

  it("the environment: the proxy for http and https, kiln's HTTP server and loopback direct", () => {
    expect(guestProxyEnv(proxy)).toEqual({
      http_proxy: 'http://10.0.2.100:3128',
      https_proxy: 'http://10.0.2.100:3128',
      no_proxy: 'localhost,127.0.0.1,10.0.2.101',
      HTTP_PROXY: 'http://10.0.2.100:3128',
      HTTPS_PROXY: 'http://10.0.2.100:3128',
      NO_PROXY: 'localhost,127.0.0.1,10.0.2.101',
    });
    expect(guestProxyFor(undefined, '10.0.2.2')).toBeUndefined();
    expect(guestProxyEnv(undefined)).toEqual({});
  });

  it('on a Debian-like guest: apt, dnf, /etc/environment, profile.d, sudo and systemd get it; all of it goes again, byte for byte', () => {
    const root = debianLike();
    const before = snapshot(root);
    const r = run('sh', installGuestProxyScript(proxy, root));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const read = (p: string) => readFileSync(path.join(root, p), 'utf8');

    expect(read('etc/apt/apt.conf.d/99kiln-build-proxy')).toBe(
      [
        'Acquire::http::Proxy "http://10.0.2.100:3128";',
        'Acquire::https::Proxy "http://10.0.2.100:3128";',
        'Acquire::http::Proxy::localhost "DIRECT";',
        'Acquire::http::Proxy::127.0.0.1 "DIRECT";',
        'Acquire::http::Proxy::10.0.2.101 "DIRECT";',
        '',
      ].join('\n'),
    );
    expect(read('etc/dnf/dnf.conf')).toMatch(
      /^\[main\]\n# kiln build proxy[^\n]*\nproxy=http:\/\/10\.0\.2\.100:3128\ngpgcheck=1\ninstallonly_limit=3\n$/,
    );
    expect(read('etc/environment')).toMatch(/^LANG=C\.UTF-8\n# kiln build proxy/);
    expect(read('etc/systemd/system.conf.d/kiln-build-proxy.conf')).toContain(
      'DefaultEnvironment="http_proxy=http://10.0.2.100:3128"',
    );
    // sudo's line, as the real visudo checks it, mode 0440
    const sudoers = path.join(root, 'etc/sudoers.d/kiln-build-proxy');
    expect(read('etc/sudoers.d/kiln-build-proxy')).toBe(
      'Defaults env_keep += "http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY"\n',
    );
    expect(statSync(sudoers).mode & 0o777).toBe(0o440);
    if (spawnSync('sh', ['-c', 'command -v visudo']).status === 0)
      expect(spawnSync('visudo', ['-cqf', sudoers]).status).toBe(0);

    // A reset environment finds the proxy again: what pam_env reads (sudo, SSH logins), and a login shell's profile.d.
    const viaPamEnv = spawnSync('env', [
      '-i',
      'sh',
      '-c',
      `set -a; . ${root}/etc/environment; echo "$http_proxy|$https_proxy|$no_proxy|$LANG"`,
    ]).stdout.toString();
    expect(viaPamEnv).toBe('http://10.0.2.100:3128|http://10.0.2.100:3128|localhost,127.0.0.1,10.0.2.101|C.UTF-8\n');
    const viaProfile = spawnSync('env', [
      '-i',
      'sh',
      '-c',
      `. ${root}/etc/profile.d/kiln-build-proxy.sh; echo "$HTTP_PROXY|$NO_PROXY"`,
    ]).stdout.toString();
    expect(viaProfile).toBe('http://10.0.2.100:3128|localhost,127.0.0.1,10.0.2.101\n');

    // Again (the seed's bootcmd ran, then the step over SSH; or a cached layer): nothing changes.
    const installed = snapshot(root);
    expect(run('sh', installGuestProxyScript(proxy, root)).status).toBe(0);
    expect(snapshot(root)).toEqual(installed);

    // The clean-up: the tree is exactly as before (bytes and modes; the directory kiln made is gone too).
    const c = run('sh', cleanGuestScript(false, root));
    expect(c.stderr).toBe('');
    expect(c.status).toBe(0);
    expect(snapshot(root)).toEqual(before);
    for (const f of GUEST_PROXY_FILES) expect(existsSync(path.join(root, f))).toBe(false);
  });

  it("keeps a provisioner's own edit of a file kiln edited, taking out only kiln's lines", () => {
    const root = debianLike();
    expect(run('sh', installGuestProxyScript(proxy, root)).status).toBe(0);
    appendFileSync(path.join(root, 'etc/environment'), 'EDITOR=vi\n');
    writeFileSync(
      path.join(root, 'etc/dnf/dnf.conf'),
      readFileSync(path.join(root, 'etc/dnf/dnf.conf'), 'utf8') + 'fastestmirror=1\n',
    );
    expect(run('sh', removeGuestProxyScript(root)).status).toBe(0);
    // kiln's line break after the original's last line stays: the line the provisioner added needs it
    expect(readFileSync(path.join(root, 'etc/environment'), 'utf8')).toBe('LANG=C.UTF-8\nEDITOR=vi\n');
    expect(readFileSync(path.join(root, 'etc/dnf/dnf.conf'), 'utf8')).toBe(
      '[main]\ngpgcheck=1\ninstallonly_limit=3\nfastestmirror=1\n',
    );
    expect(existsSync(path.join(root, 'etc/kiln-build-proxy'))).toBe(false);
  });

  for (const shell of shells) {
    it(`a busybox-like guest (${shell}): /etc/environment made and deleted again; nothing else appears`, () => {
      const root = tree({ 'etc/profile': 'export PATH=/usr/bin:/bin\n' });
      chmodSync(path.join(root, 'etc'), 0o755);
      const before = snapshot(root);
      const r = run(shell, installGuestProxyScript(proxy, root));
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(readFileSync(path.join(root, 'etc/environment'), 'utf8')).toContain(
        '\nhttp_proxy=http://10.0.2.100:3128\n',
      );
      expect(statSync(path.join(root, 'etc/environment')).mode & 0o777).toBe(0o644);
      expect(existsSync(path.join(root, 'etc/apt'))).toBe(false);
      expect(run(shell, removeGuestProxyScript(root)).status).toBe(0);
      expect(snapshot(root)).toEqual(before);
    });
  }

  it('removal on a guest where nothing was installed starts no process (the clean-up runs it on every build)', () => {
    const root = debianLike();
    const before = snapshot(root);
    const r = run('/bin/sh', removeGuestProxyScript(root), { PATH: '/nonexistent' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(snapshot(root)).toEqual(before);
  });

  it('other settings installed earlier (a cached layer of another kiln) are replaced, not stacked', () => {
    const root = debianLike();
    const before = snapshot(root);
    const other = guestProxyFor({ guestProxy: { ip: '10.0.2.100', port: 8080 } }, '10.0.2.2')!;
    expect(run('sh', installGuestProxyScript(other, root)).status).toBe(0);
    expect(run('sh', installGuestProxyScript(proxy, root)).status).toBe(0);
    const env = readFileSync(path.join(root, 'etc/environment'), 'utf8');
    expect(env).not.toContain(':8080');
    expect(env.match(/^http_proxy=/gm)).toHaveLength(1);
    expect(readFileSync(path.join(root, 'etc/dnf/dnf.conf'), 'utf8').match(/^proxy=/gm)).toHaveLength(1);
    expect(run('sh', removeGuestProxyScript(root)).status).toBe(0);
    expect(snapshot(root)).toEqual(before);
  });
});

describe('fetches around the proxy, read from what a provisioner printed', () => {
  it('a name that did not resolve fails even a command that carried on; a refused connection only explains a failure', async () => {
    const { ProxyBypassWatch } = await import('../../../src/provisioners/proxy-bypass.js');
    const w = new ProxyBypassWatch('http://10.0.2.100:3128');
    w.observe('Hit:1 http://deb.debian.org/debian bookworm InRelease');
    w.observe("wget: can't connect to remote host (10.0.2.2): Connection refused");
    expect(w.failure()).toBeUndefined();
    expect(w.hint()).toContain("wget: can't connect to remote host (10.0.2.2): Connection refused");
    w.observe(
      "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'",
    );
    w.observe('curl: (6) Could not resolve host: pypi.org');
    w.observe("wget: bad address 'example.org'");
    expect(w.failure()).toContain("Temporary failure resolving 'deb.debian.org'");
    expect(w.failure()).toContain('Could not resolve host: pypi.org');
    expect(w.failure()).toContain("bad address 'example.org'");
    expect(w.failure()).toContain('fix: fetch over http:// through the proxy');
    // an ordinary build watches nothing
    const off = new ProxyBypassWatch(undefined);
    off.observe('Temporary failure resolving x');
    expect(off.failure()).toBeUndefined();
    expect(off.hint()).toBe('');
  });
});
