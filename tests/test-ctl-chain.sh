#!/usr/bin/env bash
# tests/test-ctl-chain.sh: nbdgraphctl snapshot, stream and commit
# against the real daemon, with qemu-io checking the data the export
# shows after each step.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version
start_nbdgraphd "nodes:
  base: { driver: memory, size: 8M }
  ov1: { driver: memory, size: 8M }
  ov2: { driver: memory, size: 8M }
  ov3: { driver: memory, size: 8M }
exports:
  vm1: { node: base, writable: true, detect-zeroes: on }" vm1

out=$dir/out
uri="nbd+unix:///vm1?socket=$sock"
io () {
    qemu-io -f raw "$uri" "$@" > $out
    cat $out
    ! grep -q 'verification failed' $out
}

io -c 'write -P 0x11 0 8M'
nbdgraphctl snapshot base ov1
io -c 'write -P 0x22 1M 1M'
nbdgraphctl snapshot ov1 ov2
io -c 'write -P 0x33 2M 1M'
nbdgraphctl graph > $out
cat $out
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "vm1.detect-zeroes") |
           .children[0]."node-name" == "ov2"'
expect_status 1 nbdgraphctl snapshot base ov1 2> $out
grep -q "overlay node 'ov1' already has a backing node" $out
expect_status 2 nbdgraphctl snapshot base

# Intermediate commit of ov1 into base: ov2 then sits on base.
# A rate limit keeps the job there until wait follows it (ov1 holds
# 1 MiB, the only thing a commit copies: 2 s).
nbdgraphctl commit ov2 --top ov1 --base base --job-id c0 --speed 512K
nbdgraphctl wait c0 > $out
cat $out
grep -q "job 'c0' completed" $out
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "ov2") |
           .children[0]."node-name" == "base"'
io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 1M' \
   -c 'read -P 0x11 3M 5M'
grep -q 'read 5242880' $out

# Stream the rest into ov2: it stands alone.
nbdgraphctl stream ov2 --job-id s0 --speed 8M
nbdgraphctl wait s0 > $out
cat $out
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "ov2") | .children | length == 0'
io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 1M'
grep -q 'read 1048576' $out

# Active commit of ov3 into ov2: wait --complete pivots the export back.
nbdgraphctl snapshot ov2 ov3
io -c 'write -P 0x44 4M 1M'
expect_status 2 nbdgraphctl stream ov3 --top ov2
nbdgraphctl commit ov3 --job-id c1
nbdgraphctl wait c1 --complete > $out
cat $out
grep -q "job 'c1' completed" $out
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "vm1.detect-zeroes") |
           .children[0]."node-name" == "ov2"'
io -c 'read -P 0x33 2M 1M' -c 'read -P 0x44 4M 1M' -c 'read -P 0x11 5M 3M'
grep -q 'read 3145728' $out
nbdgraphctl --json jobs | jq -e 'length == 0'
stop_nbdgraphd
