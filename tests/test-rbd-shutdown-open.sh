#!/usr/bin/env bash
# tests/test-rbd-shutdown-open.sh: SIGTERM while an rbd node's open waits
# for a Ceph monitor that is not there (librados retries for its
# client_mount_timeout, 5 minutes).  The daemon gives the open up, names
# the node in its log, answers the blockdev-add that waits for it, and
# exits 0 at once; it used to wait for the connect.  No cluster needed.
source "$srcdir/functions.sh"
set -e -x
if ! grep -q '^#define HAVE_LIBRBD 1' "$top_builddir/config.h"; then
    echo "$0: SKIP: nbdgraphd was built without librbd" >&2
    exit 77
fi
# Nothing listens on port 1; no auth, so no keyring is looked for.
cat > "$dir/ceph.conf" <<CONF
[global]
mon_host = 127.0.0.1:1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
CONF

start_nbdgraphd "nodes:
  m0: { driver: memory, size: 1M }
exports:
  demo: { node: m0 }"

nbdgraphctl qmp '{"execute": "blockdev-add", "arguments":
    {"node-name": "r", "driver": "rbd", "pool": "rbd", "image": "img",
     "conf": "'$dir'/ceph.conf"}}' > "$dir/add.out" 2>&1 &
add_pid=$!
# The open is under way (or about to start: cancelled as it starts,
# the same path).
sleep 2
kill -0 "$add_pid" || { cat "$dir/add.out"; fail "the open did not wait"; }

stop_nbdgraphd || fail "the daemon did not exit 0 on SIGTERM during the open"
grep -q "node 'r': the daemon stops while image 'img' of pool 'rbd' is" \
    "$dir/nbdgraphd.log" || fail "no log line names the node"
if wait "$add_pid"; then
    fail "blockdev-add of the node given up succeeded"
fi
cat "$dir/add.out"
grep -q "node 'r': the daemon stops: open of image 'img' given up" \
    "$dir/add.out"
