#!/usr/bin/env bash
# tests/test-shutdown-open.sh: SIGTERM while a node's open waits for a
# remote stops the daemon at once, not at the node's open-timeout.  The
# remote is a listener that accepts and never answers, so the nbd
# driver's handshake hangs; open-timeout 60 would hold the exit for a
# minute.  Both a blockdev-add and a reload waiting for such a node: the
# daemon exits 0 within a bound (under the sanitizers: nothing leaked),
# and the waiting caller is answered with an error.
source "$srcdir/functions.sh"
set -e -x
requires python3 --version

mute=$dir/mute.sock
accepted=$dir/accepted

# A server that takes connections and says nothing; each accept is
# counted in $accepted.
python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
    with open(sys.argv[2], "a") as f:
        f.write("x\n")
' "$mute" "$accepted" &
mute_pid=$!
# _ng_cleanup reads the test's status: keep it.
trap 'rc=$?; kill $mute_pid 2>/dev/null; (exit $rc); _ng_cleanup' EXIT
for i in $(seq 100); do [ -S "$mute" ] && break; sleep 0.1; done
test -S "$mute"

# wait_accepts N: until the mute server has taken N connections.
wait_accepts ()
{
    for i in $(seq 300); do
        [ "$(cat "$accepted" 2>/dev/null | wc -l)" -ge "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

config="nodes:
  m0: { driver: memory, size: 1M }
exports:
  demo: { node: m0 }"

# A blockdev-add waiting for the mute server.
start_nbdgraphd "$config"
nbdgraphctl add-node hung nbd server.type=unix server.path="$mute" \
    open-timeout=60 > "$dir/add.out" 2>&1 &
add_pid=$!
wait_accepts 1
sleep 0.5                       # the handshake is under way
stop_within 10
expect_status 1 wait $add_pid
cat "$dir/add.out"
grep -q "node 'hung': unix:$mute: open given up: the daemon stops" \
    "$dir/add.out"

# A reload waiting for the same: rolled back, its caller told.
start_nbdgraphd "$config"
cp "$dir/config.yaml" "$dir/reload.yaml"
sed -i -e "/^exports:/i\\
  hung: { driver: nbd, open-timeout: 60,\\
          server: { type: unix, path: \"$mute\" } }" "$dir/reload.yaml"
echo "  he: { node: hung }" >> "$dir/reload.yaml"
nbdgraphctl reload "$dir/reload.yaml" > "$dir/reload.out" 2>&1 &
reload_pid=$!
wait_accepts 2
sleep 0.5
stop_within 10
expect_status 1 wait $reload_pid
cat "$dir/reload.out"
grep -q "rolled back: .*open given up: the daemon stops" "$dir/nbdgraphd.log"
