#!/usr/bin/env bash
# tests/test-file-extents.sh: block status of the file driver stays right
# with its extent cache (graph/drv-file.c keeps the last data extent
# SEEK_HOLE found): a map of a fully written file caches it; a trim and
# a write-zeroes that punches a hole inside it must show at once, and
# data written into the hole again; maps repeated give the same answer.
# On the test's own file system and on tmpfs (where block status that
# must walk the file goes to a worker thread instead of the loop).
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version

M=$((1024 * 1024))

shm=
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    shm=$(mktemp -d /dev/shm/ngtest-extents.XXXXXX)
    trap 's=$?; rm -rf "$shm"; (exit $s); _ng_cleanup' EXIT
fi
for where in "$dir" $shm; do
    img=$where/full.img
    dd if=/dev/urandom of="$img" bs=1M count=16 status=none
    start_nbdgraphd "nodes:
  f0: { driver: file, filename: \"$img\" }
exports:
  demo: { node: f0, writable: true }"
    [ "$(nbd_map "$uri")" = "0 $((16 * M)) 0" ]
    [ "$(nbd_map "$uri")" = "0 $((16 * M)) 0" ]       # from the cache
    # A trim inside the cached extent.
    qemu-io -f raw "$uri" -c "discard $((2 * M)) $M"
    nbd_map "$uri" > "$dir/map"
    printf '%s\n' "0 $((2 * M)) 0" "$((2 * M)) $M 3" \
        "$((3 * M)) $((13 * M)) 0" > "$dir/want"
    diff -u "$dir/want" "$dir/map"
    # Write-zeroes allowed to punch (qemu-io -u), again inside data.
    qemu-io -f raw "$uri" -c "write -z -u $((8 * M)) $M"
    nbd_map "$uri" > "$dir/map"
    printf '%s\n' "0 $((2 * M)) 0" "$((2 * M)) $M 3" \
        "$((3 * M)) $((5 * M)) 0" "$((8 * M)) $M 3" \
        "$((9 * M)) $((7 * M)) 0" > "$dir/want"
    diff -u "$dir/want" "$dir/map"
    # Data into the first hole shows as data.
    qemu-io -f raw "$uri" -c "write -P 7 $((2 * M)) 64k"
    nbd_map "$uri" > "$dir/map"
    printf '%s\n' "0 $((2 * M + 65536)) 0" \
        "$((2 * M + 65536)) $((M - 65536)) 3" \
        "$((3 * M)) $((5 * M)) 0" "$((8 * M)) $M 3" \
        "$((9 * M)) $((7 * M)) 0" > "$dir/want"
    diff -u "$dir/want" "$dir/map"
    nbd_map "$uri" | diff -u "$dir/want" -
    # And the data itself is what was written.
    qemu-io -f raw -r "$uri" -c "read -P 7 $((2 * M)) 64k" \
        -c "read -P 0 $((2 * M + 65536)) $((M - 65536))" \
        -c "read -P 0 $((8 * M)) $M" > "$dir/read.out"
    ! grep -i "verification failed" "$dir/read.out" ||
        fail "the data read back is not what was written"
    stop_nbdgraphd
done
