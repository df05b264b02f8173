# tests/nbd-remote.sh: remote NBD servers for the nbd driver's tests
# (bash, sourced after functions.sh).
#   start_remote [--tcp PORT] [--tls] NAME ARG...
#                             nbdkit ARG... on $dir/NAME.sock (--tcp: on
#                             127.0.0.1:PORT), in the background; returns
#                             once it answers (--tls: it gets
#                             --tls=require, and only its pid file is
#                             awaited: nbdinfo has no credentials)
#   stop_remote NAME          SIGKILL it and wait until it is gone
#   remote_uri NAME           the URI of that nbdkit, for direct access
# Each nbdkit dies with the test (--exit-with-parent) and is stopped by
# the EXIT trap too.

remote_uri ()
{
    if [ -s "$dir/$1.port" ]; then
        printf 'nbd://127.0.0.1:%s\n' "$(cat "$dir/$1.port")"
    else
        printf 'nbd+unix:///?socket=%s\n' "$dir/$1.sock"
    fi
}

start_remote ()
{
    local name port= tls= i listen

    while :; do
        case $1 in
        --tcp) port=$2; shift 2 ;;
        --tls) tls=--tls=require; shift ;;
        *) break ;;
        esac
    done
    name=$1
    shift
    rm -f "$dir/$name.sock" "$dir/$name.pid" "$dir/$name.port"
    listen=(-U "$dir/$name.sock")
    if [ -n "$port" ]; then
        listen=(-i 127.0.0.1 -p "$port")
        echo "$port" > "$dir/$name.port"
    fi
    nbdkit --exit-with-parent -f "${listen[@]}" ${tls:+"$tls"} \
        -P "$dir/$name.pid" "$@" >> "$dir/$name.log" 2>&1 &
    for i in $(seq 100); do
        if [ -s "$dir/$name.pid" ] &&
           { [ -n "$tls" ] ||
             timeout 5 nbdinfo --size "$(remote_uri "$name")" \
                 >/dev/null 2>&1; }
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
