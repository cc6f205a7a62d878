# shellcheck shell=sh
# Makes kiln's package proxy the guest's system proxy (src/provisioners/guest-proxy.ts); follows
# guest-proxy-lib.sh. Idempotent: a guest that has these settings already (the seed's bootcmd ran, or a
# cached layer holds them) is left as it is; other settings are removed first. Prints what it could not
# set on stderr (e.g. sudo without visudo) and exits 0 unless a write failed.
# Set by kiln before this text, besides the library's: SETTINGS (what identifies these settings),
# ENV_BLOCK (kiln's block for /etc/environment), DNF_PROXY (the proxy= line), APT_CONF, PROFILE,
# SUDOERS and SYSTEMD_CONF (the contents of kiln's files) and SYSTEMD_ENV (NAME=value words for
# systemctl set-environment).
: "${SETTINGS:?}" "${ENV_BLOCK:?}" "${DNF_PROXY:?}" "${APT_CONF:?}" "${PROFILE:?}" "${SUDOERS:?}" "${SYSTEMD_CONF:?}" "${SYSTEMD_ENV:?}"
[ "$(cat "$S/settings" 2>/dev/null)" != "$SETTINGS" ] || exit 0
remove_build_proxy
set -e
umask 022
mkdir -p "$S"; chmod 700 "$S"
# Kept before each edit: the original bytes (or that there was no file), then what kiln wrote.
keep() { if [ -e "$1" ]; then cp -p "$1" "$S/$2.orig"; else : > "$S/$2.absent"; fi; }
# /etc/environment: kiln's block appended (after a line break, if the file ends without one).
f="$R/etc/environment"; keep "$f" environment
# shellcheck disable=SC2094 # opened for appending: the last byte is read before anything is written
{ [ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || echo; printf '%s\n' "$ENV_BLOCK"; } >> "$f"
cp "$f" "$S/environment.after"
# dnf and yum: proxy= in [main] (their conf has no drop-in directory for it).
for f in "$R/etc/dnf/dnf.conf" "$R/etc/yum.conf"; do
  [ -f "$f" ] || continue
  n=${f##*/}; keep "$f" "$n"; done_=0
  while IFS= read -r l || [ -n "$l" ]; do
    printf '%s\n' "$l"
    case $done_$l in "0[main]"*) printf '%s\n' "$BEGIN" "$DNF_PROXY"; done_=1 ;; esac
  done < "$f" > "$S/$n.tmp"
  if [ "$done_" = 1 ]; then cat "$S/$n.tmp" > "$f"; cp "$f" "$S/$n.after"; else rm -f "$S/$n.orig"; fi
done
[ ! -d "$R/etc/apt/apt.conf.d" ] || printf '%s\n' "$APT_CONF" > "$R/etc/apt/apt.conf.d/99kiln-build-proxy"
[ ! -d "$R/etc/profile.d" ] || printf '%s\n' "$PROFILE" > "$R/etc/profile.d/kiln-build-proxy.sh"
# sudo resets the environment: keep the proxy variables. A file visudo rejects would break sudo
# altogether, so it goes in only once checked (a name with a dot is ignored by sudo meanwhile).
if [ -d "$R/etc/sudoers.d" ]; then
  if command -v visudo >/dev/null 2>&1; then
    printf '%s\n' "$SUDOERS" > "$R/etc/sudoers.d/.kiln-build-proxy.tmp"
    chmod 440 "$R/etc/sudoers.d/.kiln-build-proxy.tmp"
    if visudo -cqf "$R/etc/sudoers.d/.kiln-build-proxy.tmp" >/dev/null; then mv -f "$R/etc/sudoers.d/.kiln-build-proxy.tmp" "$R/etc/sudoers.d/kiln-build-proxy"
    else rm -f "$R/etc/sudoers.d/.kiln-build-proxy.tmp"; echo "kiln: visudo rejected the env_keep line; sudo keeps the proxy only through /etc/environment (pam_env)" >&2; fi
  else echo "kiln: no visudo in the guest: sudo keeps the proxy only through /etc/environment (pam_env)" >&2; fi
fi
# systemd: units started from now on (set-environment) and after a reboot (the drop-in).
if [ -d "$R/run/systemd/system" ]; then
  [ -d "$R/etc/systemd/system.conf.d" ] || { mkdir -p "$R/etc/systemd/system.conf.d"; : > "$S/system.conf.d.made"; }
  printf '%s\n' "$SYSTEMD_CONF" > "$R/etc/systemd/system.conf.d/kiln-build-proxy.conf"
  # shellcheck disable=SC2086 # NAME=value words: a URL and host lists, no blanks
  [ -n "$R" ] || ! command -v systemctl >/dev/null 2>&1 || systemctl set-environment $SYSTEMD_ENV || true
fi
printf '%s' "$SETTINGS" > "$S/settings"
