# shellcheck shell=sh
# cloud_init_final_wait: waits for cloud-init's last stage (modules-final) to end, as `cloud-init status
# --wait` does, without its Python start (seconds under TCG): /run/cloud-init/status.json exists from
# its first stage on, result.json only once the last one ended. Returns 1 when it still had not ended
# after WAIT_SECONDS seconds, else 0 (also when cloud-init did not run on this boot). The clean-up
# (src/build/steps/clean-guest.ts) then fails the build; the package list (sbom.ts) reads what it can.
# Set by kiln before this text: R (the root: '' in the guest) and WAIT_SECONDS.
: "${R?}" "${WAIT_SECONDS:?}"
cloud_init_final_wait() {
  n=0
  while [ -e "$R/run/cloud-init/status.json" ] && [ ! -e "$R/run/cloud-init/result.json" ]; do
    [ "$n" -lt "$WAIT_SECONDS" ] || return 1
    n=$((n + 1)); sleep 1
  done
  return 0
}
