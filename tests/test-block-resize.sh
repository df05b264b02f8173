#!/usr/bin/env bash
# tests/test-block-resize.sh: QMP block_resize and `nbdgraphctl resize`
# grow file, memory, raw and qcow2 nodes live.  A client connected before
# keeps its size (the server still refuses a request past it) and its
# data; a new connection is told the new size and can use the new area;
# query-named-block-nodes shows it.  A qcow2 image grown 64M -> 1G (the
# L1 table grows; with 1 KiB clusters it also moves) passes qemu-img
# check and compares equal to a raw copy written the same way.  Every
# refusal (arguments, unknown node, a driver that cannot grow, a shrink
# under an export or another node, a node a running mirror holds) is a
# QMP error with its reason that changes nothing.  A node nothing uses (file, memory) may
# shrink.  On the old code every call failed with CommandNotFound.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version
python_with "import nbd"                # Debian's python3-libnbd
cd "$dir"
out=$dir/out

# size_of NODE: its size as query-named-block-nodes says.
size_of ()
{
    qmp '{"execute": "query-named-block-nodes"}' |
        jq -r --arg n "$1" '.return[] | select(."node-name" == $n) |
                            .image."virtual-size"'
}

# refused ARGS TEXT: block_resize with ARGS (a JSON object) fails with a
# GenericError whose desc contains TEXT.
refused ()
{
    local reply
    reply=$(nbdgraphctl qmp "{\"execute\": \"block_resize\",
                              \"arguments\": $1}") &&
        fail "block_resize $1 was not refused: $reply"
    jq -e '.error.class == "GenericError"' <<<"$reply" > /dev/null ||
        fail "block_resize $1: not a GenericError: $reply"
    grep -qF -- "$2" <<<"$(jq -r .error.desc <<<"$reply")" ||
        fail "block_resize $1: wanted '$2', got: $reply"
}

# grow_round EXPORT NODE NEW-SIZE OLD-SIZE: with one connection open
# across the resize (NODE under EXPORT holds 0x5a in its first MiB),
# resize NODE to NEW-SIZE (a number of bytes) by QMP; the old connection
# keeps OLD-SIZE and its data, the server refuses it past OLD-SIZE; a new
# one sees NEW-SIZE, the new area reading as zeroes, and writes 0xa5 into
# the last MiB, which reads back.
grow_round ()
{
    "$py" - "$(uri_for "$1")" "$2" "$3" "$4" "$top_builddir/nbdgraphctl" \
        "$ctl" <<'EOF'
import subprocess, sys, nbd
uri, node, new, old, ctl, ctl_sock = sys.argv[1:]
new, old = int(new), int(old)
MiB = 1 << 20

h = nbd.NBD()
h.connect_uri(uri)
assert h.get_size() == old, h.get_size()
r = subprocess.run([ctl, "--socket", ctl_sock, "qmp",
                    '{"execute": "block_resize", "arguments": '
                    '{"node-name": "%s", "size": %d}}' % (node, new)],
                   stdout=subprocess.PIPE, text=True)
if r.returncode != 0:
    sys.exit("block_resize failed: " + r.stdout)
# The old connection: its size and data, and the server still holds it
# to that size (libnbd would refuse the read itself in strict mode).
assert h.get_size() == old, h.get_size()
assert h.pread(MiB, 0) == b"\x5a" * MiB
h.set_strict_mode(0)
try:
    h.pread(4096, old)
    sys.exit("the old connection read past its size")
except nbd.Error as e:
    print("past the old end, refused as expected:", e.string)

g = nbd.NBD()
g.connect_uri(uri)
assert g.get_size() == new, g.get_size()
assert g.pread(MiB, 0) == b"\x5a" * MiB
assert g.pread(MiB, old) == bytes(MiB), "the new area is not zeroes"
g.pwrite(b"\xa5" * MiB, new - MiB)
assert g.pread(MiB, new - MiB) == b"\xa5" * MiB
g.shutdown()
h.shutdown()
EOF
    test "$(size_of "$2")" = "$3" ||
        fail "query-named-block-nodes: $2 is $(size_of "$2") bytes, not $3"
    test "$(nbdinfo --size "$(uri_for "$1")")" = "$3" ||
        fail "a new nbdinfo is not told $3 bytes"
}

