#!/usr/bin/env bash
# tests/test-shutdown-throttled.sh: SIGTERM stops the daemon at once even
# when throttle limits hold requests back — a mirror whose target is
# throttled to 1 byte/s, and a client with requests queued behind an
# export's 1 IOPS limit.  The exit lifts the limits as QEMU's does (its
# exit drains with limits off); before, the first case waited for the
# throttle forever and the second for every queued request at 1/s.
source "$srcdir/functions.sh"
set -e -x
requires nbdcopy --version
requires qemu-io --version

# A mirror onto a target throttled to a byte a second: its first copies
# wait in the throttle node when the daemon is told to stop.
start_nbdgraphd "nodes:
  m0: { driver: memory, size: 16M }
  t0: { driver: memory, size: 16M }
  slow: { driver: throttle, file: t0, limits: { bps-total: 1 } }
exports:
  demo: { node: m0, writable: true }"
qemu-io -f raw -c "write -P 0x55 0 4M" "$uri"   # data to copy
nbdgraphctl mirror m0 slow --job-id j0
sleep 0.5
nbdgraphctl jobs | grep -q "j0.*running"
stop_within 10

# A client's reads queued behind a 1 IOPS export limit (nbdcopy keeps
# many requests in flight).
start_nbdgraphd "nodes:
  m1: { driver: memory, size: 64M }
exports:
  demo: { node: m1, writable: true, throttle: { iops-total: 1 } }"
qemu-io -f raw -c "write -P 0x66 0 4M" "$uri"   # one request: data to read
nbdcopy --requests=16 "$uri" null: > "$dir/copy.out" 2>&1 &
copy_pid=$!
sleep 1
stop_within 10
wait $copy_pid || true          # its connection went with the daemon
