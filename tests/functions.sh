# tests/functions.sh: helpers for every shell test that runs the daemon
# (bash).  Start a test with
#   source "$srcdir/functions.sh"
# automake's environment sets srcdir (the tests/ folder), top_builddir
# and NBDGRAPHD.
#
# Sourcing it bounds the whole test in time, makes a private temp dir
# $dir (there before any daemon starts, for files a config names;
# removed on exit) and installs an EXIT trap that stops a daemon left
# running and fails the test unless that daemon exited 0.  Then:
#   requires CMD [ARG]...        skip (exit 77) unless CMD runs
#   python_with CODE             $py: a python3 that runs CODE, else skip
#   start_nbdgraphd TEXT [EXPORT]
#   start_nbdgraphd --config FILE [EXPORT]
#                                start the daemon; sets $sock $ctl $uri
#   uri_for EXPORT               the nbd+unix URI of another export
#   stop_nbdgraphd               SIGTERM; fails unless exit 0, socket gone
#   expect_status N CMD [ARG]... fail unless CMD exits with N
#   nbdgraphctl ARG...           the built nbdgraphctl on the daemon's $ctl
#   qmp JSON                     one QMP command through it
#   job_of ID                    job ID's query-jobs entry ("" once gone)
#   wait_for TEST                until the shell command TEST succeeds, 60 s
#   start_events NODE OPTIONS    `nbdgraphctl events` into ./events,
#   stop_events                  connected; ended
#   add_dirty_bitmap NODE NAME [GRANULARITY]
#                                block-dirty-bitmap-add
#   bitmaps_of NODE              NODE's dirty bitmaps, one JSON line
#   nbd_map URI                  `nbdinfo --map`, runs of one type merged
#   kill_during_writes IMAGE     kill -9 the daemon under flushed writes,
#                                then `qemu-img check` IMAGE
#   export_connections ID        clients of export ID (query-block-exports)
#   wait_export_connections ID N wait until export ID has N clients
#   free_port                    a free TCP port on 127.0.0.1
#   make_qcow2_chain SIZE LAYER=WRITES...
#                                a qcow2 backing chain and want.raw
#   fail MESSAGE...              fail the test, saying what was wrong
# One daemon at a time; after stop_nbdgraphd another may start.

# A hung client or daemon must fail the test, not hang `make check`.
# Re-run this script under timeout(1): on expiry it signals its whole
# process group, so the clients and the daemon go too.  ASan builds are
# several times slower, hence the margin.
if [ -z "${NG_UNDER_TIMEOUT-}" ]; then
    export NG_UNDER_TIMEOUT=1
    exec timeout --kill-after=10 "${NG_TEST_TIMEOUT:-240}" \
        bash "$0" "$@"
fi

: "${NBDGRAPHD:=${top_builddir:-.}/nbdgraphd}"
nbdgraphd_pid=
sock=
ctl=
uri=
dir=$(mktemp -d "${TMPDIR:-/tmp}/ngtest.XXXXXX") || exit 1

