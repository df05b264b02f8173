#!/usr/bin/env bash
# tests/test-nbdkit-shutdown-open.sh: SIGTERM while a plugin's .open is
# stuck (it sleeps for 10 minutes, where nothing can wake it).  The
# daemon gives the open up, names the node in its log, answers the
# blockdev-add that waits for it, and exits 0 at once, leaving the
# thread in the plugin; it used to wait for .open to return.  Under ASan
# the node freed while that thread lives shows no use after free.
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -e -x
plugin=$top_builddir/tests/nbdkit-ngtest-plugin.so

start_nbdgraphd "nodes:
  m0: { driver: memory, size: 1M }
exports:
  demo: { node: m0 }"

# blockdev-add waits for the open; .open makes the marker, then sleeps.
args='"args": {"open-sleep": "600", "open-marker": "'$dir'/in-open"}'
nbdgraphctl qmp '{"execute": "blockdev-add", "arguments":
    {"node-name": "slow", "driver": "nbdkit",
     "plugin": "'$plugin'", '"$args"'}}' > "$dir/add.out" 2>&1 &
add_pid=$!
for i in $(seq 300); do
    [ -e "$dir/in-open" ] && break
    sleep 0.1
done
[ -e "$dir/in-open" ] || fail "the plugin's .open did not start"
nbdgraphctl nodes > "$dir/nodes"
! grep -q '^slow ' "$dir/nodes"

stop_nbdgraphd || fail "the daemon did not exit 0 on SIGTERM during .open"
grep -q "node 'slow': the daemon stops while plugin '.*' is still opening it" \
    "$dir/nbdgraphd.log" || fail "no log line names the node"
if wait "$add_pid"; then
    fail "blockdev-add of the node given up succeeded"
fi
cat "$dir/add.out"
grep -q "node 'slow': the daemon stops: open given up" "$dir/add.out"
