#!/usr/bin/env bash
# tests/test-reload-async.sh: reload adds and removes nodes whose open goes
# on in the background — an nbd node on an nbdkit this test starts, an
# nbdkit-memory node, a qcow2 image, a LUKS image (its key derived on a
# worker) — and exports them.  While the plan
# waits for an open (an nbd node whose server comes up only later), a
# client of another export keeps writing and reading back; a node that
# cannot open (an unreachable socket) rolls back the steps before it,
# leaving the graph as it was; a daemon stopped while a reload waits exits
# cleanly.
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
source "$srcdir/nbdkit.sh"
set -e -x
requires jq --version
requires qemu-io --version
requires qemu-img --version
requires test -f "$plugindir/nbdkit-memory-plugin.so"

out=$dir/out
err=$dir/err

start_remote up memory 4M
qemu-img create -q -f qcow2 "$dir/q.qcow2" 4M
# QEMU 7.2's PBKDF2 timing sometimes fails ("Unable to get accurate CPU
# usage", fixed in QEMU 9.2.1): try again then, as tests/test-luks.sh.
for try in 1 2 3 4 5; do
    qemu-img create -q -f luks --object secret,id=sec0,data=hunter2 \
        -o key-secret=sec0,iter-time=10 "$dir/l.luks" 4M 2> "$dir/create.err" &&
        break
    cat "$dir/create.err" >&2
    grep -q "Unable to get accurate CPU usage" "$dir/create.err"
    test "$try" -lt 5
done
start_nbdgraphd "secrets:
  sec0: { data: hunter2 }
nodes:
  m0: { driver: memory, size: 4M }
exports:
  demo: { node: m0, writable: true }"
conf=$dir/config.yaml
cp "$conf" "$dir/orig.yaml"

graph_state () {
    nbdgraphctl qmp '{"execute":"query-graph"}' | jq -S .return
    nbdgraphctl dump-config
}

# A client of demo that stays connected through every reload: qemu-io
# reads its commands from a FIFO, one at a time (it takes the next line
# only once it answered the last).  `client N` writes pattern N at a new
# place and reads it back, each answered before the next is sent.
mkfifo "$dir/cmds"
# Made here, not by the background redirect, so the first grep never
# races with its creation (an empty count broke the comparison below).
: > "$dir/client.log"
qemu-io -f raw "$uri" < "$dir/cmds" > "$dir/client.log" 2>&1 &
client_pid=$!
exec 7> "$dir/cmds"
client_cmd () {
    local i n

    n=$(grep -c "> $2\$" "$dir/client.log" || true)
    echo "$1" >&7
    for i in $(seq 300); do
        [ "$(grep -c "> $2\$" "$dir/client.log")" -gt "$n" ] && return 0
        sleep 0.1
    done
    echo "the client of demo got no answer to '$1'" >&2
    cat "$dir/client.log" >&2
    return 1
}
client () {
    local off=$(( $1 * 4096 ))

    client_cmd "write -P $1 $off 4k" "wrote 4096/4096 bytes at offset $off"
    client_cmd "read -P $1 $off 4k" "read 4096/4096 bytes at offset $off"
}
client 1

