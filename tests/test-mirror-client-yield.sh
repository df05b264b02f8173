#!/usr/bin/env bash
# tests/test-mirror-client-yield.sh: a mirror's bulk copy keeps at most
# two chunks in flight while clients of the daemon are busy (a fio
# writer on another export), and its full width (16) when none is.  The
# target is a log filter over a delay filter, so each background write
# stays in flight 20 ms and the log shows how many overlap.  A writer
# that outruns two chunks makes it widen.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires fio --version
requires jq --version
if ! fio --enghelp=nbd 2>/dev/null | grep -q '^uri'; then
    echo "$0: SKIP: this fio has no nbd engine" >&2
    exit 77
fi
log=$dir/dst.log
start_nbdgraphd "nodes:
  src: { driver: memory, size: 16M }
  busy: { driver: memory, size: 64M }
  dst-mem: { driver: memory, size: 16M }
  dly: { driver: delay, file: dst-mem, delay-write: 20ms }
  lg: { driver: log, file: dly, logfile: $log }
exports:
  vm0: { node: src, writable: true }
  vm1: { node: busy, writable: true }" vm0

qemu-io -f raw "$uri" -c 'write -P 0x5a 0 16M' > /dev/null

# The most background writes in flight at once in log lines $1..$2.
max_background_writes ()
{
    sed -n "$1,$2p" $log | awk '
        / write offset=.* flags=[^ ]*background/ {
            match($0, / id=[0-9]+ /); bg[substr($0, RSTART, RLENGTH)] = 1
            if (++n > max) max = n
        }
        / write return=/ {
            match($0, / id=[0-9]+ /); id = substr($0, RSTART, RLENGTH)
            if (id in bg) { n--; delete bg[id] }
        }
        END { print max + 0 }'
}

# mirror, wait for ready, cancel; prints the widest point of its copy.
mirror_width ()
{
    local from to
    from=$(($(wc -l < $log) + 1))
    nbdgraphctl mirror src lg --job-id "$1" > /dev/null
    nbdgraphctl wait "$1" | grep -q "job '$1' ready"
    nbdgraphctl job cancel "$1" > /dev/null
    nbdgraphctl wait "$1" > /dev/null 2>&1 || true
    to=$(wc -l < $log)
    max_background_writes $from $to
}

# No client: the whole width.
idle=$(mirror_width m0)
echo "no client: $idle background writes at once"
[ "$idle" -gt 2 ] || fail "with no client the copy ran $idle wide"

# A client writing all the time: two at most.
fio --name=w --ioengine=nbd --uri="nbd+unix:///vm1?socket=$sock" \
    --rw=randwrite --bs=4k --iodepth=1 --size=64M --time_based \
    --runtime=120 > $dir/fio.out 2>&1 &
fio_pid=$!
wait_export_connections vm1 1
busy=$(mirror_width m1)
kill $fio_pid; wait $fio_pid || true
echo "client busy: $busy background writes at once"
[ "$busy" -ge 1 ] || fail "the copy did not run while the client wrote"
[ "$busy" -le 2 ] || fail "the copy ran $busy wide while a client wrote"

# A client that dirties the source faster than two chunks clean it
# (64 KiB writes as fast as they go; two 20 ms writes copy 6.4 MB/s):
# the copy widens.  No copy gets ready while writes come more often
# than a chunk takes (nothing is ever idle), so the writer stops after
# 2 s and then the mirror must get ready.
fio --name=w --ioengine=nbd --uri="$uri" --rw=randwrite --bs=64k \
    --iodepth=1 --size=16M --time_based --runtime=2 > $dir/fio.out 2>&1 &
fio_pid=$!
wait_export_connections vm0 1
from=$(($(wc -l < $log) + 1))
nbdgraphctl mirror src lg --job-id m2 > /dev/null
wait $fio_pid
wide=$(max_background_writes $from $(wc -l < $log))
echo "fast writer: $wide background writes at once"
[ "$wide" -gt 2 ] || fail "the copy did not widen under a fast writer"
timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait m2 |
    grep -q "job 'm2' ready" || fail "the mirror did not get ready"
nbdgraphctl job cancel m2
