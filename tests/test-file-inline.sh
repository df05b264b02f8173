#!/usr/bin/env bash
# tests/test-file-inline.sh: the file driver's loop shortcuts
# (graph/drv-file.c), seen with strace -f, with the data checked each
# time.  On a disk file system with `aio: threads`:
# - page cache hot, buffered: reads of up to 64 KiB are
#   preadv2(RWF_NOWAIT) on the loop thread, whole, and no worker thread
#   reads (no pool hand-off);
# - 1 MiB reads, hot: never on the loop (its time goes to sending the
#   replies meanwhile); workers pread64 them, and with `aio: io_uring`
#   the ring's kernel workers (iou-wrk threads) copy them;
# - page cache cold (posix_fadvise DONTNEED): preadv2 cannot answer, so
#   worker threads read with pread64;
# - cache.direct: no RWF_NOWAIT try at all, the workers read.
# - a slow RWF_NOWAIT read (strace delays each preadv2's return: the
#   page cache hit that waited for readahead) sends the next reads to
#   the workers for a while: the loop is not held read after read.
# - small buffered writes are pwrite64s on the loop thread, and a slow
#   one (strace again) sends the next ones to the workers for a while.
# On tmpfs every read of up to 64 KiB is a pread64 on the loop thread,
# and 1 MiB ones are the workers' (old code: on the loop too).
source "$srcdir/functions.sh"
set -e -x
requires strace -V
requires nbdcopy --version
requires python3 --version

# A disk file system for the first three: $dir unless that is tmpfs.
img=$dir
if [ "$(stat -f -c %T "$dir")" = tmpfs ]; then
    img=$(mktemp -d /var/tmp/ngtest-inline.XXXXXX)
    trap 's=$?; rm -rf "$img"; (exit $s); _ng_cleanup' EXIT
