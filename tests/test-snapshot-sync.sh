#!/usr/bin/env bash
# tests/test-snapshot-sync.sh: blockdev-snapshot-sync (nbdgraphctl
# snapshot --file) against the real daemon: a new qcow2 overlay whose
# header names the node's file, cut in below the export's implicit
# filters; an auto-named one; an existing image whose header named
# another backing (rewritten); refusals that leave the graph and the
# files as they were; at the end qemu-img follows the chain the daemon
# served, and a restart on the top image alone serves the same data.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"
make_qcow2_chain 4M base=
start_nbdgraphd "nodes:
  disk: { driver: qcow2, file: { driver: file, filename: @DIR@/base.qcow2 } }
  mem: { driver: memory, size: 4M }
exports:
  vm1: { node: disk, writable: true, detect-zeroes: on,
         throttle: { iops-total: 100000 } }" vm1
io () { qemu-io -f raw -c "$1" "$uri" > /dev/null; qemu-io -f raw -c "$1" want.raw > /dev/null; }
below_filters () {
    nbdgraphctl --json nodes |
        jq -r '.[] | select(."node-name" == "vm1.detect-zeroes") |
               .children[0]."node-name"'
}
says () { cat $out; grep -qF -- "$1" $out; }
names () { nbdgraphctl --json nodes | jq -c 'map(."node-name") | sort'; }
backing_of () {
    qemu-img info -U --output=json "$1" | jq -r '."backing-filename"'
}
io 'write -P 0x11 0 4M'

# A new image, named ov1: its header names base.qcow2.
nbdgraphctl snapshot disk ov1 --file "$dir/ov1.qcow2"
[ "$(below_filters)" = ov1 ]
[ "$(backing_of ov1.qcow2)" = "$dir/base.qcow2" ]
qemu-img info -U --output=json ov1.qcow2 |
    jq -e '."virtual-size" == 4194304 and
           ."backing-filename-format" == "qcow2"'
io 'write -P 0x22 1M 1M'
qemu-io -r -U -f qcow2 -c 'read -P 0x11 1M 1M' base.qcow2 | grep -q 'read 1048576'

# No snapshot-node-name: QEMU's way, an automatic name.
nbdgraphctl snapshot ov1 --file "$dir/ov2.qcow2"
auto=$(below_filters)
case $auto in '#'*) ;; *) echo "not auto-named: $auto" >&2; exit 1 ;; esac
[ "$(backing_of ov2.qcow2)" = "$dir/ov1.qcow2" ]
io 'write -P 0x33 2M 1M'

# Refusals: the graph and the files stay as they were.
before=$(names)
cp ov2.qcow2 keep.qcow2
expect_status 1 nbdgraphctl snapshot "$auto" ov9 --file "$dir/ov2.qcow2" \
    2> $out
says "cannot create '$dir/ov2.qcow2': File exists"
cmp ov2.qcow2 keep.qcow2
expect_status 1 nbdgraphctl qmp '{"execute": "blockdev-snapshot-sync",
    "arguments": {"node-name": "ov1", "snapshot-file": "'$dir'/x.raw",
                  "format": "raw"}}' > $out 2>&1
says "format 'raw' is not supported"
expect_status 1 nbdgraphctl snapshot vm1.throttle --file "$dir/x.qcow2" 2> $out
says "implicit filter"
expect_status 1 nbdgraphctl snapshot "$auto" --existing --file "$dir/none.qcow2" \
    2> $out
says "cannot open '$dir/none.qcow2'"
# Made, then refused (a bad node-name): the new file goes again.
expect_status 1 nbdgraphctl snapshot "$auto" 9bad --file "$dir/ov9.qcow2" \
    2> $out
says "invalid node-name"
[ ! -e ov9.qcow2 ]
# Opened, then refused (smaller than the node): an existing file stays.
qemu-img create -q -f qcow2 small.qcow2 1M
expect_status 1 nbdgraphctl snapshot "$auto" sm --existing \
    --file "$dir/small.qcow2" 2> $out
says "is smaller than"
[ -e small.qcow2 ]
# A node on no file: the header names no backing, the graph does.
nbdgraphctl --dry-run snapshot mem ovm --file "$dir/ovm.qcow2"
[ ! -e ovm.qcow2 ]
[ "$(names)" = "$before" ]
[ "$(below_filters)" = "$auto" ]

# An existing image whose header names some other backing: it names the
# node below it once the answer came (the overlay is flushed first).
qemu-img create -q -f qcow2 -b /nonexistent/other.raw -F raw -u ov3.qcow2 4M
nbdgraphctl snapshot "$auto" ov3 --existing --file "$dir/ov3.qcow2"
[ "$(below_filters)" = ov3 ]
[ "$(backing_of ov3.qcow2)" = "$dir/ov2.qcow2" ]
io 'write -P 0x44 3M 512K'
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
for f in base ov1 ov2 ov3; do qemu-img check -q $f.qcow2; done
qemu-img compare -f qcow2 -F raw ov3.qcow2 want.raw
qemu-img info --backing-chain ov3.qcow2 | grep -c '^image:' | grep -qx 4

# The top image alone: its header chain is the one the daemon served.
start_nbdgraphd "nodes:
  top: { driver: qcow2, file: { driver: file, filename: @DIR@/ov3.qcow2 } }
exports:
  vm1: { node: top }" vm1
qemu-img compare -f raw -F raw "$uri" want.raw
