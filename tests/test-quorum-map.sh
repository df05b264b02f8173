#!/usr/bin/env bash
# tests/test-quorum-map.sh: block status through quorum and blkverify
# (filters/agree.c): every child is asked, and a range is a hole, or
# reads as zeroes, only where all of them say so.  Data that only one
# replica holds (written to it behind the filter's back) shows as data,
# so nbdcopy or qemu-img, which skip holes, never skip it; the whole map
# checked with nbdinfo, and with qemu-img map (one extent per request).
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires jq --version

M=$((1024 * 1024))
K=65536

start_nbdgraphd "nodes:
  m0: { driver: memory, size: 8M }
  m1: { driver: memory, size: 8M }
  m2: { driver: memory, size: 8M }
  m3: { driver: memory, size: 8M }
  m4: { driver: memory, size: 8M }
  q: { driver: quorum, children: [ m0, m1, m2 ], vote-threshold: 2 }
  bv: { driver: blkverify, test: m3, raw: m4 }
exports:
  demo: { node: q, writable: true }
  bv: { node: bv, writable: true }
  m0: { node: m0, writable: true }
  m4: { node: m4, writable: true }"
bv=$(uri_for bv)

# Through the quorum (all three) at 2M; into m0 alone at 1M.
qemu-io -f raw "$uri" -c "write -P 1 $((2 * M)) 64k"
qemu-io -f raw "$(uri_for m0)" -c "write -P 2 $M 64k"
nbd_map "$uri" > "$dir/map"
printf '%s\n' "0 $M 3" "$M $K 0" "$((M + K)) $((M - K)) 3" \
    "$((2 * M)) $K 0" "$((2 * M + K)) $((6 * M - K)) 3" > "$dir/want"
diff -u "$dir/want" "$dir/map"
# qemu-img asks one extent at a time (REQ_ONE): the same ranges.
qemu-img map --output=json -f raw "$uri" |
    jq -r '.[] | select(.data) | "\(.start) \(.length)"' > "$dir/qmap"
printf '%s\n' "$M $K" "$((2 * M)) $K" > "$dir/qwant"
diff -u "$dir/qwant" "$dir/qmap"

# blkverify: through it (both) at 3M; into raw alone at 5M.
qemu-io -f raw "$bv" -c "write -P 3 $((3 * M)) 64k"
qemu-io -f raw "$(uri_for m4)" -c "write -P 4 $((5 * M)) 64k"
nbd_map "$bv" > "$dir/map"
printf '%s\n' "0 $((3 * M)) 3" "$((3 * M)) $K 0" \
    "$((3 * M + K)) $((2 * M - K)) 3" "$((5 * M)) $K 0" \
    "$((5 * M + K)) $((3 * M - K)) 3" > "$dir/want"
diff -u "$dir/want" "$dir/map"