fi
shm=
if [ -d /dev/shm ] && [ -w /dev/shm ] &&
       [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
    shm=$(mktemp -d /dev/shm/ngtest-inline.XXXXXX)
    trap 's=$?; rm -rf "$img" "$shm"; (exit $s); _ng_cleanup' EXIT
fi
M=$((1024 * 1024))
dd if=/dev/urandom of="$dir/rnd" bs=1M count=8 status=none
for f in "$img/buf.img" "$img/direct.img" "$img/wr.img" "$img/ring.img" \
         ${shm:+"$shm/shm.img"}; do
    cp "$dir/rnd" "$f"
    truncate -s 16M "$f"
done

# drop_cache FILE: the file's clean pages out of the page cache.
drop_cache ()
{
    sync "$1"
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
}

shm_node=
shm_export=
if [ -n "$shm" ]; then
    shm_node="  f2: { driver: file, filename: \"$shm/shm.img\" }"
    shm_export="  shm: { node: f2 }"
fi
start_nbdgraphd "nodes:
  f0: { driver: file, filename: \"$img/buf.img\", aio: threads }
  f1: { driver: file, filename: \"$img/direct.img\", cache.direct: true }
  f3: { driver: file, filename: \"$img/wr.img\", aio: threads }
  f4: { driver: file, filename: \"$img/ring.img\", aio: io_uring }
$shm_node
exports:
  demo: { node: f0 }
  direct: { node: f1 }
  wr: { node: f3, writable: true }
  ring: { node: f4 }
$shm_export"

# traced TAG CMD...: run CMD with strace -f on the daemon (preadv2,
# pread64 and pwrite64 only; $inject: strace's -e inject=) writing
# $dir/TAG.trace.
traced ()
{
    local tag=$1 strace_pid rc=0
    shift

    strace -f -qq -e trace=preadv2,pread64,pwrite64 \
        ${inject:+-e "inject=$inject"} \
        -o "$dir/$tag.trace" -p "$nbdgraphd_pid" &
    strace_pid=$!
    sleep 1                         # let it attach to every thread
    "$@" || rc=$?
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    return $rc
}

# traced_read URI TAG [SIZE]: read the export in requests of SIZE
# (default 64 KiB), traced; check the data.
traced_read ()
{
    traced "$2" nbdcopy --requests 16 --request-size="${3:-65536}" "$1" \
        "$dir/$2.out" || fail "$2: nbdcopy failed"
    # Explicit: set -e does not hold inside a case that timed runs.
    cmp -n $((8 * M)) "$dir/rnd" "$dir/$2.out" || fail "$2: wrong data"
    cmp -i $((8 * M)) -n $((8 * M)) "$dir/$2.out" /dev/zero ||
        fail "$2: wrong data past 8 MiB"
}

# traced_write TAG: write the random data over the export wr in 64 KiB
# requests, traced; check the file.
traced_write ()
{
    traced "$1" nbdcopy --requests 16 --request-size=65536 "$dir/rnd" \
        "$(uri_for wr)" || fail "$1: nbdcopy failed"
    cmp -n $((8 * M)) "$dir/rnd" "$img/wr.img" || fail "$1: wrong data"
}

# count TAG WHO CALL: calls of CALL in TAG's trace made by the loop
# thread (WHO=loop: the thread id is the daemon's pid) or by others
# (WHO=workers); RWF_NOWAIT preadv2s only.
count ()
{
    local tag=$1 who=$2 call=$3 op='=='

    [ "$who" = loop ] || op='!='
    awk -v pid="$nbdgraphd_pid" -v call="$call(" "
        \$1 $op pid && index(\$2, call) == 1 &&
        (call != \"preadv2(\" || /RWF_NOWAIT/) { n++ }
        END { print n + 0 }" "$dir/$tag.trace"
}

# timed NAME CASE: run CASE (a function that traces one step and
# returns 1, saying why, if what it saw is wrong) up to three times.
# What these cases count depends on timing: strace stops each traced
# thread at every call, and on a loaded machine (the suite runs tests in
# parallel) a stop can make a shortcut look slow, which sends the next
# requests to the workers for a while (the back-off).  Code without the
# shortcut, or without the back-off, fails all three.
timed ()
{
    local try
    for try in 1 2 3; do
        "$2" && return 0
        echo "$1: try $try did not hold" >&2
    done
    fail "$1: did not hold in 3 tries"
}

# Hot: the 64 KiB reads are whole RWF_NOWAIT preadv2s on the loop
# thread.  Not every one (see timed).
hot_case ()
{
    cat "$img/buf.img" > /dev/null
    traced_read "$uri" hot
    [ "$(count hot workers preadv2)" -eq 0 ] ||
        fail "RWF_NOWAIT reads on worker threads"
    ! grep -E 'preadv2\(.*RWF_NOWAIT\) = -1' "$dir/hot.trace" ||
        { echo "a RWF_NOWAIT read of cached data failed on the loop" >&2
          return 1; }
    [ "$(count hot loop preadv2)" -ge 32 ] ||
        { echo "hot reads not on the loop: $(count hot loop preadv2)" >&2
          return 1; }
}
timed hot hot_case

# Hot, 1 MiB: none on the loop, the workers read (old code: 8 RWF_NOWAIT
# preadv2s on the loop, no worker read).
cat "$img/buf.img" > /dev/null
traced_read "$uri" big $M
[ "$(count big loop preadv2)" -eq 0 ] || fail "1 MiB reads on the loop"
[ "$(count big workers pread64)" -ge 8 ] || fail "1 MiB reads not on workers"

# The same with aio: io_uring: the ring's kernel workers copy them, which
# they do only for ops sent to them (a hot read the loop submits would
# be copied in its io_uring_enter: old code, no iou-wrk thread at all).
# They stay some seconds after their last op (5 s idle), which a
# loaded machine may take just to detach strace (see timed).
ring_case ()
{
    cat "$img/ring.img" > /dev/null
    traced_read "$(uri_for ring)" ring $M
    [ "$(count ring loop preadv2)" -eq 0 ] || fail "ring reads on the loop"
    grep -l '^iou-wrk' /proc/"$nbdgraphd_pid"/task/*/comm ||
        { echo "1 MiB io_uring reads not given to the ring's kernel" \
               "workers" >&2
          return 1; }
}
timed ring ring_case

# Slow: every preadv2 returns 100 ms late (workers use pread64, so
# only the loop's tries are slowed).  Without the back-off each of the
# 32+ reads would hold the loop for 100 ms; with it, after a slow try
# the reads go to the workers for 10 ms, 20 ms, 40 ms...
slow_case ()
{
    local tries reads
    cat "$img/buf.img" > /dev/null
    inject=preadv2:delay_exit=100000 traced_read "$uri" slow
    tries=$(count slow loop preadv2)
    reads=$(count slow workers pread64)
    [ "$tries" -ge 1 ] || fail "no RWF_NOWAIT try on the loop"
    [ "$reads" -ge 1 ] || fail "slow loop reads did not back off"
    [ "$tries" -lt "$reads" ] ||
        { echo "the loop kept trying: $tries tries, $reads worker reads" >&2
          return 1; }
}
timed slow slow_case

# Writes: 128 of 64 KiB, most on the loop (as for hot reads, strace's
# stops may make a few look slow).  Zeroes first, so each write changes
# the file.
write_case ()
{
    dd if=/dev/zero of="$img/wr.img" bs=1M count=8 conv=notrunc status=none
    traced_write write
    [ "$(count write loop pwrite64)" -ge 32 ] ||
        { echo "writes not on the loop: $(count write loop pwrite64)" >&2
          return 1; }
}
timed write write_case

# Slow: each pwrite64 (the workers' too) returns 100 ms late.
slow_write_case ()
{
    local on_loop on_workers
    dd if=/dev/zero of="$img/wr.img" bs=1M count=8 conv=notrunc status=none
    inject=pwrite64:delay_exit=100000 traced_write slow-write
    on_loop=$(count slow-write loop pwrite64)
    on_workers=$(count slow-write workers pwrite64)
    [ "$on_loop" -ge 1 ] || fail "no write on the loop"
    [ "$on_loop" -lt "$on_workers" ] ||
        { echo "the loop kept writing: $on_loop, workers $on_workers" >&2
          return 1; }
}
timed slow-write slow_write_case

# Cold: the loop's try fails (EAGAIN, or short where readahead ran
# ahead of it) at least for the first read, and workers read.
drop_cache "$img/buf.img"
traced_read "$uri" cold
[ "$(count cold loop preadv2)" -ge 1 ]
[ "$(count cold workers pread64)" -ge 1 ]

# O_DIRECT: never tried on the loop; workers read, page cache or not.
traced_read "$(uri_for direct)" direct
[ "$(count direct loop preadv2)" -eq 0 ]
[ "$(count direct workers pread64)" -ge 1 ]
[ "$(count direct loop pread64)" -eq 0 ]

# tmpfs: every 64 KiB read on the loop thread, as a plain pread64; the
# 1 MiB ones on the workers.
if [ -n "$shm" ]; then
    traced_read "$(uri_for shm)" shm
    [ "$(count shm loop pread64)" -ge 64 ]
    [ "$(count shm workers pread64)" -eq 0 ]
    [ "$(count shm workers preadv2)" -eq 0 ]
    traced_read "$(uri_for shm)" shm-big $M
    [ "$(count shm-big loop pread64)" -eq 0 ] || fail "1 MiB tmpfs reads on the loop"
    [ "$(count shm-big workers pread64)" -ge 8 ]
fi
stop_nbdgraphd
