#!/usr/bin/env bash
# tests/test-service.sh: nbdgraphd as a systemd service runs it.
#
# Under systemd-socket-activate (LISTEN_FDS/LISTEN_PID, as a .socket
# unit passes them) the daemon serves on the socket it is handed, not on
# the config's listen address, and leaves that socket's file alone; it
# sends READY=1 to $NOTIFY_SOCKET once serving and STOPPING=1 when
# SIGTERM arrives; --pidfile holds its pid while it runs and is removed
# at exit.  (--log=journal: tests/test-log-journal.sh.)
source "$srcdir/functions.sh"
set -e -x
requires systemd-socket-activate --version
requires nbdinfo --version
requires python3 --version

# A datagram socket standing in for systemd's notify socket: each
# message on a line of $dir/notify.log, until STOPPING=1.
python3 - "$dir/notify.sock" "$dir/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a") as log:
    while True:
        msg = s.recv(4096).decode()
        log.write(msg + "\n")
        log.flush()
        if "STOPPING=1" in msg:
            break
PY
listener=$!
for i in $(seq 100); do [ -S "$dir/notify.sock" ] && break; sleep 0.1; done

cat > "$dir/c.yaml" <<YAML
server:
  listen: [ "unix:$dir/unused.sock" ]
nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m, writable: true }
YAML

# systemd-socket-activate binds act.sock and execs nbdgraphd (same pid)
# at the first connection, with the listening socket as fd 3.
# It passes on only the environment it is told to (-E).
systemd-socket-activate -E NOTIFY_SOCKET="$dir/notify.sock" -l "$dir/act.sock" \
    "$NBDGRAPHD" --foreground --log=stderr --pidfile "$dir/nbdgraphd.pid" \
    --config "$dir/c.yaml" 2> "$dir/nbdgraphd.log" &
nbdgraphd_pid=$!
for i in $(seq 100); do [ -S "$dir/act.sock" ] && break; sleep 0.1; done
uri="nbd+unix:///demo?socket=$dir/act.sock"
size=$(timeout 60 nbdinfo --size "$uri")
[ "$size" = 1048576 ]
for i in $(seq 300); do grep -q READY=1 "$dir/notify.log" && break; sleep 0.1; done
grep -qx READY=1 "$dir/notify.log"
[ "$(cat "$dir/nbdgraphd.pid")" = "$nbdgraphd_pid" ]
[ ! -e "$dir/unused.sock" ]             # the config's address: not bound
timeout 60 nbdinfo --size "$uri"        # the activated socket keeps serving
grep -q '^nbdgraphd: info: socket activation: 1 socket' "$dir/nbdgraphd.log"

pid=$nbdgraphd_pid
nbdgraphd_pid=
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
cat "$dir/nbdgraphd.log"
[ "$rc" = 0 ]
wait "$listener"
grep -qx STOPPING=1 "$dir/notify.log"
[ ! -e "$dir/nbdgraphd.pid" ]
[ -S "$dir/act.sock" ]                  # not ours: left for systemd

# Bad --log values are refused up front.
expect_status 1 "$NBDGRAPHD" --foreground --log=console \
    --config "$dir/c.yaml" 2> "$dir/err"
grep -q "expected stderr, syslog or journal" "$dir/err"
