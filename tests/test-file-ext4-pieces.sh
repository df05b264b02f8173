#!/usr/bin/env bash
# tests/test-file-ext4-pieces.sh: buffered writes to a file on ext4 go
# in pieces of at most 64 KiB, each within one aligned 64 KiB block
# (graph/drv-file.c, FILE_EXT4_WRITE_CHUNK), so the page cache keeps
# folios of that size and later small writes stay cheap.  Seen with
# strace -f on the daemon, with the data checked each time:
# - `aio: threads`: 1 MiB requests (nbdcopy) and an unaligned 200 KiB
#   one (qemu-io) are pwrite64s of at most 64 KiB that cross no 64 KiB
#   boundary and add up to what was written (old code: one pwrite64 per
#   request);
# - `aio: io_uring`: one 1 MiB request at a time (one connection, one
#   request in flight) is submitted as 16 ops in one io_uring_enter
#   (old code: one op), and no pwrite64 goes around the ring;
# - cache.direct: no pieces (no page cache), one pwrite64 per request.
# Skipped where neither the test directory nor /var/tmp is ext4.
source "$srcdir/functions.sh"
set -e -x
requires strace -V
requires nbdcopy --version
requires qemu-io --version

img=
for d in "$dir" /var/tmp; do
    if [ "$(stat -f -c %T "$d")" = ext2/ext3 ]; then   # ext4 says so too
        img=$d
        break
    fi
done
[ -n "$img" ] || { echo "$0: SKIP: no ext4 directory" >&2; exit 77; }
if [ "$img" != "$dir" ]; then
    img=$(mktemp -d "$img/ngtest-pieces.XXXXXX")
    trap 's=$?; rm -rf "$img"; (exit $s); _ng_cleanup' EXIT
fi
M=$((1024 * 1024))
K=1024
dd if=/dev/urandom of="$dir/rnd" bs=1M count=8 status=none
truncate -s 16M "$img/thr.img" "$img/ring.img" "$img/direct.img"

# The ring only where the build has it (tests/test-file-aio-build.sh).
ring_node= ring_export=
if grep -q '^#define HAVE_LIBURING 1' "${top_builddir:-.}/config.h"; then
    ring_node="  f1: { driver: file, filename: \"$img/ring.img\", aio: io_uring }"
    ring_export="  ring: { node: f1, writable: true }"
