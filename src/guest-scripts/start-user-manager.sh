# shellcheck shell=sh
# A bootcmd of kiln's seed (src/cloudinit/seed.ts): starts the build user's systemd user manager as
# soon as cloud-init's init stage (which creates the user) has ended, beside sshd's own start, instead
# of inside kiln's first login. A login's session waits for that manager to be up: 1.0-1.2 s of the
# first command's 2.3-2.8 s under TCG on the Debian fixture, a cost every build paid after the boot.
# The unit is transient (in /run) and the manager is the one the first login starts anyway: nothing of
# it reaches the image. Without systemd, or when the user does not exist by then, nothing happens and
# the first login starts the manager as before.
# Set by kiln before this text: R (the root: '' in the guest), U (the build user's name).
: "${R?}" "${U?}"
[ -d "$R/run/systemd/system" ] || exit 0
command -v systemd-run > /dev/null 2>&1 || exit 0
# shellcheck disable=SC2016 # expanded by the unit's own shell, with the user as $1
start='u=$(id -u "$1" 2> /dev/null) || exit 0
systemctl start --no-block "user@$u.service"'
# After the init stage under either of its unit names (cloud-init 24.3 renamed it cloud-init-network).
systemd-run --no-block --quiet --unit=kiln-user-manager -p After=cloud-init.service \
  -p After=cloud-init-network.service sh -c "$start" sh "$U" || true
exit 0
