#!/usr/bin/env bash
# Installs everything kiln and its tests need on a Debian 12 machine, as root. Fast when already done:
# apt is only consulted for packages that are missing, npm ci only when the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils ovmf          # the hypervisor, qemu-img, UEFI firmware
  swtpm swtpm-tools                        # a TPM 2.0 per build (tpm: true)
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
  stress-ng                                # make bench BENCH_LOAD: the fixed background load beside kiln and Packer
  socat                                    # air-gapped builds: QEMU's guestfwd runs one per guest connection to kiln's proxy
  docker-registry skopeo                   # publish tests: OCI registry (CNCF distribution) and skopeo to read back
  swift swift-proxy swift-account swift-container swift-object memcached  # publish tests: Swift with s3api (aborted multipart uploads; s3api's multipart needs memcached)
)
# Installed with their Recommends, as the publish tests were run against them: Glance's Python
# stack is large, and a server that fails to start for want of a recommended module would only show
# on a brand-new machine.
APT_PACKAGES_WITH_RECOMMENDS=(
  glance-api python3-glance                # publish tests: OpenStack Glance (sqlite, file store, no Keystone)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
missing_with_recommends=()
for p in "${APT_PACKAGES_WITH_RECOMMENDS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_with_recommends+=("$p")
done
if ((${#missing[@]} + ${#missing_with_recommends[@]})); then
  echo "setup: installing apt packages: ${missing[*]} ${missing_with_recommends[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: must run as root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ((${#missing[@]})); then apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; fi
  if ((${#missing_with_recommends[@]})); then apt-get install -y -qq "${missing_with_recommends[@]}" >/dev/null; fi
else
  echo "setup: apt packages present"
fi

stamp=node_modules/.kiln-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: node_modules up to date"
else
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
