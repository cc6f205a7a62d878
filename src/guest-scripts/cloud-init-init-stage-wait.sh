# shellcheck shell=sh
# cloud_init.wait where kiln's seed skipped the config and final stages (cloud-init-skip-later-stages.sh):
# all there is to wait for is the init stage, whose end the seed's unit marks with result.json. Waiting
# for that file and reading the stages' errors from status.json starts no Python (`cloud-init status`
# is one, 2-3 s under TCG); only errors to report ask cloud-init for its own account of them.
# Set by kiln before this text: R (the root: '' in the guest), WAIT_SECONDS, and cloud-init-final-wait.sh.
: "${R?}" "${WAIT_SECONDS:?}"
cloud_init_final_wait || { echo "cloud-init's init stage had not ended after $WAIT_SECONDS s (no $R/run/cloud-init/result.json)"; exit 1; }
# status.json lists each stage's errors; a list that does not close on its own line holds some.
if grep -q '"errors": \[ *$' "$R/run/cloud-init/status.json" 2>/dev/null; then
  cloud-init status --long
  exit 1
fi
echo "status: done"