truncate -s 8M file.raw
qemu-io -f raw -c 'write -P 0x5a 0 1M' file.raw > /dev/null
truncate -s 8M part.raw
start_nbdgraphd "nodes:
  f: { driver: file, filename: @DIR@/file.raw }
  m: { driver: memory, size: 8M }
  thr: { driver: throttle, file: m, limits: { iops-total: 100000 } }
  part-file: { driver: file, filename: @DIR@/part.raw }
  part: { driver: raw, file: part-file, offset: 1M, size: 4M }
  whole: { driver: raw, file: part-file }
  nul: { driver: null-co, size: 8M }
  m2: { driver: memory, size: 8M }
  src: { driver: memory, size: 8M }
  dst-mem: { driver: memory, size: 8M }
  dst: { driver: delay, file: dst-mem, delay-write: 300ms }
exports:
  vf: { node: f, writable: true }
  vm: { node: thr, writable: true }
  vw: { node: whole, writable: true }
  vs: { node: src, writable: true }
  vn: { node: m2, name: by-name }" vf

# file: the file grows with the node.
grow_round vf f $((32 << 20)) $((8 << 20))
test "$(stat -c %s file.raw)" = $((32 << 20)) || fail "file.raw did not grow"

# memory, under a filter: the resize goes through it to the node.
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$(uri_for vm)" > /dev/null
grow_round vm thr $((64 << 20)) $((8 << 20))
test "$(size_of m)" = $((64 << 20)) || fail "m did not grow under thr"

# raw without a window: its file grows; nbdgraphctl's size grammar.
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$(uri_for vw)" > /dev/null
nbdgraphctl resize whole 12.5M
test "$(size_of whole)" = $((25 << 19)) || fail "whole is not 12.5M"
test "$(stat -c %s part.raw)" = $((25 << 19)) || fail "part.raw is not 12.5M"
expect_status 2 nbdgraphctl resize whole 1GB

# device: an export by its NBD name (vs, below: by its ID).
qmp '{"execute": "block_resize",
      "arguments": {"device": "by-name", "size": 16777216}}' > /dev/null
test "$(size_of m2)" = $((16 << 20)) || fail "m2 did not grow by NBD name"
test "$(nbdinfo --size "$(uri_for by-name)")" = $((16 << 20)) ||
    fail "export by-name is not 16M"

# Refusals, each leaving every size as it was.  A shrink only of a node
# nothing uses (below).
refused '{"size": 1048576}' "give exactly one of 'device' and 'node-name'"
refused '{"node-name": "f", "device": "vf", "size": 67108864}' \
    "give exactly one of 'device' and 'node-name'"
refused '{"node-name": "f", "size": 0}' "Parameter 'size' expects a >0 size"
refused '{"node-name": "f", "size": -4096}' \
    "Parameter 'size' expects a >0 size"
refused '{"node-name": "nope", "size": 67108864}' "node 'nope' not found"
refused '{"device": "nope", "size": 67108864}' "no export or node 'nope'"
refused '{"node-name": "nul", "size": 67108864}' \
    "node 'nul' (driver 'null-co') cannot be resized"
refused '{"node-name": "part", "size": 67108864}' \
    "node 'part' has a fixed size (option 'size'): it cannot be resized"
refused '{"device": "vf", "size": 1048576}' \
    "node 'f' is under export 'vf', which tells its clients it is 33554432 bytes: it cannot shrink to 1048576"
refused '{"node-name": "dst-mem", "size": 1048576}' \
    "node 'dst-mem' is in use by node 'dst': it cannot shrink"
refused '{"node-name": "nul", "size": 1048576}' \
    "node 'nul' (driver 'null-co') cannot shrink"
test "$(size_of f)" = $((32 << 20)) || fail "a refused shrink changed f"
test "$(stat -c %s file.raw)" = $((32 << 20)) || fail "file.raw changed"
qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 31M 1M' \
    "$(uri_for vf)" > $out || fail "f's data changed: $(cat $out)"
test "$(size_of nul)" = $((8 << 20)) || fail "nul changed"
test "$(size_of part)" = $((4 << 20)) || fail "part changed"

# A running mirror (its target slowed down) holds its source and its
# target: both are refused, naming the job; the target's node below the
# delay filter too, as the filter's size would follow.
qemu-io -f raw -c 'write -P 0x5a 0 8M' "$(uri_for vs)" > /dev/null
nbdgraphctl mirror src dst --job-id m0
refused '{"device": "vs", "size": 67108864}' \
    "node 'src': command 'block-resize-"
refused '{"node-name": "src", "size": 67108864}' \
    "which job 'm0' does not allow"
