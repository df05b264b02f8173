#!/usr/bin/env bash
# tests/test-bench-compare.sh: contrib/bench/compare runs and prints its
# table.  Two tiny real runs, installing nothing: the memory backing with
# a 1 MiB and a multi-connection row of 1 s each, then the block-status
# row on a small tmpfs file against whichever peers are installed.  Every
# server it started is gone afterwards; bad options get a clear error.
source "$srcdir/functions.sh"
set -e -x
requires python3 --version
requires nbdinfo --version
requires fio --version
if ! fio --enghelp=nbd 2>/dev/null | grep -q '^uri'; then
    echo "$0: SKIP: this fio has no nbd engine" >&2
    exit 77
fi
compare=$top_srcdir/contrib/bench/compare
out=$dir/out

expect_status 2 "$compare" --backing floppy 2> $dir/err
grep -q "unknown backing 'floppy'" $dir/err
expect_status 2 "$compare" --size 12Q 2> $dir/err
grep -q "bad size '12Q'" $dir/err

"$compare" --no-install --backing memory --only seqwrite-1m,randread-4k-4c \
    --seconds 1 --size 32M --out $out > $dir/table
cat $dir/table
# A figure, and the server CPU per request beside it.
grep -Eq '^\| memory \| seq write 1M qd8 \| MB/s \| [0-9,]+ \|.*\| [0-9.]+ \|' \
    $dir/table
grep -Eq '^\| memory \| rand read 4K qd32 ×4 conns \| IOPS \| [0-9,]+ \|' \
    $dir/table

"$compare" --no-install --backing shm --only map --map-size 32M \
    --out $out > $dir/table 2> $dir/err
cat $dir/table $dir/err
grep -Eq '^\| shm \| block status: nbdinfo --map of 32M allocated \| s \| [0-9.]+ \|' \
    $dir/table
# The file it mapped is gone.
map=$(sed -n 's/^compare: writing 32M to \(.*\) for the block-status row$/\1/p' \
    $dir/err)
[ -n "$map" ] || fail "compare did not say which file it mapped"
[ ! -e "$map" ] || fail "compare left $map behind"

# Stopped by PID, each of them.  nbd-server detaches, so its parent is
# not compare: a zombie waiting for that parent counts as stopped.
pids=$(sed -n 's/^# .*: pid \([0-9]*\)$/\1/p' $out/servers.log)
[ -n "$pids" ]
for p in $pids; do
    state=$(ps -o stat= -p "$p" || true)
    [ -z "$state" ] || [[ $state == Z* ]]
done
