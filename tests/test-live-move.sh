#!/usr/bin/env bash
# tests/test-live-move.sh: a disk moved between two hosts, live.  Two
# network namespaces joined by a veth pair stand for the hosts (private
# addresses inside them only; all removed at the end).  Daemon A, in the
# first, serves vm1 to a libnbd client (tests/live-move-client, run in
# A's namespace too) that keeps writing and checking; daemon B, in the
# second, serves an empty export over TCP.  contrib/move-disk adds an nbd
# node on A pointing at B's export, mirrors vm1 onto it and completes;
# the client, still connected to A, writes on, now into B.  At the end
# B holds exactly what the client recorded.
source "$srcdir/functions.sh"
set -e -x
requires ip -V
requires nbdcopy --version
requires flock --version
client=$top_builddir/tests/live-move-client
[ -x "$client" ] || { echo "$0: $client not built" >&2; exit 1; }

M=$((1024 * 1024))
size=$((32 * M))
ns_a=ngmoveA$$
ns_b=ngmoveB$$
b_addr=10.231.0.2

# /etc/netns is shared with other runs of this test (make -j, several
# worktrees): each run adds and removes only its own /etc/netns/$ns_a,
# under a lock, and /etc/netns itself goes only when a run made it (the
# marker says so) and no other run's folder is left in it.
netns_lock=/tmp/nbdgraph-test-netns.lock
netns_made=/tmp/nbdgraph-test-netns.made

# hosts_for_a: write A's /etc/hosts under /etc/netns.
hosts_for_a ()
{
    (
        flock 9
        if [ ! -d /etc/netns ]; then
            mkdir /etc/netns && touch "$netns_made"
        fi
        mkdir -p "/etc/netns/$ns_a"
        printf '10.231.0.1 hostb\n%s hostb\n' "$b_addr" \
            > "/etc/netns/$ns_a/hosts"
    ) 9> "$netns_lock"
}

# hosts_remove: undo hosts_for_a, leaving other runs' folders alone.
hosts_remove ()
{
    (
        flock 9
        rm -rf "/etc/netns/$ns_a"
        if [ -e "$netns_made" ] && rmdir /etc/netns 2>/dev/null; then
            rm -f "$netns_made"
        fi
    ) 9> "$netns_lock"
}

cleanup_netns ()
{
    local status=$?

    [ -n "${bpid-}" ] && kill -TERM "$bpid" 2>/dev/null
    [ -n "${cpid-}" ] && kill -TERM "$cpid" 2>/dev/null
    ip netns del "$ns_a" 2>/dev/null
    ip netns del "$ns_b" 2>/dev/null
    hosts_remove
    (exit "$status")                # _ng_cleanup reads the test's status
    _ng_cleanup
}
if ! ip netns add "$ns_a" 2>"$dir/netns.err"; then
    echo "$0: SKIP: cannot create a network namespace:" \
         "$(cat "$dir/netns.err")" >&2
    exit 77
fi
trap cleanup_netns EXIT
ip netns add "$ns_b"
ip link add "va$$" type veth peer name "vb$$"
ip link set "va$$" netns "$ns_a"
ip link set "vb$$" netns "$ns_b"
ip -n "$ns_a" addr add 10.231.0.1/24 dev "va$$"
ip -n "$ns_b" addr add "$b_addr/24" dev "vb$$"
for ns in "$ns_a" "$ns_b"; do
    ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set "va$$" up
ip -n "$ns_b" link set "vb$$" up
# Host B by name, as for real hosts: A's /etc/hosts (ip netns exec
# mounts /etc/netns/NS/hosts over it) gives it two addresses, A's own
# first (nothing listens there: refused), so the nbd node must go on to
# the second.
hosts_for_a
[ -s "/etc/netns/$ns_a/hosts" ]
ip netns exec "$ns_a" getent ahostsv4 hostb || true

# Host B: an empty disk, served over TCP on its address only.
cat > "$dir/b.yaml" <<EOF
server:
  listen: [ "tcp:$b_addr:10809" ]
  control: "$dir/b-ctl.sock"
nodes:
  disk: { driver: memory, size: $size }
exports:
  vm1-b: { node: disk, writable: true }
EOF
ip netns exec "$ns_b" "$NBDGRAPHD" --foreground --exit-with-parent \
    --config "$dir/b.yaml" >> "$dir/b.log" 2>&1 &
bpid=$!
for i in $(seq 300); do
    ip netns exec "$ns_b" timeout 5 nbdinfo --size \
        "nbd://$b_addr:10809/vm1-b" >/dev/null 2>&1 && break
    sleep 0.1
done

# Host A, in its namespace (ip netns exec keeps the PID, so the helpers
# stop it as usual).
printf '#!/bin/sh\nexec ip netns exec %s "%s" "$@"\n' "$ns_a" "$NBDGRAPHD" \
    > "$dir/daemon-in-a"
chmod +x "$dir/daemon-in-a"
NBDGRAPHD=$dir/daemon-in-a start_nbdgraphd "nodes:
  disk0: { driver: memory, size: $size }
exports:
  vm1: { node: disk0, writable: true }" vm1

# The client, busy before the move starts.
ip netns exec "$ns_a" "$client" "$uri" "$size" "$dir" > "$dir/client.log" 2>&1 &
cpid=$!
for i in $(seq 300); do
    [ -e "$dir/count" ] && break
    kill -0 "$cpid"
    sleep 0.1
done
[ -e "$dir/count" ]

NBDGRAPHCTL="$top_builddir/nbdgraphctl" \
    "$top_srcdir/contrib/move-disk" -s "$ctl" disk0 hostb:10809 vm1-b b0
"$top_builddir/nbdgraphctl" --socket "$ctl" graph > "$dir/graph"
cat "$dir/graph"
grep -q 'b0 (nbd' "$dir/graph"
# No export uses disk0 now; graph lists it after "not exported".
! sed '/^not exported$/,$d' "$dir/graph" | grep disk0 ||
    fail "an export still uses disk0 after the move"
# The old copy, unused now, can go while the client writes on.
"$top_builddir/nbdgraphctl" --socket "$ctl" del-node disk0

# The client writes on through A into B, then stops and checks it all.
before=$(cat "$dir/count")
for i in $(seq 300); do
    [ "$(cat "$dir/count")" -ge $((before + 128)) ] && break
    kill -0 "$cpid"
    sleep 0.1
done
touch "$dir/stop"
wait "$cpid"
cpid=
cat "$dir/client.log"
grep -q 'all verified' "$dir/client.log"

# B holds the client's record.
ip netns exec "$ns_b" nbdcopy "nbd://$b_addr:10809/vm1-b" "$dir/b.img"
cmp "$dir/record.img" "$dir/b.img"
stop_nbdgraphd
kill -TERM "$bpid"
wait "$bpid"
bpid=
