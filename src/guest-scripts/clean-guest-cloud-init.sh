# shellcheck shell=sh
# The guest clean-up, part 2, on cloud-init guests (src/build/steps/clean-guest.ts): the host keys kiln
# injected, cloud-init's state (its copies of the user-data hold the injected private key), its logs
# and the machine-id.
# Files that can hold a secret are overwritten with zeros in place, on the disk (an fdatasync each)
# before any is deleted: a trim cannot free a qcow2 cluster other data still uses. One find hands them
# all to one zeroing process, then one rm. Not zeroed: cloud-init's semaphores (timestamps), empty
# files, and the image's own seed under /var/lib/cloud/seed, kept as `cloud-init clean` keeps it.
# Set by kiln before this text: R (the root: '' in the guest) and WAIT_SECONDS, and cloud-init-final-wait.sh.
: "${R?}" "${WAIT_SECONDS:?}"
state="$R/var/lib/cloud"
if command -v cloud-init >/dev/null 2>&1; then
  # With cloud_init.wait false the provisioners may have finished before cloud-init's later stages:
  # what those write must not come back after the wipe (cloud-init-final-wait.sh, bounded, so a last
  # stage that never ends fails the build here).
  cloud_init_final_wait || { echo "cloud-init's last stage (modules-final) had not finished $WAIT_SECONDS s after provisioning (no /run/cloud-init/result.json): not wiping its state while it still writes; check the guest's cloud-final.service, or set cloud_init.wait: true" >&2; exit 3; }
  find "$R/etc/ssh" "$state" "$R/var/log/cloud-init.log" "$R/var/log/cloud-init-output.log" \( -path "$state/seed" -o -type d -name sem \) -prune -o \
    -type f ! -empty \( ! -path "$R/etc/ssh/*" -o -name 'ssh_host_*' \) -exec shred -n0 -z -- {} + 2>/dev/null
  # What `cloud-init clean --logs` removes (everything under /var/lib/cloud but its seed), without its Python start.
  set --
  for d in "$state"/* "$state"/.[!.]*; do [ "$d" = "$state/seed" ] || [ ! -e "$d" ] || set -- "$@" "$d"; done
  rm -rf -- "$@" "$R/var/log/cloud-init.log" "$R/var/log/cloud-init-output.log" "$R"/etc/ssh/ssh_host_*
  # What rm could not delete (an immutable file, a read-only mount) would ship in the image: the
  # injected host key every machine made from it would share, the seed's copies. Named, and the build stops.
  # "$@" still holds the entries of $state that rm was given (the seed left out).
  left=''
  for f in "$R"/etc/ssh/ssh_host_* "$@" "$R/var/log/cloud-init.log" "$R/var/log/cloud-init-output.log"; do
    [ ! -e "$f" ] || left="$left ${f#"$R"}"
  done
  if [ -n "$left" ]; then
    echo "could not delete$left: they hold the host key kiln injected or cloud-init's copy of the seed, and would ship in the image. Fix: leave them deletable by root until the build ends (no chattr +i or read-only mount over them in a provisioner)" >&2
    exit 5
  fi
  # The machine-id the build's boot made (builds restored from one warm base share it): emptied, as
  # systemd expects of an image, so every instance makes its own at its first boot.
  if [ -s "$R/etc/machine-id" ]; then : > "$R/etc/machine-id"; fi
fi
