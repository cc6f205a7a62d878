# shellcheck shell=sh
# The guest clean-up, part 1 (src/build/steps/clean-guest.ts): take every kiln build key out of the
# authorized_keys files, with shell builtins only (under TCG each process the guest starts costs
# 0.1-0.2 s). A file is rewritten in place (owner, mode and SELinux label kept), and only when it had
# such a line; it holds public keys only, so it is not zeroed first.
# The files looked at: every account's ~/.ssh/authorized_keys and authorized_keys2 (homes from
# /etc/passwd, plus /home/* and /root), and every AuthorizedKeysFile named in sshd's configuration
# (cloud-init writes the key where sshd reads it: an image may say /etc/ssh/authorized_keys/%u).
# A file that cannot be rewritten (immutable, read-only mount, full disk) ends the script with status
# 4 and its name: the image would still let the build key in.
# Set by kiln before this text: R (the root every path is under: '' in the guest, a tree in tests) and
# KEY_PREFIX (the comment every key kiln generates starts with).
: "${R?}" "${KEY_PREFIX:?}"

# Removes the build key lines from one file ($1, a path under $R); returns 1 when it could not read
# or rewrite it.
drop_build_keys() {
  [ -f "$1" ] || return 0
  keep=''; drop=0
  while IFS= read -r line || [ -n "$line" ]; do
    c=${line##* }
    # A build key's comment (the last field): the prefix, then letters, digits, _ . - only, as kiln writes it.
    case $line in *" $KEY_PREFIX"*) case ${c#"$KEY_PREFIX"} in "$c"|*[!A-Za-z0-9_.-]*) ;; *) drop=1; continue ;; esac ;; esac
    keep="$keep$line
"
  done < "$1" || return 1
  [ "$drop" = 0 ] && return 0
  { printf '%s' "$keep" > "$1"; } 2>/dev/null || return 1
}

# An AuthorizedKeysFile pattern ($1) for one account ($2 name, $3 home, $4 uid) as a guest path, in
# $keys_file (a variable, not output: a command substitution forks, and this runs per account):
# sshd's %h %u %U %% and a leading ~ expanded, a relative path taken from the home directory.
expand_keys_file() {
  p=$1; keys_file=''
  while [ -n "$p" ]; do
    case $p in
      %h*) keys_file="$keys_file$3"; p=${p#%h} ;;
      %u*) keys_file="$keys_file$2"; p=${p#%u} ;;
      %U*) keys_file="$keys_file$4"; p=${p#%U} ;;
      %%*) keys_file="$keys_file%"; p=${p#%%} ;;
      *) rest=${p#?}; keys_file="$keys_file${p%"$rest"}"; p=$rest ;;
    esac
  done
  # shellcheck disable=SC2088 # sshd's literal ~, not the shell's
  case $keys_file in
    /*) ;;
    '~') keys_file=$3 ;;
    '~/'*) keys_file="$3/${keys_file#'~/'}" ;;
    *) keys_file="$3/$keys_file" ;;
  esac
}

# sshd's default, then every AuthorizedKeysFile value in its configuration (all of them, Match blocks
# included: a file looked at once too often costs a read, one missed leaves the key in the image).
# sshd's syntax: "Keyword value", "Keyword=value" or "Keyword = value", the keyword in any case, a last
# line without its newline; Include (relative to /etc/ssh, globs) followed, 64 files at most (a loop).
# set -f keeps the values' own * and ? from matching files here; Include's globs are meant to.
patterns='.ssh/authorized_keys .ssh/authorized_keys2'
sshd_files=0
read_sshd_config() {
  [ -f "$1" ] || return 0
  sshd_files=$((sshd_files + 1))
  [ "$sshd_files" -le 64 ] || return 0
  while read -r word value || [ -n "$word" ]; do
    case $word in *=*) value="${word#*=} $value"; word=${word%%=*} ;; esac
    value=${value#=}
    case $word in
      [Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Ee][Dd][Kk][Ee][Yy][Ss][Ff][Ii][Ll][Ee])
        set -f
        # shellcheck disable=SC2086
        for v in $value; do
          v=${v#\"}; v=${v%\"}
          case $v in none | '') ;; *) patterns="$patterns $v" ;; esac
        done
        set +f ;;
      [Ii][Nn][Cc][Ll][Uu][Dd][Ee])
        # shellcheck disable=SC2086
        for inc in $value; do
          inc=${inc#\"}; inc=${inc%\"}
          case $inc in /*) ;; *) inc="/etc/ssh/$inc" ;; esac
          for f in "$R"$inc; do read_sshd_config "$f"; done
        done ;;
    esac
  done < "$1"
}
read_sshd_config "$R/etc/ssh/sshd_config"
# Also read where Debian-like images keep drop-ins, whether or not sshd_config includes them.
for conf in "$R"/etc/ssh/sshd_config.d/*.conf; do read_sshd_config "$conf"; done

stuck=''
# One account ($1 name, $2 home, $3 uid): each pattern's file.
clean_account() {
  # The patterns are words (sshd splits them on spaces too), not globs.
  set -f
  # shellcheck disable=SC2086
  set -- "$1" "$2" "$3" $patterns
  set +f
  name=$1 home=$2 uid=$3
  shift 3
  for pattern; do
    expand_keys_file "$pattern" "$name" "$home" "$uid"
    drop_build_keys "$R$keys_file" || stuck="$stuck $keys_file"
  done
}
if [ -f "$R/etc/passwd" ]; then
  while IFS=: read -r name _ uid _ _ home _; do
    [ -z "$home" ] || clean_account "$name" "$home" "$uid"
  done < "$R/etc/passwd"
fi
# Homes /etc/passwd does not list (a directory service's users): the name is the directory's.
for home in "$R"/root "$R"/home/*; do
  [ ! -d "$home" ] || clean_account "${home##*/}" "${home#"$R"}" ''
done
if [ -n "$stuck" ]; then
  echo "could not take kiln's build key out of$stuck: the file could not be read or rewritten (immutable? read-only mount? disk full? a rewrite that failed may have emptied it), and an image made now could let the build key in. Fix: leave the file readable and writable by root until the build ends (set chattr +i or read-only mounts in the image's first boot, not in a provisioner)" >&2
  exit 4
fi
