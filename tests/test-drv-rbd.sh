#!/usr/bin/env bash
# The rbd leaf against a real, throwaway Ceph cluster
# (contrib/ceph-dev-cluster): data through qemu-io and nbdcopy compared
# with `rbd export`, discard and write-zeroes, block status from the
# fast-diff map, a snapshot opened read-only, an image in a namespace,
# bad options refused at open with nothing left behind, and EIO for one
# node only when the cluster fences off its client.
source "$srcdir/functions.sh"
set -e -x

requires ceph-mon
requires ceph-osd
requires rbd
requires qemu-io --version
requires qemu-img --version
requires nbdcopy --version
requires jq --version
if ! grep -q '^#define HAVE_LIBRBD 1' "$top_builddir/config.h"; then
    echo "$0: SKIP: nbdgraphd was built without librbd" >&2
    exit 77
fi

ctl_cmd() { "$top_builddir/nbdgraphctl" -s "$ctl" "$@"; }

# The cluster lives in $dir; stop it before functions.sh removes $dir,
# keeping the test's status.
cluster_env=$(TMPDIR=$dir "$top_srcdir/contrib/ceph-dev-cluster" start)
eval "$cluster_env"
trap 'rc=$?; "$top_srcdir/contrib/ceph-dev-cluster" stop "$CEPH_DEV_DIR";
      (exit $rc); _ng_cleanup' EXIT

# "plain" has no object map, so no block status; "fast" has fast-diff.
rbd create --size 16M --image-feature layering rbd/plain
rbd create --size 16M \
    --image-feature layering,exclusive-lock,object-map,fast-diff rbd/fast

# "plain" names its ceph.conf, "fast" finds it through $CEPH_CONF.
start_nbdgraphd "
nodes:
  plain: { driver: rbd, pool: rbd, image: plain, conf: \"$CEPH_CONF\",
           user: admin }
  fast: { driver: rbd, pool: rbd, image: fast }
exports:
  plain: { node: plain, writable: true }
  fast: { node: fast, writable: true }
" plain
fast_uri=$(uri_for fast)

# ---- Data: plain, FUA, many in flight, read back ----------------------
qemu-io -f raw "$uri" \
    -c 'write -P 0x5a 0 1M' \
    -c 'write -P 0x33 5M 100k' \
    -c 'write -f -P 0x44 9M 64k' \
    -c 'aio_write -P 0x61 12M 64k' -c 'aio_write -P 0x62 13M 64k' \
    -c 'aio_write -P 0x63 14M 64k' -c 'aio_flush' \
    -c 'flush' \
    -c 'read -P 0x5a 0 1M' -c 'read -P 0x33 5M 100k' \
    -c 'read -P 0x44 9M 64k' -c 'read -P 0x61 12M 64k' \
    -c 'read -P 0x62 13M 64k' -c 'read -P 0x63 14M 64k' \
    -c 'read -P 0 1M 4M' > "$dir/io.out"
if grep -q 'failed\|error' "$dir/io.out"; then
    cat "$dir/io.out"; exit 1
fi

# ---- Discard and write-zeroes read back as zeroes ---------------------
qemu-io -f raw "$uri" \
    -c 'discard 0 512k' -c 'read -P 0 0 512k' -c 'read -P 0x5a 512k 512k' \
    -c 'write -z 5M 100k' -c 'read -P 0 5M 100k' \
    -c 'write -z -u 9M 64k' -c 'read -P 0 9M 64k' > "$dir/zero.out"
if grep -q 'failed\|error' "$dir/zero.out"; then
    cat "$dir/zero.out"; exit 1
fi

# ---- nbdcopy round trips, compared with what Ceph itself holds --------
rbd export rbd/plain "$dir/ceph.raw"
nbdcopy "$uri" "$dir/nbd.raw"
cmp "$dir/ceph.raw" "$dir/nbd.raw"
head -c 16M /dev/urandom > "$dir/random.raw"
# A write is the client's until it flushes: librbd caches after the
# first flush (qemu-io's above), and rbd export is another client.
nbdcopy --flush "$dir/random.raw" "$uri"
rbd export rbd/plain "$dir/ceph2.raw"
cmp "$dir/random.raw" "$dir/ceph2.raw"

# ---- Block status: the fast-diff map, whole 4 MiB objects -------------
qemu-io -f raw "$fast_uri" -c 'write -P 1 4M 4k' -c 'write -P 2 13M 1M' \
    > /dev/null
qemu-img map -f raw --output=json "$fast_uri" |
    jq -c '[.[] | [.start, .length, .data]]' > "$dir/map.json"
cat "$dir/map.json"
test "$(cat "$dir/map.json")" = \
    '[[0,4194304,false],[4194304,4194304,true],[8388608,4194304,false],[12582912,4194304,true]]'
# Without fast-diff: everything is data, which is always true.
qemu-img map -f raw --output=json "$uri" |
    jq -c '[.[] | [.start, .length, .data]]' > "$dir/map-plain.json"
