#!/usr/bin/env bash
# tests/fuzz/run-fuzzers.sh SRCDIR FUZZER...: run each libFuzzer harness
# for $FUZZ_SECONDS (default 60), or for $FUZZ_RUNS executions when that
# is set (a campaign: no time limit then), on its seeds (SRCDIR/corpus/NAME)
# and the corpus it grew before (tests/fuzz/NAME.corpus in the build tree),
# with its dictionary (SRCDIR/dict/NAME.dict).  Prints
# one line per harness with its execution count and the CPU seconds it
# took (user + system: what the machine's load does not change); a crash,
# leak, UBSan report or hang fails it, and its log (tests/fuzz/NAME.log)
# and input (tests/fuzz/NAME-crash-*) are kept.  Exits 1 if any harness
# failed.  $FUZZ_JOBS harnesses (default: one per CPU) run at a time;
# the lines come out in the order the harnesses were named.
set -uo pipefail
src=$1
shift
secs=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
# Leaks are findings; so is any UBSan report (the build does not recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The harnesses bind sockets in their temporary directories; tmpfs makes
# that (and the file exports' I/O) cheaper than a disk.
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && export TMPDIR=/dev/shm

# run_one FUZZER: run one harness; its line (or failure report) goes to
# its .result file, its exit status says whether it failed.
run_one ()
{
    local fuzzer=$1 name dir corpus log opts cpu rc done_runs user sys real
    local rate

    name=$(basename "$fuzzer")
    dir=$(dirname "$fuzzer")
    corpus=$dir/$name.corpus
    log=$dir/$name.log
    mkdir -p "$corpus"
    opts=(-timeout=30 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$dir/$name-")
    if [ -n "$runs" ]; then
        opts+=(-runs="$runs")
    else
        opts+=(-max_total_time="$secs")
    fi
    [ -f "$src/dict/$name.dict" ] && opts+=(-dict="$src/dict/$name.dict")
    # bash's `time` keyword: the harness's CPU seconds, user and system.
    cpu=$( { TIMEFORMAT='%U %S %R'; time "$fuzzer" "${opts[@]}" "$corpus" \
                 "$src/corpus/$name" >"$log" 2>&1; } 2>&1 )
    rc=$?
    done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
                tail -n1)
    read -r user sys real <<<"$cpu"
    if [ $rc -eq 0 ] && [ -n "$done_runs" ]; then
        rate=$(awk -v n="$done_runs" -v u="$user" -v s="$sys" \
               'BEGIN { printf "%.0f", (u + s > 0) ? n / (u + s) : 0 }')
        echo "$name: $done_runs executions in $real s ($user s user +" \
             "$sys s system: $rate per CPU-second): no crash, leak or" \
             "UBSan report" > "$dir/$name.result"
        return 0
    fi
    { echo "$name: FAILED (exit $rc); log $log:"
      tail -n 40 "$log"; } > "$dir/$name.result"
    return 1
}

jobs=${FUZZ_JOBS:-$(nproc)}
running=0
for fuzzer in "$@"; do
    rm -f "$fuzzer.result"
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    run_one "$fuzzer" &
    running=$((running + 1))
done
wait
failed=0
for fuzzer in "$@"; do
    result=$(dirname "$fuzzer")/$(basename "$fuzzer").result
    if grep -q ' executions in ' "$result" 2>/dev/null; then
        cat "$result"
    else
        cat "$result" >&2 2>/dev/null ||
            echo "$(basename "$fuzzer"): FAILED (no result)" >&2
        failed=1
    fi
done
exit $failed
