#!/usr/bin/env bash
# tests/test-qcow2-bad.sh: hand-corrupted qcow2 images (made by qemu-img,
# then patched): each is refused at open with the file and what is wrong,
# or (a damaged compressed cluster) fails reads with EIO while the daemon
# goes on serving; the dirty and corrupt bits keep the image read-only.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires python3 --version

# patch FILE WHAT: change one field of the image.
#   be32@OFF=V, be64@OFF=V   a header field
#   l1[0]=V                  the first L1 entry
#   l2[0]=V                  the first entry of the first L2 table
#   comp                     garble the first compressed cluster's data
patch ()
{
    python3 - "$1" "$2" <<'EOF'
import struct, sys
path, what = sys.argv[1], sys.argv[2]
f = open(path, 'r+b')
hdr = f.read(104)
l1 = struct.unpack('>Q', hdr[40:48])[0]
cbits = struct.unpack('>I', hdr[20:24])[0]
def put64(off, v):
    f.seek(off); f.write(struct.pack('>Q', v))
if what.startswith('be32@') or what.startswith('be64@'):
    off, v = what[5:].split('=')
    f.seek(int(off, 0))
    f.write(struct.pack('>I' if what[2] == '3' else '>Q', int(v, 0)))
elif what.startswith('l1[0]='):
    put64(l1, int(what[6:], 0))
elif what.startswith('l2[0]=') or what == 'comp':
    f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    if what == 'comp':
        f.seek(l2); e = struct.unpack('>Q', f.read(8))[0]
        x = 62 - (cbits - 8)
        f.seek(e & ((1 << x) - 1)); f.write(b'\xff' * 64)
    else:
        put64(l2, int(what[6:], 0))
EOF
}

# refused FILE TEXT [READ-ONLY]: a config with that image must be refused
# with an error containing TEXT.
refused ()
{
    local ro=${3:-false}
    printf 'server:\n  listen: ["unix:%s/s"]\nnodes:\n  q: { driver: qcow2, read-only: %s, file: { driver: file, read-only: %s, filename: "%s" } }\nexports:\n  demo: { node: q }\n' \
        "$dir" "$ro" "$ro" "$1" > "$dir/bad.yaml"
    if "$NBDGRAPHD" --check-config --config "$dir/bad.yaml" \
        > "$dir/out" 2>&1; then
        echo "$0: $1 was accepted" >&2
        exit 1
    fi
    cat "$dir/out"
    grep -qF -- "$2" "$dir/out"
    grep -qF -- "$1" "$dir/out"
}

accepted ()
{
    printf 'server:\n  listen: ["unix:%s/s"]\nnodes:\n  q: { driver: qcow2, read-only: %s, file: { driver: file, read-only: %s, filename: "%s" } }\nexports:\n  demo: { node: q }\n' \
        "$dir" "$2" "$2" "$1" > "$dir/ok.yaml"
    "$NBDGRAPHD" --check-config --config "$dir/ok.yaml"
}

fresh ()
{
    qemu-img create -q -f qcow2 "$@" "$dir/img.qcow2" 8M
    qemu-io -f qcow2 -c 'write -P 0x11 0 256k' "$dir/img.qcow2" >/dev/null
    echo "$dir/img.qcow2"
}

img=$(fresh); accepted "$img" false

img=$(fresh); patch "$img" be32@0=0x12345678
refused "$img" "is not a qcow2 image"

img=$(fresh); patch "$img" be32@4=7
refused "$img" "unsupported qcow2 version 7"

img=$(fresh); patch "$img" be32@20=30
refused "$img" "bad cluster size"

img=$(fresh); patch "$img" be64@72=0x100
refused "$img" "unsupported qcow2 incompatible feature bits 0x100"

img=$(fresh); truncate -s 100 "$img"
refused "$img" "truncated qcow2 header"

img=$(fresh); truncate -s 200000 "$img"
refused "$img" "past the end of the file"

img=$(fresh); patch "$img" 'l1[0]=0x8000000100000000'
refused "$img" "L2 table at 4294967296 is unaligned or past the end"