fi
start_nbdgraphd "nodes:
  f0: { driver: file, filename: \"$img/thr.img\", aio: threads }
  f2: { driver: file, filename: \"$img/direct.img\", cache.direct: true }
$ring_node
exports:
  demo: { node: f0, writable: true }
  direct: { node: f2, writable: true }
$ring_export"

# traced TAG CALLS CMD...: run CMD with strace on the daemon's threads
# tracing CALLS, writing $dir/TAG.trace.  A file per thread (-ff) while
# tracing: in one file, calls of threads running at once come in
# pieces ("<unfinished ...>", "<... resumed>").
traced ()
{
    local tag=$1 calls=$2 strace_pid rc=0
    shift 2

    strace -ff -qq -s 0 -e trace="$calls" -o "$dir/$tag.t" \
        -p "$nbdgraphd_pid" &
    strace_pid=$!
    sleep 1                         # let it attach to every thread
    "$@" || rc=$?
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    cat "$dir/$tag.t".* > "$dir/$tag.trace"
    return $rc
}

# pwrites TAG: "count offset result" of each pwrite64 in TAG's trace.
pwrites ()
{
    sed -n -E 's/.*pwrite64\([0-9]+, ""\.\.\., ([0-9]+), ([0-9]+)\) += (-?[0-9]+).*/\1 \2 \3/p' \
        "$dir/$1.trace"
}

# check_pieces TAG BYTES: TAG's pwrite64s are whole pieces of at most
# 64 KiB within one aligned 64 KiB block, BYTES in all.
check_pieces ()
{
    pwrites "$1" > "$dir/$1.pw"
    [ -s "$dir/$1.pw" ] || fail "$1: no pwrite64 at all"
    awk -v want="$2" '
        $1 != $3 { print "short or failed: " $0; bad = 1 }
        $1 > 65536 || $2 % 65536 + $1 > 65536 {
            print "not one 64 KiB piece: " $0; bad = 1 }
        { sum += $1 }
        END { if (sum != want) { print "wrote " sum " of " want; bad = 1 }
              exit bad }' "$dir/$1.pw" ||
        fail "$1: writes not in 64 KiB pieces"
}

# aio: threads, 1 MiB requests.
traced thr pwrite64 nbdcopy --requests 4 --request-size=$M \
    "$dir/rnd" "$uri"
cmp -n $((8 * M)) "$dir/rnd" "$img/thr.img" || fail "thr: wrong data"
check_pieces thr $((8 * M))

# Unaligned: 200 KiB at 96 KiB is 32 + 64 + 64 + 40 KiB.
traced unaligned pwrite64 qemu-io -f raw "$uri" \
    -c "write -P 0x44 $((96 * K)) $((200 * K))"
check_pieces unaligned $((200 * K))
[ "$(wc -l < "$dir/unaligned.pw")" -eq 4 ] ||
    fail "unaligned: $(wc -l < "$dir/unaligned.pw") pieces, not 4"
qemu-io -f raw -r "$img/thr.img" \
    -c "read -P 0x44 $((96 * K)) $((200 * K))" > "$dir/unaligned.out"
! grep -i -E "verification failed|error" "$dir/unaligned.out" ||
    fail "unaligned: the file does not hold what was written"
cmp -n $((96 * K)) "$dir/rnd" "$img/thr.img" ||
    fail "unaligned: the bytes before it changed"
cmp -i $((296 * K)) -n $((8 * M - 296 * K)) "$dir/rnd" "$img/thr.img" ||
    fail "unaligned: the bytes after it changed"

# cache.direct: the page cache is not involved, requests go whole.
traced direct pwrite64 nbdcopy --requests 4 --request-size=$M \
    "$dir/rnd" "$(uri_for direct)"
cmp -n $((8 * M)) "$dir/rnd" "$img/direct.img" || fail "direct: wrong data"
[ "$(pwrites direct | awk '$1 == 1048576' | wc -l)" -eq 8 ] ||
    fail "direct: not one pwrite64 per 1 MiB request"

# aio: io_uring: one request at a time, each 16 ops in one submission.
if [ -n "$ring_export" ]; then
    traced ring io_uring_enter,pwrite64 nbdcopy --connections=1 \
        --requests=1 --request-size=$M "$dir/rnd" "$(uri_for ring)"
    cmp -n $((8 * M)) "$dir/rnd" "$img/ring.img" || fail "ring: wrong data"
    ! grep -q 'pwrite64(' "$dir/ring.trace" ||
        fail "ring: writes went around the ring"
    subs=$(sed -n -E 's/.*io_uring_enter\([0-9]+, ([0-9]+),.*/\1/p' \
               "$dir/ring.trace" | awk '$1 == 16' | wc -l)
    [ "$subs" -ge 8 ] ||
        fail "ring: $subs submissions of 16 ops, not one per 1 MiB write"
    qemu-io -f raw "$(uri_for ring)" \
        -c "write -P 0x55 $((96 * K)) $((200 * K))" > "$dir/ring-u.out"
    qemu-io -f raw -r "$img/ring.img" \
        -c "read -P 0x55 $((96 * K)) $((200 * K))" >> "$dir/ring-u.out"
    ! grep -i -E "verification failed|error" "$dir/ring-u.out" ||
        fail "ring: the unaligned write is not in the file"
    cmp -i $((296 * K)) -n $((8 * M - 296 * K)) "$dir/rnd" \
        "$img/ring.img" || fail "ring: the bytes after it changed"
fi
stop_nbdgraphd
