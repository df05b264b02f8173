#!/usr/bin/env bash
# tests/interop/test-nbdinfo.sh: what libnbd's nbdinfo sees of the
# handshake (sizes, flags, descriptions, block sizes), of NBD_OPT_LIST,
# and of block status (--map) after writes and trims.
source "$srcdir/functions.sh"
set -e -x
requires nbdinfo --version
requires qemu-io --version
requires qemu-img --version
requires jq --version

M=$((1024 * 1024))
truncate -s 16M "$dir/disk.img"
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: 64M }
  part: { driver: raw, file: mem0, offset: 1M, size: 8M }
  file0: { driver: file, filename: \"@DIR@/disk.img\", read-only: true }
  null0: { driver: null-co, size: 1G }
exports:
  demo: { node: mem0, writable: true, description: \"a memory disk\" }
  ro: { node: mem0 }
  part: { node: part, writable: true, description: \"8 MiB at 1 MiB\" }
  file: { node: file0 }
  null: { node: null0, writable: true }"

# expect_false CMD...: CMD must fail (nbdinfo --is/--can answer "no"
# with a non-zero status).
expect_false ()
{
    if "$@"; then
        echo "$0: '$*' succeeded, expected it to fail" >&2
        return 1
    fi
}

# check_json URI JQ-EXPR: nbdinfo --json of URI's one export satisfies
# JQ-EXPR (run on the export object).
check_json ()
{
    nbdinfo --json "$1" > "$dir/info.json"
    jq -e ".exports | length == 1 and (.[0] | $2)" "$dir/info.json" \
        > /dev/null || {
        echo "$0: $1 does not satisfy: $2" >&2
        cat "$dir/info.json" >&2
        return 1
    }
}

# The block size constraints of the NBD spec: minimum a power of two up
# to 64 KiB, preferred a power of two of at least 512 and the minimum,
# maximum a multiple of the minimum and at least the preferred size.
block_sizes='
    def pow2: . > 0 and (. as $n | [range(0; 33)] | any(pow(2; .) == $n));
    (.block_size_minimum | pow2) and .block_size_minimum <= 65536 and
    (.block_size_preferred | pow2) and .block_size_preferred >= 512 and
    .block_size_preferred >= .block_size_minimum and
    .block_size_maximum % .block_size_minimum == 0 and
    .block_size_maximum >= .block_size_preferred'

# A writable memory export: every write-side feature, multi-conn (one
# node, so a flush on any connection covers all), base:allocation.
check_json "$uri" '
    ."export-name" == "demo" and ."export-size" == 64 * 1048576 and
    .description == "a memory disk" and
    .is_read_only == false and .can_trim and .can_zero and .can_fua and
    .can_flush and .can_multi_conn and .can_fast_zero and
    (.contexts | index("base:allocation") != null)'
check_json "$uri" "$block_sizes"

# The same node read-only, without a description: no write-side flags.
check_json "$(uri_for ro)" '
    ."export-size" == 64 * 1048576 and (has("description") | not) and
    .is_read_only and (.can_trim | not) and (.can_zero | not) and
    (.can_fast_zero | not)'
check_json "$(uri_for ro)" "$block_sizes"

# A raw slice has the slice's size; a read-only file node gives a
# read-only export even though the export did not ask for it.
check_json "$(uri_for part)" '."export-size" == 8 * 1048576 and
    .description == "8 MiB at 1 MiB" and .is_read_only == false'
check_json "$(uri_for file)" '."export-size" == 16 * 1048576 and
    .is_read_only'
check_json "$(uri_for null)" '."export-size" == 1073741824'

# The single-question forms answer through their exit status.
[ "$(nbdinfo --size "$(uri_for part)")" -eq $((8 * M)) ]
nbdinfo --is read-only "$(uri_for ro)"
expect_false nbdinfo --is read-only "$uri"
nbdinfo --can trim "$uri"
expect_false nbdinfo --can trim "$(uri_for ro)"
expect_false nbdinfo --can connect "$(uri_for no-such-export)"
# Naming no export is naming the export "", and there is none: refused,
# not served the first export in the list.
expect_false nbdinfo --can connect "$(uri_for "")"
expect_false qemu-img info -f raw "$(uri_for "")"

# NBD_OPT_LIST names every export, with its description.
nbdinfo --list --json "$(uri_for "")" > "$dir/list.json"
cat "$dir/list.json"
[ "$(jq -r '[.exports[]."export-name"] | sort | join(" ")' \
      "$dir/list.json")" = "demo file null part ro" ]
[ "$(jq -r '.exports[] | select(."export-name" == "part") | .description' \
      "$dir/list.json")" = "8 MiB at 1 MiB" ]

# A fresh memory disk is one hole.  Then: one byte allocates its 64 KiB
# page, 200 KiB at 1 MiB allocate four pages, 1 MiB at 4 MiB all of its
# pages, and trimming two pages in it frees exactly those.  Type 3 is
# hole+zero, 0 is data.
[ "$(nbd_map "$uri")" = "0 $((64 * M)) 3" ]
qemu-io -f raw "$uri" -c "write -P 1 100000 1" -c "write -P 2 1M 200K" \
    -c "write -P 3 4M 1M" -c "discard $((4 * M + 65536)) 128K"
nbd_map "$uri" > "$dir/map"
cat "$dir/map"
cat > "$dir/map.want" <<EOF
0 65536 3
65536 65536 0
131072 $((M - 131072)) 3
$M 262144 0
$((M + 262144)) $((3 * M - 262144)) 3
$((4 * M)) 65536 0
$((4 * M + 65536)) 131072 3
$((4 * M + 196608)) $((M - 196608)) 0
$((5 * M)) $((59 * M)) 3
EOF
diff -u "$dir/map.want" "$dir/map"

# The slice starting at 1 MiB sees the same extents, shifted.
nbd_map "$(uri_for part)" > "$dir/map"
cat > "$dir/map.want" <<EOF
0 262144 0
262144 $((3 * M - 262144)) 3
$((3 * M)) 65536 0
$((3 * M + 65536)) 131072 3
$((3 * M + 196608)) $((M - 196608)) 0
$((4 * M)) $((4 * M)) 3
EOF
diff -u "$dir/map.want" "$dir/map"

# null-co reads zeroes everywhere and says so.
[ "$(nbd_map "$(uri_for null)")" = "0 1073741824 3" ]

stop_nbdgraphd