# requires CMD [ARG]...: skip the test (exit 77) unless `CMD ARG...` runs
# successfully; with a bare CMD, unless CMD is on $PATH.
requires ()
{
    if [ $# -eq 1 ]; then
        command -v "$1" >/dev/null 2>&1 && return 0
    elif "$@" </dev/null >/dev/null 2>&1; then
        return 0
    fi
    echo "$0: SKIP: needs '$*'" >&2
    exit 77
}

# python_with CODE: $py becomes the first python3 that runs CODE (an
# import): Debian's python3-* modules are for /usr/bin/python3, which
# another python3 earlier on $PATH may hide; the test is skipped when
# neither does.
python_with ()
{
    for py in python3 /usr/bin/python3; do
        "$py" -c "$1" >/dev/null 2>&1 && return 0
    done
    requires python3 -c "$1"
}

# uri_for EXPORT: the URI of EXPORT on the running daemon.
uri_for ()
{
    printf 'nbd+unix:///%s?socket=%s\n' "$1" "$sock"
}

# start_nbdgraphd CONFIG_TEXT [EXPORT]
# start_nbdgraphd --config FILE [EXPORT]
# Write the config to $dir/config.yaml with @SOCK@, @CONTROL@ and @DIR@
# replaced by $sock, $ctl and $dir, and run $NBDGRAPHD on it in the
# background.  The text normally holds only nodes: and exports:; unless
# server: starts a line of its own, a server: section listening on $sock
# with its control socket at $ctl is added.  Returns once `nbdinfo
# --size` answers on EXPORT (default "demo"), whose URI is then in $uri,
# and, when the config names $ctl, once that socket exists too.
start_nbdgraphd ()
{
    local text name i rc=0 xtrace= want_ctl=

    # Its wait loop would drown a `set -x` log; the config is shown instead.
    case $- in *x*) xtrace=1; { set +x; } 2>/dev/null ;; esac
    if [ "$1" = --config ]; then
        text=$(cat "$2") || exit 1
        shift
    else
        text=$1
    fi
    name=${2:-demo}
    requires nbdinfo --version              # the readiness probe
    if [ -n "$nbdgraphd_pid" ]; then
        echo "$0: start_nbdgraphd: a daemon is already running" >&2
        exit 1
    fi
    sock=$dir/nbd.sock
    ctl=$dir/control.sock
    if ! grep -q '^server:' <<<"$text"; then
        text="server:
  listen: [ \"unix:@SOCK@\" ]
  control: \"@CONTROL@\"
$text"
    fi
    # A config may go without a control socket; then only NBD is awaited.
    case $text in *@CONTROL@*) want_ctl=1 ;; esac
    text=${text//@SOCK@/$sock}
    text=${text//@CONTROL@/$ctl}
    text=${text//@DIR@/$dir}
    printf '%s\n' "$text" > "$dir/config.yaml"
    echo "start_nbdgraphd: $dir/config.yaml:" >&2
    cat "$dir/config.yaml" >&2
    # Appended: a second daemon in one test keeps the first one's log.
    "$NBDGRAPHD" --foreground --exit-with-parent \
        --config "$dir/config.yaml" >> "$dir/nbdgraphd.log" 2>&1 &
    nbdgraphd_pid=$!
    uri=$(uri_for "$name")
    # 300 rounds of at least 0.1 s: 30 s, enough for an ASan build.
    for i in $(seq 300); do
        if { [ -z "$want_ctl" ] || [ -S "$ctl" ]; } &&
               timeout 5 nbdinfo --size "$uri" >/dev/null 2>&1; then
            [ -n "$xtrace" ] && set -x
            return 0
        fi
        if ! kill -0 "$nbdgraphd_pid" 2>/dev/null; then
            wait "$nbdgraphd_pid" || rc=$?      # no set -e exit here
            echo "$0: nbdgraphd exited ($rc) during startup; its log:" >&2
            cat "$dir/nbdgraphd.log" >&2
            nbdgraphd_pid=
            exit 1
        fi
        sleep 0.1
    done
    echo "$0: nbdgraphd did not answer on $uri${want_ctl:+ and make $ctl}" \
         "within 30 s" >&2
    exit 1
}

# stop_within SECONDS: SIGTERM; fail unless the daemon exits 0 within
# SECONDS (a shutdown that must not wait for what is still pending).
stop_within ()
{
    local pid=$nbdgraphd_pid i

    kill -TERM "$pid"
    for i in $(seq $(($1 * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$0: nbdgraphd still running $1 s after SIGTERM" >&2
        return 1
    fi
    stop_nbdgraphd              # reaps it: exit 0, socket gone
}

# stop_nbdgraphd: SIGTERM, wait (bounded: a daemon that ignores SIGTERM
# must not hang the suite), then fail (return 1) unless it exited 0 and
# removed its socket file, as the README promises.
stop_nbdgraphd ()
{
    local pid=$nbdgraphd_pid rc=0 i

    [ -n "$pid" ] || return 0
    nbdgraphd_pid=
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -KILL "$pid" 2>/dev/null; then
        echo "$0: nbdgraphd ignored SIGTERM for 30 s" >&2
    fi
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "$0: nbdgraphd exited with status $rc; its log:" >&2
        cat "$dir/nbdgraphd.log" >&2
        return 1
    fi
    if [ -e "$sock" ]; then
        echo "$0: nbdgraphd left its socket $sock behind" >&2
        return 1
    fi
}

# expect_status N CMD [ARG]...: run CMD, fail unless it exits with N.
expect_status ()
{
    local want=$1 rc=0

    shift
    "$@" || rc=$?
    if [ $rc -ne "$want" ]; then
        echo "$0: '$*' exited with $rc, expected $want" >&2
        return 1
    fi
}

# nbdgraphctl ARG...: the nbdgraphctl of this build, on the control
# socket of the daemon start_nbdgraphd started.
nbdgraphctl ()
{
    "$top_builddir/nbdgraphctl" --socket "$ctl" "$@"
}

# qmp JSON: send one QMP command; its return value goes to stdout, an
# error makes it fail.
qmp ()
{
    nbdgraphctl qmp "$1"
}

# job_of ID: job ID's query-jobs entry, one line ("" once gone).
job_of ()
{
    qmp '{"execute": "query-jobs"}' | jq -c --arg id "$1" \
        '.return[] | select(.id == $id)'
}

# wait_for TEST: run TEST (a shell command) until it succeeds, 60 s.
wait_for ()
{
    local i
    for i in $(seq 600); do
        eval "$1" && return 0
        sleep 0.1
    done
    fail "still not: $1"
}

# start_events NODE OPTIONS: `nbdgraphctl events` into ./events (the
# test's cwd) in the background, returning once it is connected: a
# blockdev-reconfigure of NODE with OPTIONS, which must change nothing
# (e.g. '{"inject-error": []}' on a blkdebug node), shows in it as
# GRAPH_CHANGED.  stop_events ends it.
start_events ()
{
    local i
    : > events
    nbdgraphctl events > events &
    events_pid=$!
    for i in $(seq 300); do
        qmp "{\"execute\": \"blockdev-reconfigure\", \"arguments\": {
            \"node-name\": \"$1\", \"options\": $2}}" > /dev/null
        grep -q GRAPH_CHANGED events && return 0
        sleep 0.1
    done
    fail "nbdgraphctl events saw nothing"
}

stop_events () { kill "$events_pid"; wait "$events_pid" || true; }

# add_dirty_bitmap NODE NAME [GRANULARITY]: a dirty bitmap on NODE
# (block-dirty-bitmap-add), of the node's default granularity unless
# given (bytes).
add_dirty_bitmap ()
{
    qmp "{\"execute\":\"block-dirty-bitmap-add\",
          \"arguments\":{\"node\":\"$1\",\"name\":\"$2\"${3:+,
                       \"granularity\":$3}}}"
}

# bitmaps_of NODE: NODE's dirty bitmaps (query-named-block-nodes) as
# one line of JSON, [{name, granularity, recording}...] sorted by name.
# Needs jq.
bitmaps_of ()
{
    qmp '{"execute":"query-named-block-nodes"}' |
        jq -c --arg n "$1" '[.return[] | select(."node-name" == $n) |
                ."dirty-bitmaps"[] | {name, granularity, recording}] |
               sort_by(.name)'
}

# nbd_map URI: `nbdinfo --map` (base:allocation) as "offset length type"
# lines, adjacent extents of one type merged (how the server splits them
# is its own business); type 3 is hole+zero, 0 is data.  Needs jq.
nbd_map ()
{
    nbdinfo --map --json "$1" |
        jq -r 'reduce .[] as $e ([];
                   if length > 0 and .[-1].type == $e.type
                   then .[-1].length += $e.length else . + [$e] end)
               | .[] | "\(.offset) \(.length) \(.type)"'
}

# kill_during_writes IMAGE: write (qemu-io, with flushes between, so that
# metadata is on its way to the disk) to $uri for 2 s, then kill -9 the
# daemon; fail unless `qemu-img check` finds IMAGE clean or with leaked
# clusters only (3; 2 would be corruption).
kill_during_writes ()
{
    local writer rc=0 i

    (
        for i in $(seq 1 400); do
            qemu-io -f raw -c "write -P $((i % 250)) $((i * 100))k 60k" \
                -c flush "$uri" >/dev/null 2>&1 || exit 0
        done
    ) &
    writer=$!
    sleep 2
    kill -9 "$nbdgraphd_pid"
    wait "$nbdgraphd_pid" || true
    nbdgraphd_pid=
    wait "$writer" || true
    qemu-img check "$1" || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ]
}

# export_connections ID: the clients export ID has now (query-block-exports).
export_connections ()
{
    qmp '{"execute":"query-block-exports"}' |
        jq -r --arg id "$1" '.return[] | select(.id == $id) | .connections'
}

# wait_export_connections ID N: wait (up to 30 s) until export ID has N
# clients; fails if it never does.  Needs jq.
wait_export_connections ()
{
    local i

    for i in $(seq 300); do
        [ "$(export_connections "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    [ "$(export_connections "$1")" = "$2" ] ||
        fail "export '$1' has $(export_connections "$1") clients, not $2"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now (the
# kernel's pick; needs python3).
free_port ()
{
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# make_qcow2_chain SIZE LAYER=WRITES...: qcow2 images LAYER.qcow2 of
# SIZE in the current directory, each backed by the one before it (the
# first has none), each with its own WRITES (comma-separated
# PATTERN@OFFSET:LENGTH, given to `qemu-io write -P`; empty: none), and
# want.raw, the last layer's contents as a raw file.  Needs qemu-img and
# qemu-io.  Example:
#   make_qcow2_chain 256M base=0x11@16M:2M mid= top=0x33@200M:1M,0x44@0:4k
make_qcow2_chain ()
{
    local size=$1 layer name writes w prev= cmds
    shift
    for layer in "$@"; do
        name=${layer%%=*}
        writes=${layer#*=}
        rm -f "$name.qcow2"
        qemu-img create -q -f qcow2 ${prev:+-b "$prev.qcow2" -F qcow2} \
            "$name.qcow2" "$size"
        cmds=()
        for w in ${writes//,/ }; do
            cmds+=(-c "write -P ${w%%@*} $(echo "${w#*@}" | tr : ' ')")
        done
        [ ${#cmds[@]} -eq 0 ] ||
            qemu-io -f qcow2 "${cmds[@]}" "$name.qcow2" > /dev/null
        prev=$name
    done
    rm -f want.raw
    qemu-img convert -U -f qcow2 -O raw "$prev.qcow2" want.raw
}

# fail MESSAGE...: fail the test with MESSAGE.  set -e ignores a `!`
# pipeline, so a check that something did NOT happen is written
#   ! grep -q failed "$out" || fail "qemu-io reported a failure"
fail ()
{
    echo "$0: FAIL: $*" >&2
    exit 1
}

# The EXIT trap: stop a daemon still running, keep the test's status
# unless stopping it failed (a sanitizer report, say), remove $dir.
_ng_cleanup ()
{
    local status=$?

    set +e +x
    if ! stop_nbdgraphd && [ "$status" -eq 0 ]; then
        status=1
    fi
    rm -rf "$dir"
    exit "$status"
}
trap _ng_cleanup EXIT
# Exit on a signal so the trap above runs.
trap 'exit 143' TERM
trap 'exit 130' INT

# The running daemon's minor page faults so far: what a walk over a big,
# untouched mapping costs, counted rather than timed.
nbdgraphd_minor_faults ()
{
    awk '{ print $10 }' "/proc/$nbdgraphd_pid/stat"
}
