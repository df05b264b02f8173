#!/usr/bin/env bash
# tests/test-drv-nbd-hostile.sh: the nbd driver's own wire code (the
# data connection's simple replies, graph/drv-nbd.c) against a remote
# that answers badly: a wrong magic, a cookie never sent, a read's data
# cut short, an error code (NBD_ENOSPC, and 999: proto.md leaves an
# unknown one to the client, which maps it to EINVAL as libnbd does), a
# read answered twice or with too much data, a write answered before
# its data was sent.  tests/nbd-hostile-server.py does that at one
# offset, and (but for the last case) only on its connections without
# structured replies, so the handshakes and the main connection are
# sound.  A bad reply is the connection's end: with reconnect-delay 0
# the request fails with EIO (never wrong data); with a delay it is
# retried on the new connections and gets the right data; an error
# code is the request's error; a request that every connection dies of
# fails once reconnect-delay is over, not never.  Each time the daemon
# lives on, a memory node's export keeps its data, and the nbd node
# reconnects and serves again.
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -e -x
requires qemu-io --version
requires python3 --version

M=$((1024 * 1024))
T=$((8 * M))                        # where the server misbehaves
# The server; its pid file lets nbd-remote.sh's EXIT trap kill it.
python3 "$srcdir/nbd-hostile-server.py" "$dir/hostile.sock" $((16 * M)) \
    "$dir/mode" "$dir/hostile.log" 2> "$dir/hostile.err" &
echo $! > "$dir/hostile.pid"
for i in $(seq 100); do
    [ -S "$dir/hostile.sock" ] && break
    sleep 0.1
