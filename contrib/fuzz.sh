#!/usr/bin/env bash
# contrib/fuzz.sh [SECONDS]: build the libFuzzer harnesses of tests/fuzz/
# with clang (ASan+UBSan, coverage) in build-fuzz/ and run each for
# SECONDS (default $FUZZ_SECONDS, else 60).  Prints one line per harness
# with its execution count; exits 1 on a crash, leak, UBSan report or hang.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-60}}

command -v clang >/dev/null || {
    echo "contrib/fuzz.sh: needs clang (and libclang-rt-dev for libFuzzer)" >&2
    exit 1
}
bash contrib/build.sh build-fuzz --enable-fuzzing CC=clang >/dev/null
make -C build-fuzz -s fuzz FUZZ_SECONDS="$secs"
