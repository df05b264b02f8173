#!/usr/bin/env bash
# tests/test-ctl-limits.sh: what the config can say, nbdgraphctl can say
# too: add-export takes the implicit filters (--throttle KEY=VALUE,
# --throttle-group, --copy-on-read, --detect-zeroes), set-limits changes a
# throttle node's or a group's limits live, and dump-config shows each
# change in the file's own terms.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
start_nbdgraphd "throttle-groups:
  g1: { iops-total: 1000 }
nodes:
  m0: { driver: memory, size: 4M }
  m1: { driver: memory, size: 4M }
  m2: { driver: memory, size: 4M }
exports:
  demo: { node: m0, writable: true }"

err=$dir/err

nbdgraphctl add-export e1 m1 --writable --throttle iops-total=500 \
    --throttle bps-total=8M --detect-zeroes unmap
nbdgraphctl add-export e2 m2 --throttle-group g1 --copy-on-read
nbdgraphctl nodes > $dir/nodes
grep -q '^e1.throttle ' $dir/nodes
grep -q '^e1.detect-zeroes ' $dir/nodes
grep -q '^e2.copy-on-read ' $dir/nodes
nbdgraphctl dump-config > $dir/dump
grep -qx '  e1: { node: m1, writable: true, throttle: { iops-total: 500, bps-total: 8M }, detect-zeroes: unmap }' $dir/dump
grep -qx '  e2: { node: m2, writable: false, throttle-group: g1, copy-on-read: true }' $dir/dump

# set-limits on an implicit filter needs --explicit, as every command
# naming one does; on a group it needs nothing.
expect_status 1 nbdgraphctl set-limits e1.throttle iops-total=800 2> $err
grep -q "pass --explicit to change it" $err
nbdgraphctl --explicit set-limits e1.throttle iops-total=800
nbdgraphctl set-limits g1 iops-total=3000 iops-total-max=6000
nbdgraphctl dump-config > $dir/dump
grep -qx '  e1: { node: m1, writable: true, throttle: { iops-total: 800 }, detect-zeroes: unmap }' $dir/dump
grep -qx '  g1: { iops-total: 3000, iops-total-max: 6000 }' $dir/dump
expect_status 1 nbdgraphctl set-limits nothing iops-total=1 2> $err
cat $err
expect_status 2 nbdgraphctl set-limits g1 2> $err

stop_nbdgraphd
