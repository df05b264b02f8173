#!/usr/bin/env bash
# tests/fuzz/test-fuzz-corpus.sh: replay every input in tests/fuzz/corpus/
# through its harness once (tests/fuzz/replay.c, or libFuzzer's own
# replay in a fuzzing build): seeds and kept findings are regression tests.
set -euo pipefail
: "${top_builddir:=.}" "${srcdir:=$(dirname "$0")/..}"
cd "$top_builddir"

for dir in "$srcdir"/fuzz/corpus/*/; do
    name=$(basename "$dir")
    fuzzer=tests/fuzz/$name
    [ -x "$fuzzer" ] || { echo "no harness $fuzzer for $dir" >&2; exit 1; }
    files=("$dir"*)
    [ -e "${files[0]}" ] || { echo "$dir is empty" >&2; exit 1; }
    echo "== $name: ${#files[@]} inputs"
    # A harness waits on its loop: a server that never lets go must fail
    # the test, not hang it.
    timeout --kill-after=10 300 "$fuzzer" "${files[@]}"
done
