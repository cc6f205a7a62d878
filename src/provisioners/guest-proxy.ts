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
 * Both scripts are POSIX sh for any guest (dash, bash, busybox ash) and run as root; `root` prefixes
 * every path so tests can run them on a tree of their own.
 */
import { shellQuote } from '../communicator/remote-command.js';

export interface GuestProxy {
  /** http://IP:PORT the guest uses (forwarded to kiln's proxy). */
  url: string;
  /** Hosts the guest reaches directly: loopback and kiln's HTTP server (${build.http_url}). */
  noProxy: string[];
}

/** The guest's proxy in an air-gapped build, or undefined in an ordinary one. */
export function guestProxyFor(airgap: { guestProxy: { ip: string; port: number } } | undefined, httpIp: string | undefined): GuestProxy | undefined {
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

/**
 * Shell functions both scripts use. `restore FILE NAME SED`: FILE back as it was (deleted when kiln
 * created it) if it still holds exactly what kiln wrote, else only kiln's lines out (SED), so an edit a
 * provisioner made is kept; rewritten in place (owner, mode and SELinux label stay).
 */
function functions(root: string): string {
  return [
    `R=${shellQuote(root)}`,
    `S="$R${STATE}"`,
    // cmp is in Debian's diffutils (Essential) and busybox; a guest without it compares in the shell.
    'same() { if command -v cmp >/dev/null 2>&1; then cmp -s "$1" "$2"; else [ "$(cat "$1"; echo .)" = "$(cat "$2"; echo .)" ]; fi; }',
    // What the file becomes is worked out first; then its blocks are zeroed in place (shred), so kiln's
    // lines leave no bytes on the disk either, and it is written again (or deleted).
    'restore() {',
    '  [ -e "$1" ] && { [ -e "$S/$2.orig" ] || [ -e "$S/$2.absent" ]; } || return 0',
    '  if [ -e "$S/$2.after" ] && same "$1" "$S/$2.after"; then',
    '    if [ -e "$S/$2.absent" ]; then : > "$S/$2.tmp"; else cp "$S/$2.orig" "$S/$2.tmp"; fi',
    '  else sed "$3" "$1" > "$S/$2.tmp"; fi',
    '  shred -n0 -z -- "$1" 2>/dev/null',
    '  if [ -e "$S/$2.absent" ] && [ ! -s "$S/$2.tmp" ]; then rm -f "$1"; else cat "$S/$2.tmp" > "$1"; fi',
    '}',
  ].join('\n');
}

/** Removes everything the install script put in the guest; nothing (no process) when it never ran. */
function removal(): string {
  const envSed = `/^${BEGIN}$/,/^${END}$/d`;
  const confSed = `/^${BEGIN}$/{N;d;}`;
  return [
    'if [ -d "$S" ]; then',
    `  restore "$R/etc/environment" environment ${shellQuote(envSed)}`,
    `  restore "$R/etc/dnf/dnf.conf" dnf.conf ${shellQuote(confSed)}`,
    `  restore "$R/etc/yum.conf" yum.conf ${shellQuote(confSed)}`,
    // kiln's own files and the originals and copies it kept: zeroed in one process, then deleted.
    '  set --',
    `  for f in ${GUEST_PROXY_FILES.map((f) => `"$R${f}"`).join(' ')} "$S"/*; do [ ! -f "$f" ] || set -- "$@" "$f"; done`,
    '  [ $# = 0 ] || shred -n0 -z -- "$@" 2>/dev/null',
    `  rm -f ${GUEST_PROXY_FILES.map((f) => `"$R${f}"`).join(' ')}`,
    '  [ ! -e "$S/system.conf.d.made" ] || rmdir "$R/etc/systemd/system.conf.d" 2>/dev/null',
    `  if [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then systemctl unset-environment ${VARS} 2>/dev/null; fi`,
    '  rm -rf "$S"',
    'fi',
  ].join('\n');
}

/** The guest clean-up's part: take the build proxy out again (see the module comment). */
export function removeGuestProxyScript(root = ''): string {
  return `${functions(root)}\n${removal()}\n`;
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
  const profile = Object.entries(guestProxyEnv(p)).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n');
  const systemd = `[Manager]\nDefaultEnvironment=${Object.entries(guestProxyEnv(p)).map(([k, v]) => `"${k}=${v}"`).join(' ')}`;
  return [
    'set -u',
    functions(root),
    `[ "$(cat "$S/settings" 2>/dev/null)" != ${shellQuote(settings)} ] || exit 0`,
    removal(),
    'set -e',
    'umask 022',
    'mkdir -p "$S"; chmod 700 "$S"',
    // Kept before each edit: the original bytes (or that there was no file), then what kiln wrote.
    'keep() { if [ -e "$1" ]; then cp -p "$1" "$S/$2.orig"; else : > "$S/$2.absent"; fi; }',
    // /etc/environment: kiln's block appended (after a line break, if the file ends without one).
    'f="$R/etc/environment"; keep "$f" environment',
    `{ [ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || echo; printf '%s\\n' ${shellQuote(envBlock)}; } >> "$f"`,
    'cp "$f" "$S/environment.after"',
    // dnf and yum: proxy= in [main] (their conf has no drop-in directory for it).
    'for f in "$R/etc/dnf/dnf.conf" "$R/etc/yum.conf"; do',
    '  [ -f "$f" ] || continue',
    '  n=${f##*/}; keep "$f" "$n"; done_=0',
    '  while IFS= read -r l || [ -n "$l" ]; do',
    `    printf '%s\\n' "$l"`,
    `    case $done_$l in "0[main]"*) printf '%s\\n' ${shellQuote(BEGIN)} ${shellQuote(`proxy=${p.url}`)}; done_=1 ;; esac`,
    '  done < "$f" > "$S/$n.tmp"',
    '  if [ "$done_" = 1 ]; then cat "$S/$n.tmp" > "$f"; cp "$f" "$S/$n.after"; else rm -f "$S/$n.orig"; fi',
    'done',
    `[ ! -d "$R/etc/apt/apt.conf.d" ] || printf '%s\\n' ${shellQuote(apt)} > "$R/etc/apt/apt.conf.d/99kiln-build-proxy"`,
    `[ ! -d "$R/etc/profile.d" ] || printf '%s\\n' ${shellQuote(profile)} > "$R/etc/profile.d/kiln-build-proxy.sh"`,
    // sudo resets the environment: keep the proxy variables. A file visudo rejects would break sudo
    // altogether, so it goes in only once checked (a name with a dot is ignored by sudo meanwhile).
    'if [ -d "$R/etc/sudoers.d" ]; then',
    '  if command -v visudo >/dev/null 2>&1; then',
    `    printf '%s\\n' ${shellQuote(`Defaults env_keep += "${VARS}"`)} > "$R/etc/sudoers.d/.kiln-build-proxy.tmp"`,
    '    chmod 440 "$R/etc/sudoers.d/.kiln-build-proxy.tmp"',
    '    if visudo -cqf "$R/etc/sudoers.d/.kiln-build-proxy.tmp" >/dev/null; then mv -f "$R/etc/sudoers.d/.kiln-build-proxy.tmp" "$R/etc/sudoers.d/kiln-build-proxy"',
    '    else rm -f "$R/etc/sudoers.d/.kiln-build-proxy.tmp"; echo "kiln: visudo rejected the env_keep line; sudo keeps the proxy only through /etc/environment (pam_env)" >&2; fi',
    '  else echo "kiln: no visudo in the guest: sudo keeps the proxy only through /etc/environment (pam_env)" >&2; fi',
    'fi',
    // systemd: units started from now on (set-environment) and after a reboot (the drop-in).
    'if [ -d "$R/run/systemd/system" ]; then',
    '  [ -d "$R/etc/systemd/system.conf.d" ] || { mkdir -p "$R/etc/systemd/system.conf.d"; : > "$S/system.conf.d.made"; }',
    `  printf '%s\\n' ${shellQuote(systemd)} > "$R/etc/systemd/system.conf.d/kiln-build-proxy.conf"`,
    `  [ -n "$R" ] || ! command -v systemctl >/dev/null 2>&1 || systemctl set-environment ${Object.entries(guestProxyEnv(p)).map(([k, v]) => shellQuote(`${k}=${v}`)).join(' ')} || true`,
    'fi',
    `printf '%s' ${shellQuote(settings)} > "$S/settings"`,
  ].join('\n') + '\n';
}
