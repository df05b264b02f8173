#!/usr/bin/env bash
# tests/test-check-config-live.sh: --check-config on the config a running
# daemon serves: its image is opened read-only and unlocked, so the
# daemon's image locks do not fail the check, and a log filter's file is
# neither truncated nor written.  A second start on the same config is
# what finds the file in use.
set -euo pipefail
source "${srcdir:-$(dirname "$0")}/functions.sh"

truncate -s 1M "$dir/disk.raw"
start_nbdgraphd '
nodes:
  disk: { driver: file, filename: "@DIR@/disk.raw" }
  logged: { driver: log, file: disk, logfile: "@DIR@/requests.log" }
exports:
  demo: { node: logged, writable: true }
'
before=$(cat "$dir/requests.log")
[ -n "$before" ] || { echo "FAIL: the log filter wrote nothing"; exit 1; }

if ! out=$("$NBDGRAPHD" --check-config --config "$dir/config.yaml" 2>&1)
then
    printf 'FAIL: --check-config refused a running daemon'"'"'s config:\n%s\n' \
        "$out"
    exit 1
fi
grep -q 'configuration is valid' <<<"$out" ||
    { echo "FAIL: unexpected output: $out"; exit 1; }
[ "$(cat "$dir/requests.log")" = "$before" ] ||
    { echo "FAIL: --check-config changed the log filter's file"; exit 1; }

# The image is still the daemon's: a real second start is refused.
sed "s|$dir/nbd.sock|$dir/other.sock|; s|$dir/control.sock|$dir/other.ctl|" \
    "$dir/config.yaml" > "$dir/second.yaml"
if out=$(timeout 60 "$NBDGRAPHD" --foreground --config "$dir/second.yaml" \
             2>&1); then
    echo "FAIL: a second daemon started on a locked image"; exit 1
fi
grep -q "is another process using it" <<<"$out" ||
    { echo "FAIL: unclear error from the second start: $out"; exit 1; }

# A log file that could not be written is still found.
sed "s|$dir/requests.log|$dir/none/requests.log|" "$dir/config.yaml" \
    > "$dir/badlog.yaml"
if out=$("$NBDGRAPHD" --check-config --config "$dir/badlog.yaml" 2>&1); then
    echo "FAIL: a log file in a missing directory accepted"; exit 1
fi
grep -q "cannot open log file '$dir/none/requests.log'" <<<"$out" ||
    { echo "FAIL: unclear error for the log file: $out"; exit 1; }

stop_nbdgraphd
