# shellcheck shell=sh
# A bootcmd of kiln's seed (src/cloudinit/seed.ts), given when the seed has nothing for cloud-init's
# config and final stages to do: kiln's own part needs the init stage only. It cancels their start
# jobs before they start (each stage is a Python start, 4-8 s under TCG, that would run beside the
# provisioners, or before them with cloud_init.wait) and has a transient unit ordered after the init
# stage write what cloud-init writes when its last stage ends: the instance's boot-finished (what
# templates poll for), a line on the console, then /run/cloud-init/result.json (what `cloud-init status
# --wait` and kiln's own waits look for). Nothing of this reaches the image: the jobs and the unit live
# until the guest shuts down, boot-finished goes with the rest of cloud-init's state in kiln's
# clean-up, and the image's first boot runs every stage.
# Only where systemd runs cloud-init's stages as their own services: not on cloud-init's single-process
# design (cloud-init-main.service), whose main process would wait for the stages forever.
# Set by kiln before this text: R (the root: '' in the guest).
: "${R?}"
[ -d "$R/run/systemd/system" ] || exit 0
for d in /etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
  [ ! -e "$R$d/cloud-init-main.service" ] || exit 0
done
systemctl stop --no-block cloud-config.service cloud-final.service || exit 0
# shellcheck disable=SC2016 # expanded by the unit's own shell, with the root as $1
marked='r=$1
read -r up _ < "$r/proc/uptime"
printf "%s - kiln skipped cloud-init'"'"'s config and final stages (nothing to do for the build)\n" "$up" > "$r/var/lib/cloud/instance/boot-finished"
printf "kiln: cloud-init'"'"'s config and final stages skipped (nothing to do for the build)\n" > "$r/dev/console"
printf "%s\n" "{\"v1\": {\"datasource\": null, \"errors\": []}}" > "$r/run/cloud-init/result.json"'
if ! systemd-run --no-block --quiet --unit=kiln-cloud-init-done -p After=cloud-init.service sh -c "$marked" sh "$R"; then
  # Without the unit nothing would say the stages are over: let them run after all.
  systemctl start --no-block cloud-config.service cloud-final.service
fi
exit 0
