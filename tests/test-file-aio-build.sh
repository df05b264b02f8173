#!/usr/bin/env bash
# tests/test-file-aio-build.sh: --check-config and a real start agree on
# a file node with `aio: io_uring`.  A build with liburing takes it both
# ways; one without (configure --without-liburing, or no liburing-dev)
# refuses it both ways, --check-config included, naming the build option
# — a check that passed and a start that then failed misled users and
# contrib/bench/compare's probe.
source "$srcdir/functions.sh"
set -e -x

truncate -s 1M "$dir/disk.img"
cat > "$dir/uring.yaml" <<EOF
server: { listen: [ "unix:$dir/nbd.sock" ] }
nodes:
  f0: { driver: file, filename: "$dir/disk.img", aio: io_uring }
exports:
  demo: { node: f0 }
EOF

if grep -q '^#define HAVE_LIBURING 1' "${top_builddir:-.}/config.h"; then
    "$NBDGRAPHD" --check-config --config "$dir/uring.yaml"
    start_nbdgraphd --config "$dir/uring.yaml"
    stop_nbdgraphd
    exit 0
fi

expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/uring.yaml" \
    2> "$dir/check.err"
cat "$dir/check.err"
grep -q "aio=io_uring: this nbdgraphd was built without liburing" \
    "$dir/check.err"
grep -q -- "--with-liburing" "$dir/check.err"
expect_status 1 "$NBDGRAPHD" --foreground --config "$dir/uring.yaml" \
    2> "$dir/start.err"
cat "$dir/start.err"
grep -q -- "--with-liburing" "$dir/start.err"