img=$(fresh); patch "$img" 'l1[0]=0x8000000000000600'
refused "$img" "L2 table at 1536 is unaligned"

img=$(fresh); patch "$img" 'l2[0]=0x8000000100000000'
refused "$img" "L2 entry for guest offset 0 points to 4294967296"

img=$(fresh); patch "$img" be64@48=0x1000000000
refused "$img" "refcount table at 68719476736 is unaligned or past the end"

img=$(fresh); patch "$img" be32@36=0
refused "$img" "L1 table of 0 entries is too small"

img=$(fresh); patch "$img" be32@36=0x7fffffff
refused "$img" "L1 table of 2147483647 entries is too large"

# Dirty (lazy refcounts) and corrupt: read-only only, as QEMU.
img=$(fresh); patch "$img" be64@72=1
refused "$img" "the image is dirty"
accepted "$img" true
img=$(fresh); patch "$img" be64@72=2
refused "$img" "the image is marked corrupt"
accepted "$img" true

# A backing file named in the header that is not there.
qemu-img create -q -f qcow2 "$dir/base.qcow2" 8M
qemu-img create -q -f qcow2 -b "$dir/base.qcow2" -F qcow2 "$dir/top.qcow2"
accepted "$dir/top.qcow2" false
mv "$dir/base.qcow2" "$dir/gone.qcow2"
refused "$dir/top.qcow2" "backing file '$dir/base.qcow2' not found"
mv "$dir/gone.qcow2" "$dir/base.qcow2"
# A backing file in a format we do not read.
qemu-img create -q -f qcow2 -u -b "$dir/base.qcow2" -F vmdk "$dir/vm.qcow2" 8M
refused "$dir/vm.qcow2" "backing format 'vmdk' is not supported"

# A loop through the headers' names: each image the other's backing.
qemu-img create -q -f qcow2 "$dir/l1.qcow2" 8M
qemu-img create -q -f qcow2 -u -b "$dir/l1.qcow2" -F qcow2 "$dir/l2.qcow2" 8M
qemu-img rebase -q -u -f qcow2 -b "$dir/l2.qcow2" -F qcow2 "$dir/l1.qcow2"
refused "$dir/l1.qcow2" "(a loop?)"

# A backing loop by node names: two overlays, each the other's backing.
cat > "$dir/loop.yaml" <<EOF
server:
  listen: ["unix:$dir/s"]
nodes:
  a: { driver: qcow2, file: { driver: file, filename: "$dir/top.qcow2" }, backing: b }
  b: { driver: qcow2, file: { driver: file, filename: "$dir/base.qcow2" }, backing: a }
exports:
  demo: { node: a }
EOF
if "$NBDGRAPHD" --check-config --config "$dir/loop.yaml" > "$dir/out" 2>&1
then
    echo "$0: a backing loop was accepted" >&2
    exit 1
fi
cat "$dir/out"
grep -qi "cycle\|loop" "$dir/out"

# A damaged compressed cluster: EIO for the read, the daemon lives on.
truncate -s 1M "$dir/ref.raw"
qemu-io -f raw -c 'write -P 0x11 0 1M' "$dir/ref.raw" >/dev/null
qemu-img convert -q -c -f raw -O qcow2 "$dir/ref.raw" "$dir/comp.qcow2"
patch "$dir/comp.qcow2" comp
start_nbdgraphd "nodes:
  q: { driver: qcow2, file: { driver: file, filename: \"@DIR@/comp.qcow2\" } }
exports:
  demo: { node: q, writable: true }"
expect_status 1 qemu-io -f raw -c 'read 0 4k' "$uri"
qemu-io -f raw -c 'read -P 0x11 64k 4k' "$uri" >/dev/null
# A write over it must not make things worse: it fails too.
expect_status 1 qemu-io -f raw -c 'write -P 0x22 0 4k' "$uri"
qemu-io -f raw -c 'read -P 0x11 64k 4k' "$uri" >/dev/null
stop_nbdgraphd
