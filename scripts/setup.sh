#!/usr/bin/env bash
# Installs what building with kiln needs on a Debian 12 machine, as root: the hypervisor and image
# tools, what `make fixtures` builds the base images with, and the npm dependencies. The servers and
# tools only the tests use are scripts/setup-test-servers.sh's (`make setup-test`). Fast when already
# done: apt is only consulted for packages that are missing, npm ci only when the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-apt.sh

APT_PACKAGES=(
  qemu-system-x86 qemu-utils ovmf          # the hypervisor, qemu-img, UEFI firmware
  swtpm swtpm-tools                        # a TPM 2.0 per build (tpm: true)
  qemu-system-arm qemu-efi-aarch64         # arm64 guests (arch: aarch64): qemu-system-aarch64, AAVMF
  xorriso genisoimage                      # seed ISOs and the installer ISO
  isolinux syslinux-common                 # El Torito BIOS boot for the installer ISO
  mmdebstrap                               # Debian root trees for fixture images
  grub-pc-bin grub-efi-amd64-bin grub-common  # bootloaders placed by hand (no mounting)
  mtools dosfstools fdisk e2fsprogs        # ESP, GPT, ext4 built from a directory
  cpio zstd xz-utils gzip                  # initramfs and compression
  busybox-static                           # the tiny guest's userland
  openssh-client                           # ssh-keygen for host keys; the ssh Ansible runs
  ansible-core                             # the ansible provisioner (ansible-playbook on this machine)
  util-linux iproute2 procps               # setpriv, ss, ps
  socat                                    # air-gapped builds: QEMU's guestfwd runs one per guest connection to kiln's proxy
)
apt_install setup -- "${APT_PACKAGES[@]}"

stamp=node_modules/.kiln-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: node_modules up to date"
else
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
