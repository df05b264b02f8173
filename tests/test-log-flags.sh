#!/usr/bin/env bash
# tests/test-log-flags.sh: the log filter names every request flag it
# sees: a mirror's bulk copy through a log node shows as
# flags=background.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
log=$dir/dst.log
start_nbdgraphd "nodes:
  src: { driver: memory, size: 4M }
  dst: { driver: memory, size: 4M }
  lg: { driver: log, file: dst, logfile: $log }
exports:
  vm0: { node: src, writable: true }" vm0

qemu-io -f raw "nbd+unix:///vm0?socket=$sock" -c 'write -P 0x5a 0 4M' \
    > /dev/null
nbdgraphctl mirror src lg --job-id m0
nbdgraphctl wait m0 | grep -q "job 'm0' ready"
cat $log
grep -Eq ' write offset=[^ ]+ length=[^ ]+ flags=background' $log ||
    fail "the mirror's writes are not logged as background"
nbdgraphctl job cancel m0