test "$(cat "$dir/map-plain.json")" = '[[0,16777216,true]]'

# ---- A snapshot, read-only ---------------------------------------------
qemu-io -f raw "$fast_uri" -c 'write -P 0x77 0 64k' > /dev/null
rbd snap create rbd/fast@s1
qemu-io -f raw "$fast_uri" -c 'write -P 0x88 0 64k' > /dev/null
expect_status 1 ctl_cmd add-node snap rbd pool=rbd image=fast snapshot=s1 \
    2> "$dir/snap-rw.err"
grep "node 'snap': rbd snapshot 's1' is read-only" "$dir/snap-rw.err"
ctl_cmd add-node snap rbd pool=rbd image=fast snapshot=s1 read-only=true
ctl_cmd add-export snap snap
qemu-io -r -f raw "$(uri_for snap)" -c 'read -P 0x77 0 64k' \
    -c 'read -P 1 4M 4k' > "$dir/snap.out"
qemu-io -f raw "$fast_uri" -c 'read -P 0x88 0 64k' >> "$dir/snap.out"
if grep -q 'failed\|error' "$dir/snap.out"; then
    cat "$dir/snap.out"; exit 1
fi
# nbdinfo --can exits 2 for "no".
expect_status 2 nbdinfo --can write "$(uri_for snap)"
ctl_cmd del-export snap
ctl_cmd del-node snap

# ---- An image in a RADOS namespace -------------------------------------
rbd namespace create rbd/ns1
rbd create --size 4M rbd/ns1/img
ctl_cmd add-node nsimg rbd pool=rbd namespace=ns1 image=img
ctl_cmd add-export nsimg nsimg --writable
qemu-io -f raw "$(uri_for nsimg)" -c 'write -P 0x42 0 4M' > /dev/null
rbd export rbd/ns1/img "$dir/ns.raw"
qemu-io -f raw "$dir/ns.raw" -c 'read -P 0x42 0 4M' > "$dir/ns.out"
if grep -q 'failed\|error' "$dir/ns.out"; then
    cat "$dir/ns.out"; exit 1
fi
ctl_cmd del-export nsimg
ctl_cmd del-node nsimg

# ---- Bad input: a clear error at open, nothing half-created -------------
bad() {
    local want=$1
    shift
    expect_status 1 ctl_cmd add-node bad rbd "$@" 2> "$dir/bad.err"
    cat "$dir/bad.err"
    grep -F "node 'bad': $want" "$dir/bad.err"
}
bad "pool 'nosuchpool' does not exist" pool=nosuchpool image=plain
bad "image 'nosuchimage' does not exist in pool 'rbd'" \
    pool=rbd image=nosuchimage
bad "image 'plain' does not exist in pool 'rbd/ns1'" \
    pool=rbd namespace=ns1 image=plain
bad "cannot read ceph configuration '$dir/none.conf'" \
    pool=rbd image=plain conf="$dir/none.conf"
bad "image 'fast' or its snapshot 'nosnap' does not exist" \
    pool=rbd image=fast snapshot=nosnap read-only=true
ctl_cmd -j nodes | jq -r '.[]."node-name"' | sort > "$dir/nodes"
test "$(tr '\n' ' ' < "$dir/nodes")" = 'fast plain '
# The name is free again: nothing of the failed opens was kept.
ctl_cmd add-node bad rbd pool=rbd image=plain read-only=true
ctl_cmd del-node bad

# ---- At run time: the cluster fences off one node's client ----------------
# Its requests fail with EIO (not NBD's ESHUTDOWN: the server is not
# going away); the other node, with a client of its own, goes on, and
# the daemon still stops cleanly.
watcher=$(rbd status rbd/plain | sed -n 's/.*watcher=\([^ ]*\) .*/\1/p')
test -n "$watcher"
ceph osd blocklist add "$watcher"
qemu-io -f raw "$uri" -c 'write -P 1 0 64k' -c 'read 0 64k' \
    > "$dir/fenced.out" 2>&1 || true
cat "$dir/fenced.out"
test "$(grep -c 'failed: Input/output error' "$dir/fenced.out")" = 2
qemu-io -f raw "$fast_uri" -c 'write -P 9 0 64k' -c 'read -P 9 0 64k' \
    > "$dir/other.out"
if grep -q 'failed\|error' "$dir/other.out"; then
    cat "$dir/other.out"; exit 1
fi
stop_nbdgraphd

# A config naming a pool that does not exist: file:line:column at start.
cat > "$dir/bad.yaml" <<EOF
server:
  listen: [ "unix:$dir/bad.sock" ]
nodes:
  disk:
    driver: rbd
    pool: nosuchpool
    image: plain
EOF
expect_status 1 "$NBDGRAPHD" --foreground --config "$dir/bad.yaml" \
    2> "$dir/start.err"
cat "$dir/start.err"
grep -F "$dir/bad.yaml:4:3: node 'disk': pool 'nosuchpool' does not exist" \
    "$dir/start.err"
