#!/bin/sh
# The provisioning both builders run (bench/side-by-side): 100 small files and a 64 MiB blob.
set -e
mkdir -p /var/tmp/bench
for i in $(seq 1 100); do echo "file $i" > /var/tmp/bench/f$i; done
dd if=/dev/urandom of=/var/tmp/bench/blob bs=1M count=64 status=none
