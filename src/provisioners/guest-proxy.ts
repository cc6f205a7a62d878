/**
 * kiln's package proxy as the guest's system proxy, for --record and --offline builds. Only a shell
 * provisioner's own environment is not enough: `sudo` resets the environment (Debian's env_reset),
 * Ansible's become does the same, cloud-init's `packages:` and systemd units never saw it. So the guest
 * gets, before the first provisioner (and from the seed, before cloud-init installs packages):
 *   - /etc/apt/apt.conf.d/99kiln-build-proxy  Acquire::http(s)::Proxy (DIRECT for kiln's HTTP server)
 *   - proxy= in dnf.conf / yum.conf [main]     (an edit, reverted)
 *   - /etc/environment                         http(s)_proxy, no_proxy in both cases (an edit, reverted;
 *                                              pam_env reads it for sudo and SSH logins)
 *   - /etc/profile.d/kiln-build-proxy.sh       the same for login shells
 *   - /etc/sudoers.d/kiln-build-proxy          Defaults env_keep of those variables (checked by visudo)
 *   - /etc/systemd/system.conf.d/kiln-build-proxy.conf and systemctl set-environment: units started later
 * and the guest clean-up takes all of it out again: kiln's own files are deleted, an edited file gets
 * its original bytes back when nothing else changed it during the build, or loses only kiln's lines
 * when a provisioner edited it too. What to undo is kept on the guest's disk (STATE below),
 * so it survives a reboot (expect_disconnect) and a cached layer; the scripts are idempotent. That is
 * /etc/kiln-build-proxy: /etc exists on every guest (the tiny busybox guest has no /var/lib).
 *
 * Both scripts are POSIX sh for any guest (dash, bash, busybox ash) and run as root, kept as .sh files
 * in src/guest-scripts/ (guest-proxy-lib.sh, guest-proxy-install.sh) that take what is built here as
 * shell variables; `root` prefixes every path so tests can run them on a tree of their own.
 */
import { shellQuote } from '../communicator/remote-command.js';
import { guestScript, guestScriptVars } from '../util/guest-scripts.js';

export interface GuestProxy {
  /** http://IP:PORT the guest uses (forwarded to kiln's proxy). */
  url: string;
  /** Hosts the guest reaches directly: loopback and kiln's HTTP server (${build.http_url}). */
  noProxy: string[];
}

/** The guest's proxy in an air-gapped build, or undefined in an ordinary one. */
export function guestProxyFor(
  airgap: { guestProxy: { ip: string; port: number } } | undefined,
  httpIp: string | undefined,
): GuestProxy | undefined {
  if (!airgap) return undefined;
  return {
    url: `http://${airgap.guestProxy.ip}:${airgap.guestProxy.port}`,
    noProxy: ['localhost', '127.0.0.1', ...(httpIp ? [httpIp] : [])],
  };
}

/** The proxy variables for a command's environment (provisioners set them on the commands they run). */
export function guestProxyEnv(p: GuestProxy | undefined): Record<string, string> {
  if (!p) return {};
  const no = p.noProxy.join(',');
  return { http_proxy: p.url, https_proxy: p.url, no_proxy: no, HTTP_PROXY: p.url, HTTPS_PROXY: p.url, NO_PROXY: no };
}

/** Where the guest keeps what the removal needs (originals of edited files, the settings installed). */
const STATE = '/etc/kiln-build-proxy';
/** kiln's own files (whole files, deleted by the removal). */
export const GUEST_PROXY_FILES = [
  '/etc/apt/apt.conf.d/99kiln-build-proxy',
  '/etc/profile.d/kiln-build-proxy.sh',
  '/etc/sudoers.d/kiln-build-proxy',
  '/etc/systemd/system.conf.d/kiln-build-proxy.conf',
] as const;
/** The lines kiln puts around its block in /etc/environment, and before its proxy= line in dnf/yum.conf. */
const BEGIN = '# kiln build proxy: removed when the build ends';
const END = '# end of kiln build proxy';
const VARS = 'http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY';

/** The parameters src/guest-scripts/guest-proxy-lib.sh takes (it holds the removal, and what both scripts share). */
function libVars(root: string): Record<string, string> {
  return { R: root, STATE, KILN_FILES: GUEST_PROXY_FILES.join(' '), BEGIN, END, VARS };
}

/** The guest clean-up's part: take the build proxy out again (see the module comment). */
export function removeGuestProxyScript(root = ''): string {
  return `${guestScriptVars(libVars(root))}${guestScript('guest-proxy-lib')}remove_build_proxy\n`;
}

/**
 * Makes `p` the guest's system proxy. Idempotent: a guest that has these settings already (the seed's
 * bootcmd ran, or a cached layer holds them) is left as it is; other settings are removed first.
 * Prints what it could not set on stderr (e.g. sudo without visudo) and exits 0 unless a write failed.
 */
export function installGuestProxyScript(p: GuestProxy, root = ''): string {
  const no = p.noProxy.join(',');
  const settings = `${p.url} ${no}`;
  const envBlock = [BEGIN, ...Object.entries(guestProxyEnv(p)).map(([k, v]) => `${k}=${v}`), END].join('\n');
  const apt = [
    `Acquire::http::Proxy "${p.url}";`,
    `Acquire::https::Proxy "${p.url}";`,
    ...p.noProxy.map((h) => `Acquire::http::Proxy::${h} "DIRECT";`),
  ].join('\n');
  const profile = Object.entries(guestProxyEnv(p))
    .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
    .join('\n');
  const systemd = `[Manager]\nDefaultEnvironment=${Object.entries(guestProxyEnv(p))
    .map(([k, v]) => `"${k}=${v}"`)
    .join(' ')}`;
  return (
    'set -u\n' +
    guestScriptVars({
      ...libVars(root),
      SETTINGS: settings,
      ENV_BLOCK: envBlock,
      DNF_PROXY: `proxy=${p.url}`,
      APT_CONF: apt,
      PROFILE: profile,
      SUDOERS: `Defaults env_keep += "${VARS}"`,
      SYSTEMD_CONF: systemd,
      SYSTEMD_ENV: Object.entries(guestProxyEnv(p))
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
    }) +
    guestScript('guest-proxy-lib') +
    guestScript('guest-proxy-install')
  );
}
