#!/usr/bin/env bash
# Installs what only the tests and benchmarks use, as root, on top of scripts/setup.sh's packages:
# the real servers the publish tests talk to on loopback, shellcheck for the guest scripts, and the
# benchmarks' load and timing tools. `make setup-test` runs it; `make test`, `make bench` and .ci/run
# depend on it, `make image` does not. Fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-apt.sh

TEST_PACKAGES=(
  docker-registry skopeo                   # publish tests: OCI registry (CNCF distribution) and skopeo to read back
  swift swift-proxy swift-account swift-container swift-object memcached  # publish tests: Swift with s3api (aborted multipart uploads; s3api's multipart needs memcached)
  shellcheck                               # make lint-shell: the guest shell scripts
  openssh-sftp-server                      # unit tests: kiln's SFTP client against OpenSSH's own sftp-server (its limits@openssh.com), no sshd
  stress-ng                                # make bench BENCH_LOAD: the fixed background load beside kiln and Packer
  time                                     # make bench: /usr/bin/time counts each tool's CPU-seconds
  slurmctld slurmd slurm-client munge      # many-machines e2e: a two-node Slurm cluster in a temp dir (test/helpers/servers/slurm.ts)
)
# Installed with their Recommends, as the publish tests were run against them: Glance's Python
# stack is large, and a server that fails to start for want of a recommended module would only show
# on a brand-new machine.
TEST_PACKAGES_WITH_RECOMMENDS=(
  glance-api python3-glance                # publish tests: OpenStack Glance (sqlite, file store, no Keystone)
)
apt_install setup-test -- "${TEST_PACKAGES[@]}" --with-recommends "${TEST_PACKAGES_WITH_RECOMMENDS[@]}"
