#!/usr/bin/env bash
# tests/test-mirror-filter-node.sh: the mirror_top filter of
# blockdev-mirror and block-commit (filter-node-name): it shows in the
# graph under its name while the job runs, with the exports above it,
# and is gone once the job ended — completed (active commit: the export
# on the base), cancelled (mirror: the export back on the source) or
# finished by itself (intermediate commit).  A name in use is refused
# with the reason, nothing started.  qemu-io checks the data each time.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version
start_nbdgraphd "nodes:
  base: { driver: memory, size: 8M }
  mid: { driver: memory, size: 8M, backing: base }
  top: { driver: memory, size: 8M, backing: mid }
  dst: { driver: memory, size: 8M }
exports:
  vm1: { node: top, writable: true }" vm1

out=$dir/out
uri="nbd+unix:///vm1?socket=$sock"
io () {
    qemu-io -f raw "$uri" "$@" > $out
    cat $out
    ! grep -q 'verification failed' $out
}
# The driver of node $1, or "none".
driver () {
    nbdgraphctl --json nodes |
        jq -r --arg n "$1" '[.[] | select(."node-name" == $n) | .drv][0] //
                            "none"'
}
# The node export vm1 is on.
export_child () {
    nbdgraphctl qmp '{"execute":"query-block-exports"}' |
        jq -r '.return[0]."node-name"'
}

io -c 'write -P 0x11 0 8M'
io -c 'write -P 0x22 1M 1M'

# Names in use: refused, nothing started.
expect_status 1 nbdgraphctl mirror top dst --filter-node-name mid 2> $out
grep -q "filter-node-name 'mid': node 'mid' already exists" $out
expect_status 1 nbdgraphctl commit top --filter-node-name base 2> $out
grep -q "filter-node-name 'base': node 'base' already exists" $out
nbdgraphctl --json jobs | jq -e 'length == 0'

# A mirror with a filter, cancelled: the export goes back on top.
nbdgraphctl mirror top dst --job-id m0 --speed 64K --filter-node-name mf
[ "$(driver mf)" = mirror_top ]
nbdgraphctl graph | tee $out
grep -A1 'export vm1' $out | grep -q 'mf (mirror_top)'
io -c 'write -P 0x33 2M 64K'
nbdgraphctl job cancel m0
nbdgraphctl wait m0 || true
[ "$(driver mf)" = none ]
[ "$(export_child)" = top ]
io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 64K'

# Intermediate commit of mid into base with a filter above mid: it ends
# by itself, top then backed by base, the filter gone.  mid holds
# nothing, so the job copies nothing and may end at once: it is kept
# until dismissed, for `wait`.
nbdgraphctl qmp '{"execute": "block-commit", "arguments": {"job-id": "c0",
    "device": "top", "top-node": "mid", "base-node": "base",
    "filter-node-name": "cf0", "auto-dismiss": false}}'
[ "$(driver cf0)" = mirror_top ] || [ "$(driver cf0)" = none ]
nbdgraphctl wait c0 > $out
cat $out
grep -q "job 'c0' completed" $out
nbdgraphctl job dismiss c0
[ "$(driver cf0)" = none ]
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "top") |
           .children[0]."node-name" == "base"'
io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 64K'

# Active commit of top into base with a filter: ready, complete, the
# export on base, the filter gone.
nbdgraphctl commit top --job-id c1 --speed 1M --filter-node-name cf1
[ "$(driver cf1)" = mirror_top ]
nbdgraphctl graph | tee $out
grep -A1 'export vm1' $out | grep -q 'cf1 (mirror_top)'
io -c 'write -P 0x44 4M 64K'
nbdgraphctl wait c1 --complete > $out
cat $out
grep -q "job 'c1' completed" $out
[ "$(driver cf1)" = none ]
[ "$(export_child)" = base ]
io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 64K' \
   -c 'read -P 0x44 4M 64K'
nbdgraphctl --json jobs | jq -e 'length == 0'
stop_nbdgraphd
