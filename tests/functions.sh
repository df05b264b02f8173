# tests/functions.sh: helpers for shell tests (bash).  Start a test with
#   source "$srcdir/functions.sh"
# automake's environment sets srcdir, top_builddir and NBDGRAPHD.

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

# start_nbdgraphd CONFIG_TEXT
# start_nbdgraphd --config FILE
# Run $NBDGRAPHD in the background on a config written into a new temp
# dir ($dir), serving NBD on the Unix socket $sock, with its control
# socket at $ctl.  The text normally holds only nodes: and exports:; a
# server: section is added unless it starts a line of its own.  @SOCK@,
# @CONTROL@ and @DIR@ are replaced by the paths.  Returns once both
# sockets exist (at most 30 s); a trap stops the daemon when the test
# exits and fails the test if the daemon did not exit 0.
start_nbdgraphd ()
{
    local text i xtrace=

    # Its wait loop would drown a `set -x` log; show the config instead.
    case $- in *x*) xtrace=1; { set +x; } 2>/dev/null ;; esac
    if [ "$1" = --config ]; then
        text=$(cat "$2") || exit 1
    else
        text=$1
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/ngtest.XXXXXX") || exit 1
    sock=$dir/nbd.sock
    ctl=$dir/control.sock
    trap _nbdgraphd_stop EXIT
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
    "${NBDGRAPHD:-nbdgraphd}" --foreground --exit-with-parent \
        --config "$dir/config.yaml" > "$dir/nbdgraphd.log" 2>&1 &
    nbdgraphd_pid=$!
    for i in $(seq 300); do
        if [ -S "$sock" ] && [ -S "$ctl" ]; then
            [ -n "$xtrace" ] && set -x
            return 0
        fi
        if ! kill -0 "$nbdgraphd_pid" 2>/dev/null; then
            echo "$0: nbdgraphd exited during startup:" >&2
            cat "$dir/nbdgraphd.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$0: nbdgraphd made no $sock and $ctl within 30 s" >&2
    exit 1
}

# The EXIT trap: SIGTERM, wait (bounded: a daemon that ignores SIGTERM
# must not hang the suite), keep the test's status unless the daemon
# failed (a sanitizer report, say), then remove the temp dir.
_nbdgraphd_stop ()
{
    local status=$? rc=0 i

    set +e +x
    if [ -n "$nbdgraphd_pid" ]; then
        kill -TERM "$nbdgraphd_pid" 2>/dev/null
        for i in $(seq 300); do
            kill -0 "$nbdgraphd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$nbdgraphd_pid" 2>/dev/null &&
            echo "$0: nbdgraphd ignored SIGTERM for 30 s" >&2
        wait "$nbdgraphd_pid"
        rc=$?
    fi
    if [ $rc -ne 0 ]; then
        echo "$0: nbdgraphd exited with status $rc; its log:" >&2
        cat "$dir/nbdgraphd.log" >&2
        [ $status -eq 0 ] && status=1
    fi
    [ -n "$dir" ] && rm -rf "$dir"
    exit $status
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
