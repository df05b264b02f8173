#!/usr/bin/env bash
# tests/fuzz/run-fuzzers.sh SRCDIR FUZZER...: run each libFuzzer harness
# for $FUZZ_SECONDS (default 60) on its seeds (SRCDIR/corpus/NAME) and the
# corpus it grew before (tests/fuzz/NAME.corpus in the build tree), one
# after the other, with its dictionary (SRCDIR/dict/NAME.dict).  Prints one
# line per harness with its execution count; a crash, leak, UBSan report or
# hang fails it, and its log (tests/fuzz/NAME.log) and input
# (tests/fuzz/NAME-crash-*) are kept.  Exits 1 if any harness failed.
set -uo pipefail
src=$1
shift
secs=${FUZZ_SECONDS:-60}
# Leaks are findings; so is any UBSan report (the build does not recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The harnesses bind sockets in their temporary directories; tmpfs makes
# that (and the file exports' I/O) cheaper than a disk.
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && export TMPDIR=/dev/shm
failed=0

for fuzzer in "$@"; do
    name=$(basename "$fuzzer")
    dir=$(dirname "$fuzzer")
    corpus=$dir/$name.corpus
    log=$dir/$name.log
    mkdir -p "$corpus"
    opts=(-max_total_time="$secs" -timeout=30 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$dir/$name-")
    [ -f "$src/dict/$name.dict" ] && opts+=(-dict="$src/dict/$name.dict")
    "$fuzzer" "${opts[@]}" "$corpus" "$src/corpus/$name" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    if [ $rc -eq 0 ] && [ -n "$runs" ]; then
        echo "$name: $runs executions in $secs s: no crash, leak or UBSan report"
    else
        echo "$name: FAILED (exit $rc); log $log:" >&2
        tail -n 40 "$log" >&2
        failed=1
    fi
done
exit $failed
