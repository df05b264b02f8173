#!/usr/bin/env bash
# tests/test-memory-workers-stop.sh: a drained section and the daemon's
# stop while a memory node's copies are out on its workers.  nbdcopy
# writes 1 MiB requests (each one's copy goes to a worker) while a
# mirror of the node pivots the export onto its copy (the pivot drains
# the export: the copies in flight finish first); the data then reads
# back whole.  Then SIGTERM while such writes are in flight: the daemon
# exits 0 (under ASan: without touching a freed page).
source "$srcdir/functions.sh"
set -e -x
requires nbdcopy --version
requires cmp --version
requires jq --version

start_nbdgraphd "nodes:
  src: { driver: memory, size: 64M }
  dst: { driver: memory, size: 64M }
exports:
  vm: { node: src, writable: true }" vm

head -c 64M /dev/urandom > "$dir/rand.img"
nbdcopy "$dir/rand.img" "$uri"
nbdgraphctl mirror src dst --job-id m0 > /dev/null
nbdgraphctl wait m0 | grep -q "job 'm0' ready"

# The pivot comes while nbdcopy's writes (the same data, again and
# again) are on the workers.
(
    for i in $(seq 20); do
        nbdcopy --request-size=1048576 --requests=8 "$dir/rand.img" "$uri"
    done
) &
copy_pid=$!
sleep 0.3
nbdgraphctl wait m0 --complete > /dev/null
wait $copy_pid
[ "$(nbdgraphctl qmp '{"execute":"query-block-exports"}' |
     jq -r '.return[0]."node-name"')" = dst ]
nbdcopy "$uri" "$dir/out.img"
cmp "$dir/rand.img" "$dir/out.img"

# SIGTERM with writes in flight, until the daemon drops the client.
(
    for i in $(seq 20); do
        nbdcopy --request-size=1048576 --requests=8 "$dir/rand.img" "$uri" \
            > /dev/null 2>&1 || exit 0
    done
) &
writer=$!
sleep 0.5
stop_within 20
wait $writer || true
