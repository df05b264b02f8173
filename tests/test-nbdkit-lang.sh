#!/usr/bin/env bash
# tests/test-nbdkit-lang.sh: the nbdkit leaf with plugins that reach
# further: python (running tests/nbdkit-ram.py in the daemon) and curl
# (against an HTTP server on 127.0.0.1 the test starts).
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -e -x
requires qemu-io --version
requires nbdcopy --version
requires python3 --version
requires test -f "$plugindir/nbdkit-python-plugin.so"
requires test -f "$plugindir/nbdkit-curl-plugin.so"

# The HTTP server: a free port, stopped by its PID when the test ends.
mkdir $dir/www
head -c 3M /dev/urandom > $dir/www/disk.img
python3 "$srcdir/nbdkit-http-server.py" $dir/www $dir/port &
http_pid=$!
trap 'st=$?; kill $http_pid 2>/dev/null; (exit $st); _ng_cleanup' EXIT
for i in $(seq 100); do
    [ -s $dir/port ] && break
    sleep 0.1
done
port=$(cat $dir/port)

start_nbdgraphd "nodes:
  py: { driver: nbdkit, plugin: python,
        args: { script: '$srcdir/nbdkit-ram.py', size: 2097152 } }
  web: { driver: nbdkit, plugin: curl, read-only: true,
         args: { url: 'http://127.0.0.1:$port/disk.img' } }
exports:
  demo: { node: py, writable: true }
  web: { node: web }"

# python: data in and out; its set_error reaches the client as EIO and
# the node stays up.
qemu-io -f raw "$uri" -c 'write -P 0x33 4096 64k' -c 'flush' \
    -c 'read -P 0x33 4096 64k' -c 'read -P 0 0 4096'
qemu-io -f raw "$uri" -c 'read 2093056 4096' > $dir/out 2>&1 || true
cat $dir/out
grep -q 'Input/output error' $dir/out
qemu-io -f raw "$uri" -c 'read -P 0x33 4096 64k'
grep -q "node 'py': read failed (Input/output error): .* RuntimeError: the last 4 KiB are unreadable$" $dir/nbdgraphd.log

# curl: the whole file through the daemon, byte for byte.
nbdcopy "$(uri_for web)" $dir/web.img
cmp $dir/www/disk.img $dir/web.img

stop_nbdgraphd
