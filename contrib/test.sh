#!/usr/bin/env bash
# contrib/test.sh: build and run the whole test suite twice — plain, then
# built with AddressSanitizer + UndefinedBehaviorSanitizer in build-san/ —
# then each libFuzzer harness for a short while (contrib/fuzz.sh, with
# clang), and end with one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD

bash contrib/build.sh build >/dev/null &&
    bash contrib/build.sh build-san --enable-sanitizers >/dev/null ||
    { echo "0 passed, 1 failed"; exit 1; }

# Counts from automake's test-suite.log of one build directory.
count() {
    local log=$1/test-suite.log key=$2 n
    n=$(sed -n "s/^# $key: *\([0-9]*\)/\1/p" "$log" 2>/dev/null | head -n1)
    echo "${n:-0}"
}

rm -f build/test-suite.log build-san/test-suite.log
rcs=()
for dir in build build-san; do
    echo "== make check in $dir"
    ( cd "$dir" && make -j"$(nproc)" check )
    rcs+=($?)
done

pass=0; fail=0; skip=0; i=0
for dir in build build-san; do
    pass=$((pass + $(count $dir PASS)))
    skip=$((skip + $(count $dir SKIP)))
    f=$(( $(count $dir FAIL) + $(count $dir ERROR) + $(count $dir XPASS) ))
    # make check failing without a failed test (a build error) counts too.
    [ "${rcs[$i]}" -ne 0 ] && [ $f -eq 0 ] && f=1
    fail=$((fail + f)); i=$((i + 1))
done

# The libFuzzer harnesses (tests/fuzz/), each a test: FUZZ_SECONDS (60)
# each in build-fuzz/, where clang is installed.
if command -v clang >/dev/null; then
    echo "== fuzzing in build-fuzz, ${FUZZ_SECONDS:-60} s each"
    out=$(bash contrib/fuzz.sh "${FUZZ_SECONDS:-60}" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    p=$(grep -c ' executions in ' <<<"$out")
    f=$(grep -c ': FAILED' <<<"$out")
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    pass=$((pass + p)); fail=$((fail + f))
else
    echo "== fuzzing skipped: no clang"
    skip=$((skip + 1))
fi
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
