# shellcheck shell=sh
# The build proxy in the guest (src/provisioners/guest-proxy.ts): what the install and the removal
# share, and the removal itself (remove_build_proxy), which the guest clean-up also runs.
# POSIX sh for any guest (dash, bash, busybox ash), run as root.
# Set by kiln before this text: R (the root every path is under: '' in the guest, a tree in tests),
# STATE (where the guest keeps what the removal needs), KILN_FILES (kiln's own files, space-separated),
# BEGIN and END (the lines around kiln's block in /etc/environment; BEGIN also precedes its proxy= line
# in dnf.conf and yum.conf) and VARS (the proxy variables, space-separated).
: "${R?}" "${STATE:?}" "${KILN_FILES:?}" "${BEGIN:?}" "${END:?}" "${VARS:?}"
S="$R$STATE"

# cmp is in Debian's diffutils (Essential) and busybox; a guest without it compares in the shell.
same() { if command -v cmp >/dev/null 2>&1; then cmp -s "$1" "$2"; else [ "$(cat "$1"; echo .)" = "$(cat "$2"; echo .)" ]; fi; }

# restore FILE NAME SED: FILE back as it was (deleted when kiln created it) if it still holds exactly
# what kiln wrote, else only kiln's lines out (SED), so an edit a provisioner made is kept. What the file
# becomes is worked out first; then its blocks are zeroed in place, so kiln's lines leave no bytes on the
# disk either, and it is written again in place (owner, mode and SELinux label stay) or deleted.
restore() {
  [ -e "$1" ] && { [ -e "$S/$2.orig" ] || [ -e "$S/$2.absent" ]; } || return 0
  if [ -e "$S/$2.after" ] && same "$1" "$S/$2.after"; then
    if [ -e "$S/$2.absent" ]; then : > "$S/$2.tmp"; else cp "$S/$2.orig" "$S/$2.tmp"; fi
  else sed "$3" "$1" > "$S/$2.tmp"; fi
  shred -n0 -z -- "$1" 2>/dev/null
  if [ -e "$S/$2.absent" ] && [ ! -s "$S/$2.tmp" ]; then rm -f "$1"; else cat "$S/$2.tmp" > "$1"; fi
}

# Removes everything the install put in the guest; nothing (no process) when it never ran.
remove_build_proxy() {
  [ -d "$S" ] || return 0
  restore "$R/etc/environment" environment "/^$BEGIN\$/,/^$END\$/d"
  restore "$R/etc/dnf/dnf.conf" dnf.conf "/^$BEGIN\$/{N;d;}"
  restore "$R/etc/yum.conf" yum.conf "/^$BEGIN\$/{N;d;}"
  # kiln's own files and the originals and copies it kept: zeroed in one process, then deleted.
  set --
  for f in $KILN_FILES; do [ ! -f "$R$f" ] || set -- "$@" "$R$f"; done
  for f in "$S"/*; do [ ! -f "$f" ] || set -- "$@" "$f"; done
  [ $# = 0 ] || shred -n0 -z -- "$@" 2>/dev/null
  set --
  for f in $KILN_FILES; do set -- "$@" "$R$f"; done
  rm -f "$@"
  [ ! -e "$S/system.conf.d.made" ] || rmdir "$R/etc/systemd/system.conf.d" 2>/dev/null
  # shellcheck disable=SC2086 # VARS is a list of names
  if [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then systemctl unset-environment $VARS 2>/dev/null; fi
  rm -rf "$S"
}