done
start_nbdgraphd "nodes:
  mem: { driver: memory, size: 16M }
  hf:
    driver: nbd
    server: { type: unix, path: \"@DIR@/hostile.sock\" }
  hr:
    driver: nbd
    reconnect-delay: 3
    server: { type: unix, path: \"@DIR@/hostile.sock\" }
exports:
  demo: { node: mem, writable: true }
  hf: { node: hf, writable: true }
  hr: { node: hr, writable: true }"
mem=$(uri_for demo)
out=$dir/out

# The data the remote holds at T, and the memory node's.
qemu-io -f raw "$(uri_for hr)" -c "write -P 0x5a $T 4M" -c flush |
    grep -q 'wrote 4194304'
qemu-io -f raw "$mem" -c 'write -P 0x66 0 1M' | grep -q 'wrote 1048576'
# Both nodes have a data connection (the server logs them: structured=0).
[ "$(grep -c 'structured=0' "$dir/hostile.log")" -ge 2 ]

faults () { grep -c ': [a-z0-9]* at ' "$dir/hostile.log" || true; }

# hostile NODE MODE WANT QEMU-IO-CMD...: with MODE armed once, run the
# commands against NODE's export until the fault fired (a request may go
# on the main connection while a new data connection comes up: then
# nothing fired, and the right data came back); the output must hold
# WANT.  Bounded: a hang fails.
hostile ()
{
    local node=$1 mode=$2 want=$3 n i rc

    shift 3
    n=$(faults)
    for i in $(seq 50); do
        echo "$mode $T once" > "$dir/mode"
        rc=0
        timeout 20 qemu-io -f raw "$(uri_for "$node")" "$@" > "$out" 2>&1 ||
            rc=$?
        cat "$out"
        # 1: a command failed; a timeout (124) or a signal is not that.
        [ $rc -le 1 ] || fail "qemu-io on $node ($mode) hung or died ($rc)"
        [ "$(faults)" -gt "$n" ] && break
        grep -q -e 'read 65536/65536' -e 'wrote' "$out" ||
            fail "$node ($mode) failed, and no fault fired"
        sleep 0.1
    done
    [ "$(faults)" -gt "$n" ] || fail "$mode never fired on $node"
    : > "$dir/mode"
    grep -q -e "$want" "$out" || fail "$node ($mode): no '$want'"
    ! grep -q 'Pattern verification failed' "$out" ||
        fail "$node ($mode): wrong data"
    kill -0 "$nbdgraphd_pid" || fail "nbdgraphd died ($node, $mode)"
}

# The node lost its connection COUNT times (the daemon's log says why),
# and serves the right data again; so does the memory node.
lost ()
{
    local node=$1 count=$2 why=$3 i

    for i in $(seq 100); do
        [ "$(grep -c "node '$node': lost the connection" \
             "$dir/nbdgraphd.log")" -ge "$count" ] && break
        sleep 0.1
    done
    [ "$(grep -c "node '$node': lost the connection" \
         "$dir/nbdgraphd.log")" -ge "$count" ] ||
        fail "$node did not drop the connection ($why)"
    grep "node '$node': lost the connection" "$dir/nbdgraphd.log" |
        tail -1 | grep -q "$why" || fail "$node: lost it, but not for $why"
    healthy "$node"
}

healthy ()
{
    local i

    for i in $(seq 50); do
        timeout 20 qemu-io -f raw "$(uri_for "$1")" \
            -c "read -P 0x5a $T 4M" > "$out" 2>&1 || true
        grep -q 'read 4194304/4194304' "$out" && break
        sleep 0.2                   # reconnecting: EIO meanwhile
    done
    grep -q 'read 4194304/4194304' "$out" || fail "$1 does not come back"
    timeout 20 qemu-io -f raw "$mem" -c 'read -P 0x66 0 1M' |
        grep -q 'read 1048576/1048576' || fail "the memory node's data"
}

rd="read -P 0x5a $T 64k"
# 1. A wrong magic.
hostile hf badmagic 'Input/output error' -c "$rd"
lost hf 1 'not a simple reply'
hostile hr badmagic 'read 65536/65536' -c "$rd"
lost hr 1 'not a simple reply'
# 2. A cookie we never sent.
hostile hf badcookie 'Input/output error' -c "$rd"
lost hf 2 'a reply to no request'
hostile hr badcookie 'read 65536/65536' -c "$rd"
lost hr 2 'a reply to no request'
# 3. Half a read's data, then the socket closed.
hostile hf short 'Input/output error' -c "$rd"
lost hf 3 'the server closed the connection'
hostile hr short 'read 65536/65536' -c "$rd"
lost hr 3 'the server closed the connection'
# 4. Error codes: the request's error, and the connection lives on.
hostile hr enospc 'No space left on device' -c "write -P 0x5a $T 64k"
hostile hr err999 'Invalid argument' -c "write -P 0x5a $T 64k"
hostile hr err999 'Invalid argument' -c "$rd"
hostile hf enospc 'No space left on device' -c "write -P 0x5a $T 64k"
[ "$(grep -c "node 'hr': lost the connection" "$dir/nbdgraphd.log")" -eq 3 ]
[ "$(grep -c "node 'hf': lost the connection" "$dir/nbdgraphd.log")" -eq 3 ]
healthy hr
# 5. A read answered twice, or with more data than asked for: the first
# reply is the read's (right data); what follows ends the connection.
hostile hf dup 'read 65536/65536' -c "$rd"
lost hf 4 'a reply to no request'
hostile hf long 'read 65536/65536' -c "$rd"
lost hf 5 'not a simple reply'
# 6. A write answered while its data is still going out (4 MiB: more
# than the socket holds): the request must not be finished while we
# send from its buffer.
hostile hf early 'Input/output error' -c "write -P 0x5a $T 4M"
lost hf 6 'a reply to a request not sent'
# 7. A read that every connection dies of, the main one (libnbd's) too:
# retried for reconnect-delay (3 s) from its first loss, then EIO; not
# for ever, each new connection restarting the delay, and not in a storm.
echo "badmagic $T any" > "$dir/mode"
n=$(faults)
start=$SECONDS
rc=0
timeout 12 qemu-io -f raw "$(uri_for hr)" -c "$rd" > "$out" 2>&1 || rc=$?
cat "$out"
[ $rc -le 1 ] || fail "a read that kills every connection hangs ($rc)"
grep -q 'Input/output error' "$out" || fail "hr (badmagic any): no EIO"
[ $((SECONDS - start)) -ge 2 ] || fail "hr (badmagic any): EIO too early"
[ "$(faults)" -gt $((n + 1)) ] || fail "hr (badmagic any): not retried"
# A connection that dies within a second of coming up is retried a
# second later, not at once: a few tries in the 3 s, not thousands.
[ "$(faults)" -le $((n + 8)) ] ||
    fail "hr (badmagic any): $(( $(faults) - n )) reconnects in 3 s"
: > "$dir/mode"
healthy hr
nbdgraphctl nodes | grep -q '^hf '
nbdgraphctl nodes | grep -q '^hr '
stop_nbdgraphd
