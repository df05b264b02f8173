#!/usr/bin/env bash
# tests/test-file-uring.sh: the file driver's `aio: io_uring`, buffered
# and with cache.direct, on a file system that is not tmpfs (there every
# request would take the loop shortcut instead).  Data written through
# nbdgraphd (nbdcopy with 64 requests in flight; qemu-io patterns,
# unaligned ones under O_DIRECT, FUA, flush) is in the image file as
# qemu-io reads it there, and reads back the same through the export
# after the page cache is dropped.  strace shows the daemon's reads and
# writes going through io_uring_enter, with no pread/pwrite system call.
# A bad aio value is refused naming the choices.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires nbdcopy --version
requires strace -V

# Images on a disk file system: $dir unless that is tmpfs.
img=$dir
if [ "$(stat -f -c %T "$dir")" = tmpfs ]; then
    img=$(mktemp -d /var/tmp/ngtest-uring.XXXXXX)
    trap 's=$?; rm -rf "$img"; (exit $s); _ng_cleanup' EXIT
fi
M=$((1024 * 1024))
truncate -s 64M "$img/buf.img" "$img/direct.img"
dd if=/dev/urandom of="$dir/rnd" bs=1M count=32 status=none

start_nbdgraphd "nodes:
  f0: { driver: file, filename: \"$img/buf.img\", aio: io_uring }
  f1:
    driver: file
    filename: \"$img/direct.img\"
    aio: io_uring
    cache.direct: true
exports:
  demo: { node: f0, writable: true }
  direct: { node: f1, writable: true }"
direct=$(uri_for direct)

strace -f -qq -c -o "$dir/strace" \
    -e trace=io_uring_enter,pread64,preadv,pwrite64,pwritev,pwritev2 \
    -p "$nbdgraphd_pid" &
strace_pid=$!
sleep 1                             # let it attach to every thread

for u in "$uri" "$direct"; do
    nbdcopy --requests 64 --connections 2 "$dir/rnd" "$u"
done
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for u in "$uri" "$direct"; do
    nbdcopy --requests 64 "$u" "$dir/out"
    cmp -n $((32 * M)) "$dir/rnd" "$dir/out"
    cmp -n $((32 * M)) -i $((32 * M)):0 "$dir/out" /dev/zero
done
kill -INT "$strace_pid"
wait "$strace_pid" || true
cat "$dir/strace"
enters=$(awk '$NF == "io_uring_enter" { print $(NF - 1) }' "$dir/strace")
[ "${enters:-0}" -gt 50 ]
# Buffered reads that miss the page cache and all writes went to the ring.
! grep -E ' (pread64|preadv|pwrite64|pwritev|pwritev2)$' "$dir/strace" ||
    fail "reads or writes went around the ring"

# The image files hold what was written, as QEMU reads them.
cmp -n $((32 * M)) "$dir/rnd" "$img/buf.img"
cmp -n $((32 * M)) "$dir/rnd" "$img/direct.img"

# qemu-io: unaligned writes under O_DIRECT (the core's read-modify-write
# around the ring), FUA, flush; then the files read by qemu-io itself.
for u in "$uri" "$direct"; do
    qemu-io -f raw "$u" \
        -c "write -P 0x11 4097 1000" \
        -c "write -f -P 0x22 1M 64k" \
        -c "write -P 0x33 $((40 * M - 512)) 8k" \
        -c flush > "$dir/qemu-io.out"
    ! grep -i -E "error|fail" "$dir/qemu-io.out" ||
        fail "qemu-io writes through $u failed"
done
for f in buf direct; do
    qemu-io -f raw -r "$img/$f.img" \
        -c "read -P 0x11 4097 1000" \
        -c "read -P 0x22 1M 64k" \
        -c "read -P 0x33 $((40 * M - 512)) 8k" \
        -c "read -v 4096 1" > "$dir/check.out"
    ! grep -i -E "verification failed|error" "$dir/check.out" ||
        fail "$f.img does not hold what was written"
    # The byte before the unaligned write is still the random data's.
    want=$(od -An -tx1 -j 4096 -N 1 "$dir/rnd" | tr -d ' ')
    grep -q "00001000:  $want" "$dir/check.out"
done
for u in "$uri" "$direct"; do
    qemu-io -f raw -r "$u" -c "read -P 0x33 $((40 * M - 512)) 8k" \
        > "$dir/back.out"
    ! grep -i "verification failed" "$dir/back.out" ||
        fail "$u does not read back what was written"
done
stop_nbdgraphd

# A bad choice is refused with the file position and the choices.
printf '%s\n' 'server: { listen: [ "unix:'"$dir"'/x.sock" ] }' 'nodes:' \
    '  f0: { driver: file, filename: "'"$img"'/buf.img", aio: native }' \
    > "$dir/bad.yaml"
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/bad.yaml" \
    2> "$dir/bad.err"
cat "$dir/bad.err"
grep -q "bad.yaml:3:.*aio" "$dir/bad.err"
grep -q "io_uring" "$dir/bad.err"
