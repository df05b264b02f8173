# tests/interop/functions.sh: helpers for the interop shell tests (bash).
# Start a test with
#   source "$srcdir/interop/functions.sh"
# automake's environment sets srcdir, top_builddir and NBDGRAPHD.
#
# Sourcing it bounds the whole test in time, makes a private temp dir
# $dir (removed on exit) and installs an EXIT trap that stops a daemon
# left running.  Then:
#   requires CMD [ARG]...        skip (exit 77) unless CMD runs
#   start_nbdgraphd TEXT [EXPORT]
#                                start the daemon; sets $sock $ctl $uri
#   uri_for EXPORT               the nbd+unix URI of another export
#   stop_nbdgraphd               SIGTERM; fails unless exit 0, socket gone
#
# tests/functions.sh (the control tests') starts one daemon per test and
# waits for the socket files; these tests also need files in $dir before
# the daemon starts (file nodes), a stop in mid-test to look at the file
# the daemon flushed, a second daemon after that, and readiness judged
# by an NBD handshake.  Worth merging the two once both settle.

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

# uri_for EXPORT: the URI of EXPORT on the running daemon.
uri_for ()
{
    printf 'nbd+unix:///%s?socket=%s\n' "$1" "$sock"
}

# start_nbdgraphd CONFIG_TEXT [EXPORT]
# Write CONFIG_TEXT to $dir/config.yaml with @SOCK@, @CONTROL@ and @DIR@
# replaced, and run $NBDGRAPHD on it in the background.  A text without
# a server: section gets one listening on $sock (with a control socket
# $ctl).  Returns once `nbdinfo --size` answers on EXPORT (default
# "demo"), whose URI is then in $uri.  Only one daemon at a time.
start_nbdgraphd ()
{
    local text=$1 export=${2:-demo} i xtrace=

    # Its wait loop would drown a `set -x` log; the config is shown instead.
    case $- in *x*) xtrace=1; { set +x; } 2>/dev/null ;; esac
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
    text=${text//@SOCK@/$sock}
    text=${text//@CONTROL@/$ctl}
    text=${text//@DIR@/$dir}
    printf '%s\n' "$text" > "$dir/config.yaml"
    echo "start_nbdgraphd: $dir/config.yaml:" >&2
    cat "$dir/config.yaml" >&2
    "$NBDGRAPHD" --foreground --exit-with-parent \
        --config "$dir/config.yaml" >> "$dir/nbdgraphd.log" 2>&1 &
    nbdgraphd_pid=$!
    uri=$(uri_for "$export")
    # 300 rounds of at least 0.1 s: 30 s, enough for an ASan build.
    for i in $(seq 300); do
        if timeout 5 nbdinfo --size "$uri" >/dev/null 2>&1; then
            [ -n "$xtrace" ] && set -x
            return 0
        fi
        if ! kill -0 "$nbdgraphd_pid" 2>/dev/null; then
            wait "$nbdgraphd_pid"
            echo "$0: nbdgraphd exited ($?) during startup; its log:" >&2
            cat "$dir/nbdgraphd.log" >&2
            nbdgraphd_pid=
            exit 1
        fi
        sleep 0.1
    done
    echo "$0: nbdgraphd did not answer on $uri within 30 s" >&2
    exit 1
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
