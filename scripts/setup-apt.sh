#!/usr/bin/env bash
# Sourced by scripts/setup.sh and scripts/setup-test-servers.sh: installs the apt packages of a list
# that are missing, and only those (apt is not consulted when everything is there).
# apt_install LABEL -- PACKAGES... [--with-recommends PACKAGES...]
apt_install() {
  local label=$1; shift; [ "$1" = -- ] && shift
  local plain=() recommends=() into=plain p
  for p in "$@"; do
    if [ "$p" = --with-recommends ]; then into=recommends; continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && continue
    if [ $into = plain ]; then plain+=("$p"); else recommends+=("$p"); fi
  done
  if ((${#plain[@]} + ${#recommends[@]} == 0)); then
    echo "$label: apt packages present"
    return 0
  fi
  echo "$label: installing apt packages: ${plain[*]} ${recommends[*]}"
  if [ "$(id -u)" != 0 ]; then echo "$label: must run as root to install packages" >&2; return 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ((${#plain[@]})); then apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null; fi
  if ((${#recommends[@]})); then apt-get install -y -qq "${recommends[@]}" >/dev/null; fi
}
