#!/usr/bin/env bash
# `make image`: builds the default example (examples/debian-12-cloud.yaml) into output/debian-12-cloud/.
# Its base image is the debian-12-cloud fixture, built offline from Debian packages by `make fixtures`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node bin/kiln.js build examples/debian-12-cloud.yaml --force "$@"