# Three nodes that open asynchronously, added and exported by a reload.
sed "/^exports:/i\\
  r0: { driver: nbd, server: { type: unix, path: \"$dir/up.sock\" } }\\
  k0: { driver: nbdkit, plugin: memory, args: { size: 4M } }\\
  q0: { driver: qcow2, file: { driver: file, filename: \"$dir/q.qcow2\" } }\\
  l0: { driver: luks, key-secret: sec0,\\
        file: { driver: file, filename: \"$dir/l.luks\" } }" \
    "$dir/orig.yaml" > "$dir/add.yaml"
cat >> "$dir/add.yaml" <<'EOF'
  re: { node: r0, writable: true }
  ke: { node: k0, writable: true }
  qe: { node: q0, writable: true }
  le: { node: l0, writable: true }
EOF
nbdgraphctl reload "$dir/add.yaml" > $out
cat $out
grep -q 'applied 8 step(s)' $out
client 2
for e in re ke qe le; do
    qemu-io -f raw -c 'write -P 7 64k 64k' "$(uri_for $e)"
    qemu-io -f raw -c 'read -P 7 64k 64k' "$(uri_for $e)" | grep -q '^read'
done
# The nbd node's writes reached the nbdkit behind it (the qcow2's and
# the LUKS node's images are read through QEMU once they are removed).
qemu-io -f raw -c 'read -P 7 64k 64k' "$(remote_uri up)" | grep -q '^read'
nbdgraphctl dump-config > "$dir/dump.yaml"
nbdgraphctl reload --dry-run "$dir/dump.yaml" > $out
grep -q 'would apply 0 step(s)' $out
grep -q "reload-1: step 1/8 add-node '.0': added" "$dir/nbdgraphd.log"

# A node whose server is not up yet: the plan waits for its open while
# the loop serves demo's client, and goes on once the server answers.
sed -e "/^exports:/i\\
  late: { driver: nbd, open-timeout: 60,\\
          server: { type: unix, path: \"$dir/late.sock\" } }" \
    "$dir/add.yaml" > "$dir/late.yaml"
echo "  lte: { node: late }" >> "$dir/late.yaml"
nbdgraphctl reload "$dir/late.yaml" > "$dir/late.out" 2>&1 &
reload_pid=$!
sleep 1
for n in 3 4 5; do
    client $n
    kill -0 $reload_pid        # still waiting for 'late'
done
start_remote late memory 1M
wait $reload_pid
cat "$dir/late.out"
grep -q 'applied 2 step(s)' "$dir/late.out"
timeout 10 nbdinfo --size "$(uri_for lte)" | grep -qx 1048576

# A node that cannot open (nobody listens on its socket; the nbd node
# retries for 2 s) fails the plan half-way: the group and the memory node
# added before it are taken out again, nothing else changes.
graph_state > "$dir/before"
sed -e "/^exports:/i\\
  a0: { driver: memory, size: 1M }\\
  zz: { driver: nbd, open-timeout: 2,\\
        server: { type: unix, path: \"$dir/nowhere.sock\" } }" \
    -e "/^nodes:/i\\
throttle-groups:\\
  g9: { iops-total: 1000 }" "$dir/late.yaml" > "$dir/bad.yaml"
cat >> "$dir/bad.yaml" <<'EOF'
  ae: { node: a0, throttle-group: g9 }
  ze: { node: zz }
EOF
nbdgraphctl reload "$dir/bad.yaml" > "$dir/bad.out" 2> $err &
reload_pid=$!
client 6
expect_status 1 wait $reload_pid
cat $err
grep -q "bad.yaml:[0-9]*:[0-9]*: .*nowhere.sock" $err
grep -q "rolled back; nothing changed" $err
grep -q "undid add-node 'a0'" "$dir/nbdgraphd.log"
grep -q "undid add-group 'g9'" "$dir/nbdgraphd.log"
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"
client 7

# Back to the first file: the asynchronously opened nodes go, closed.
nbdgraphctl reload "$dir/orig.yaml" > $out
cat $out
for n in r0 k0 q0 l0 late; do grep -q "remove-node *$n " $out; done
nbdgraphctl dump-config > "$dir/dump.yaml"
! grep -e r0: -e k0: -e q0: -e l0: -e late: "$dir/dump.yaml" ||
    fail "nodes of the other file are still there"
client 8
qemu-io -f qcow2 -c 'read -P 7 64k 64k' "$dir/q.qcow2" | grep -q '^read'
qemu-io --object secret,id=sec0,data=hunter2 \
    --image-opts "driver=luks,key-secret=sec0,file.filename=$dir/l.luks" \
    -c 'read -P 7 64k 64k' | grep -q '^read'
client_cmd 'read -P 1 4k 4k' 'read 4096/4096 bytes at offset 4096'
echo quit >&7
exec 7>&-
for i in $(seq 100); do kill -0 $client_pid 2>/dev/null || break; sleep 0.1; done
wait $client_pid
! grep -i -e fail -e error "$dir/client.log" ||
    fail "the client connected through the reloads saw an error"

# The daemon stopped while a reload waits for an open exits cleanly
# (under the sanitizers: nothing leaked); the stop gives up the open in
# flight, so the reload ends first, rolled back, and its caller is told
# (tests/test-shutdown-open.sh checks that the exit does not wait).
sed -e "/^exports:/i\\
  slow: { driver: nbd, open-timeout: 3,\\
          server: { type: unix, path: \"$dir/nowhere.sock\" } }" \
    "$dir/orig.yaml" > "$dir/stop.yaml"
echo "  se: { node: slow }" >> "$dir/stop.yaml"
nbdgraphctl reload "$dir/stop.yaml" > "$dir/stop.out" 2>&1 &
reload_pid=$!
sleep 1
stop_nbdgraphd
expect_status 1 wait $reload_pid
grep -q "reload reload-6: rolled back: .*nowhere.sock" "$dir/nbdgraphd.log"
