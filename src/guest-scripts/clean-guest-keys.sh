# shellcheck shell=sh
# The guest clean-up, part 1 (src/build/steps/clean-guest.ts): take every kiln build key out of the
# authorized_keys files, with shell builtins only (under TCG each process the guest starts costs
# 0.1-0.2 s). A file is rewritten in place (owner, mode and SELinux label kept), and only when it had
# such a line; it holds public keys only, so it is not zeroed first.
# Set by kiln before this text: R (the root every path is under: '' in the guest, a tree in tests) and
# KEY_PREFIX (the comment every key kiln generates starts with).
: "${R?}" "${KEY_PREFIX:?}"
for f in "$R"/root/.ssh/authorized_keys "$R"/home/*/.ssh/authorized_keys; do
  [ -f "$f" ] || continue
  keep=''; drop=0
  while IFS= read -r line || [ -n "$line" ]; do
    c=${line##* }
    # A build key's comment (the last field): the prefix, then letters, digits, _ . - only, as kiln writes it.
    case $line in *" $KEY_PREFIX"*) case ${c#"$KEY_PREFIX"} in "$c"|*[!A-Za-z0-9_.-]*) ;; *) drop=1; continue ;; esac ;; esac
    keep="$keep$line
"
  done < "$f"
  [ "$drop" = 0 ] || printf '%s' "$keep" > "$f"
done