refused '{"node-name": "dst-mem", "size": 67108864, "job-id": "r9"}' \
    "node 'dst': command 'r9' requires graph-mod, which job 'm0' does not allow"
test "$(size_of src)" = $((8 << 20)) || fail "src changed under the mirror"
test "$(size_of dst-mem)" = $((8 << 20)) || fail "dst-mem changed"
nbdgraphctl job cancel m0
wait_for 'test -z "$(job_of m0)"'
# Once the job is gone, the same resize goes through (dry run first).
nbdgraphctl --dry-run resize src 64M | grep -q "would succeed"
test "$(size_of src)" = $((8 << 20)) || fail "a dry run changed src"
qmp '{"execute": "block_resize",
      "arguments": {"device": "vs", "size": 67108864}}' > /dev/null
test "$(size_of src)" = $((64 << 20)) || fail "src did not grow"

# Shrinking a node nothing uses: a memory disk between two exports of it
# (what lay past the new end is gone; a grow brings zeroes, also in the
# rest of a partial last page) and a file node.
nbdgraphctl add-node lonem memory size=8M
nbdgraphctl add-export xm lonem --writable
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 4M 4M' \
    "$(uri_for xm)" > /dev/null
nbdgraphctl del-export xm
nbdgraphctl resize lonem 4194404             # 4M + 100 bytes
test "$(size_of lonem)" = 4194404 || fail "lonem did not shrink"
nbdgraphctl resize lonem 8M
nbdgraphctl add-export xm lonem
qemu-io -r -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0 1M 3M' \
    -c 'read -P 0x6b 4M 100' -c 'read -P 0 4194404 4194204' \
    "$(uri_for xm)" > $out 2>&1 ||
    fail "lonem after shrink and grow: $(cat $out)"
grep -q 'Pattern verification failed' $out &&
    fail "lonem after shrink and grow: $(cat $out)"
truncate -s 8M lone.raw
qemu-io -f raw -c 'write -P 0x5a 0 8M' lone.raw > /dev/null
nbdgraphctl add-node lone file filename="$dir/lone.raw"
nbdgraphctl resize lone 2M
test "$(stat -c %s lone.raw)" = $((2 << 20)) || fail "lone.raw is not 2M"
test "$(size_of lone)" = $((2 << 20)) || fail "lone is not 2M"
qemu-io -r -U -f raw -c 'read -P 0x5a 0 2M' lone.raw > $out 2>&1 &&
    ! grep -q 'Pattern verification failed' $out || fail "lone.raw: $(cat $out)"
stop_nbdgraphd

# qcow2, 64M -> 1G: default clusters (the L1 table grows in place) and
# 1 KiB clusters (it outgrows its clusters and moves).
for cs in 65536 1024; do
    rm -f img.qcow2 want.raw
    qemu-img create -q -f qcow2 -o cluster_size=$cs img.qcow2 64M
    truncate -s 64M want.raw
    start_nbdgraphd "nodes:
  img-file: { driver: file, filename: @DIR@/img.qcow2 }
  img: { driver: qcow2, file: img-file }
exports:
  vq: { node: img, writable: true }" vq
    writes=(-c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 63M 1M')
    qemu-io -f raw "${writes[@]}" "$uri" > /dev/null
    qemu-io -f raw "${writes[@]}" want.raw > /dev/null
    qmp '{"execute": "block_resize",
          "arguments": {"node-name": "img", "size": 1073741824}}' > /dev/null
    test "$(nbdinfo --size "$uri")" = 1073741824 || fail "vq is not 1G"
    test "$(size_of img)" = 1073741824 || fail "img is not 1G"
    truncate -s 1G want.raw
    writes=(-c 'write -P 0xa5 1023M 1M' -c 'write -P 0x7c 600M 64k')
    qemu-io -f raw "${writes[@]}" "$uri" > /dev/null
    qemu-io -f raw "${writes[@]}" want.raw > /dev/null
    qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0x6b 63M 1M' \
        -c 'read -P 0 64M 536M' -c 'read -P 0xa5 1023M 1M' "$uri" > $out ||
        fail "qcow2 ($cs): read back wrong: $(cat $out)"
    stop_nbdgraphd
    qemu-img check img.qcow2
    qemu-img info --output=json img.qcow2 |
        jq -e '."virtual-size" == 1073741824' > /dev/null ||
        fail "qemu-img info: not 1G: $(qemu-img info img.qcow2)"
    qemu-img compare -f qcow2 -F raw img.qcow2 want.raw
done
