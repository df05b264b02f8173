#!/usr/bin/env bash
# tests/test-start.sh: starting nbdgraphd as a service user would.
#
# A second start on a running daemon's config fails with a clear error
# and leaves the first daemon's sockets alone (its control channel still
# answers); a regular file where a socket goes is refused and kept; a
# stale socket from a killed daemon is replaced.  Without --foreground
# the daemon detaches: `out=$(nbdgraphd ...)` returns with the URIs,
# stdio points at /dev/null, and relative socket and file paths work —
# the nodes' files are used and the sockets are removed at shutdown.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version

err=$dir/err

# ---- A second start changes nothing --------------------------------------

start_nbdgraphd "nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m, writable: true }"
cfg=$dir/config.yaml
control_works () { nbdgraphctl nodes | grep -Eq '^m +memory '; }
control_works

# The same config again: refused before any socket is touched.
expect_status 1 timeout 60 "$NBDGRAPHD" --foreground --config "$cfg" 2> $err
cat $err
grep -qx "nbdgraphd: $cfg:2:13: socket '$sock' is in use by another server" \
    $err
control_works
nbdinfo --size "$uri"

# The same without --foreground: the parent reports the child's failure.
expect_status 1 timeout 60 "$NBDGRAPHD" --config "$cfg" 2> $err
grep -q "is in use by another server" $err
control_works

# A free NBD path but the running daemon's control socket: the control
# socket is checked before any NBD socket is made.
sed "s|unix:$sock|unix:$dir/b.sock|" "$cfg" > $dir/b.yaml
expect_status 1 timeout 60 "$NBDGRAPHD" --foreground --config $dir/b.yaml \
    2> $err
cat $err
grep -qx "nbdgraphd: $dir/b.yaml:3:12: socket '$ctl' is in use by another server" \
    $err
test ! -e $dir/b.sock
control_works

# A regular file at the control path is an error, not deleted.
echo "keep me" > $dir/regular
sed "s|unix:$sock|unix:$dir/c.sock|; s|$ctl|$dir/regular|" "$cfg" > $dir/c.yaml
expect_status 1 timeout 60 "$NBDGRAPHD" --foreground --config $dir/c.yaml \
    2> $err
cat $err
grep -qx "nbdgraphd: $dir/c.yaml:3:12: '$dir/regular' exists and is not a socket" \
    $err
test "$(cat $dir/regular)" = "keep me"
test ! -e $dir/c.sock

# A killed daemon leaves stale sockets; the next start replaces them.
kill -KILL "$nbdgraphd_pid"
wait "$nbdgraphd_pid" || true
nbdgraphd_pid=
test -S "$sock"
test -S "$ctl"
start_nbdgraphd --config "$cfg"
control_works
stop_nbdgraphd
test ! -e "$ctl"

# ---- Without --foreground -------------------------------------------------

run=$dir/run
mkdir $run
truncate -s 1M $run/disk.raw
cat > $run/detached.yaml <<'END'
server:
  listen: [ "unix:nbd.sock" ]
  control: ctl.sock
nodes:
  disk: { driver: file, filename: disk.raw }
exports:
  disk: { node: disk, writable: true }
END
# Whatever happens, no detached daemon outlives the test.
trap 'st=$?; for p in $(pgrep -f -- "--config $run/detached.yaml"); do
          kill -KILL $p; done; (exit $st); _ng_cleanup' EXIT

# Relative to the directory it starts in.  Its stdout is read as
# out=$(nbdgraphd ...) reads it: to the end, which comes once no process
# holds it — the daemon used to hold it for ever, hence the bound.
cd $run
mkfifo $dir/stdout
"$NBDGRAPHD" --config "$run/detached.yaml" > $dir/stdout 2> $err &
starter=$!
if ! out=$(timeout 60 cat $dir/stdout); then
    echo "FAIL: the daemon still holds its stdout after 60 s"; exit 1
fi
wait $starter || { cat $err; exit 1; }
cd /
detached=$(pgrep -f -- "--config $run/detached.yaml")
test -n "$detached"
test "$out" = "nbd+unix:///disk?socket=$run/nbd.sock"
for fd in 0 1 2; do
    test "$(readlink /proc/$detached/fd/$fd)" = /dev/null
done
test "$(readlink /proc/$detached/cwd)" = /

# The relative file node is the file in $run, the control socket works.
qemu-io -f raw -c 'write -P 0x5a 0 64k' "$out"
ctl=$run/ctl.sock
nbdgraphctl nodes | grep -Eq '^disk +file +1 MiB '

# SIGTERM: it stops and removes its sockets though it now lives in /.
# Not our child: it is gone once it is a zombie, whoever reaps it.
running () { case $(ps -o stat= -p "$1") in ''|Z*) return 1 ;; esac; }
kill -TERM "$detached"
for i in $(seq 300); do
    running "$detached" || break
    sleep 0.1
done
if running "$detached"; then
    echo "FAIL: the detached daemon ignored SIGTERM"; exit 1
fi
test ! -e $run/nbd.sock
test ! -e $run/ctl.sock
qemu-io -f raw -c 'read -P 0x5a 0 64k' $run/disk.raw      # exits 1 on a mismatch
