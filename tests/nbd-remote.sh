# tests/nbd-remote.sh: remote NBD servers for the nbd driver's tests
# (bash, sourced after functions.sh).
#   start_remote NAME ARG...  nbdkit ARG... on $dir/NAME.sock, in the
#                             background; returns once it answers
#   stop_remote NAME          SIGKILL it and wait until it is gone
#   remote_uri NAME           the URI of that nbdkit, for direct access
# Each nbdkit dies with the test (--exit-with-parent) and is stopped by
# the EXIT trap too.

remote_uri ()
{
    printf 'nbd+unix:///?socket=%s\n' "$dir/$1.sock"
}

start_remote ()
{
    local name=$1 i

    shift
    rm -f "$dir/$name.sock" "$dir/$name.pid"
    nbdkit --exit-with-parent -f -U "$dir/$name.sock" \
        -P "$dir/$name.pid" "$@" >> "$dir/$name.log" 2>&1 &
    for i in $(seq 100); do
        if [ -s "$dir/$name.pid" ] &&
           timeout 5 nbdinfo --size "$(remote_uri "$name")" >/dev/null 2>&1
        then
            return 0
        fi
        sleep 0.1
    done
    echo "$0: nbdkit $* did not start; its log:" >&2
    cat "$dir/$name.log" >&2
    exit 1
}

stop_remote ()
{
    local pid i

    pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 0
    rm -f "$dir/$1.pid"
    # SIGKILL: the remote crashes.  (On SIGTERM nbdkit would wait for
    # its clients, us, to go first.)
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

_ng_stop_remotes ()
{
    local status=$? f

    for f in "$dir"/*.pid; do
        [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    (exit "$status")                # _ng_cleanup reads the test's status
    _ng_cleanup
}
trap _ng_stop_remotes EXIT
