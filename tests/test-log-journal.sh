#!/usr/bin/env bash
# tests/test-log-journal.sh: --log=journal speaks the journal's native
# protocol: each message a datagram to /run/systemd/journal/socket with
# MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=nbdgraphd and the CODE_FILE,
# CODE_LINE, CODE_FUNC of the line that logged it.
#
# Where journald runs, the messages are read back with journalctl.
# Elsewhere (containers, CI) the test runs itself in a user and mount
# namespace with a private /run, where a socket of its own stands in for
# journald's; it skips only when neither is possible.  Then, without any
# journal, the lines go to stderr with journald's "<N>" prefix.
set -euo pipefail
srcdir=${srcdir:-$(dirname "$0")}
if [ -z "${NG_JOURNAL_NS-}" ] &&
       ! { [ -S /run/systemd/journal/socket ] &&
           journalctl -n 0 >/dev/null 2>&1; }; then
    if ! unshare -rm true 2>/dev/null; then
        echo "$0: SKIP: no journald and no user namespace to fake one" >&2
        exit 77
    fi
    NG_JOURNAL_NS=1 exec unshare -rm bash -c \
        'mount -t tmpfs tmpfs /run && exec bash "$0"' "$0"
fi
source "$srcdir/functions.sh"
set -x
requires python3 --version

# dump_journal FILE: the daemon's messages, one "KEY=VALUE|KEY=VALUE|..."
# line each, into FILE.
if [ -n "${NG_JOURNAL_NS-}" ]; then
    mkdir -p /run/systemd/journal
    python3 - /run/systemd/journal/socket "$dir/journal" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(65536).decode()
        out.write("|".join(msg.rstrip("\n").split("\n")) + "\n")
        out.flush()
PY
    journal_pid=$!
    for i in $(seq 100); do
        [ -S /run/systemd/journal/socket ] && break; sleep 0.1
    done
    dump_journal () { cp "$dir/journal" "$1"; }
else
    journal_pid=
    since=$(date '+%Y-%m-%d %H:%M:%S')
    dump_journal () {
        journalctl --since "$since" SYSLOG_IDENTIFIER=nbdgraphd -o export |
            python3 -c '
import sys
msg = []
for line in sys.stdin.read().split("\n"):
    if line == "":
        if msg: print("|".join(msg))
        msg = []
    else:
        msg.append(line)' > "$1"
    }
fi

cat > "$dir/c.yaml" <<YAML
server:
  listen: [ "unix:$dir/nbd.sock" ]
nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m }
YAML
"$NBDGRAPHD" --foreground --log=journal --config "$dir/c.yaml" \
    2> "$dir/stderr" &
nbdgraphd_pid=$!
for i in $(seq 300); do
    timeout 5 nbdinfo --size "nbd+unix:///demo?socket=$dir/nbd.sock" \
        >/dev/null 2>&1 && break
    sleep 0.1
done
stop_nbdgraphd
sleep 1                             # journald may take a moment
dump_journal "$dir/got"
cat "$dir/got"
line=$(grep -F "MESSAGE=listening on unix:$dir/nbd.sock" "$dir/got")
grep -q '|PRIORITY=6|' <<<"|$line|"
grep -q '|SYSLOG_IDENTIFIER=nbdgraphd|' <<<"|$line|"
grep -q '|CODE_FILE=[^|]*server/nbd-listen.c|' <<<"|$line|"
grep -q '|CODE_LINE=[0-9][0-9]*|' <<<"|$line|"
grep -q '|CODE_FUNC=ng_nbd_server_listen_tls|' <<<"|$line|"
grep -qF 'MESSAGE=stopped' "$dir/got"
# Nothing went to stderr: the journal took it all.
! grep 'listening on' "$dir/stderr" ||
    fail "a message went to stderr, not to the journal"

# Without a journal to talk to, nothing is lost: stderr with "<N>".
if [ -n "${NG_JOURNAL_NS-}" ]; then
    kill "$journal_pid"
    wait "$journal_pid" || true
    rm /run/systemd/journal/socket
    "$NBDGRAPHD" --foreground --log=journal --config "$dir/c.yaml" \
        2> "$dir/stderr" &
    nbdgraphd_pid=$!
    for i in $(seq 300); do
        grep -q 'listening on' "$dir/stderr" && break; sleep 0.1
    done
    stop_nbdgraphd
    grep -q "^<6>listening on unix:$dir/nbd.sock" "$dir/stderr"
fi
