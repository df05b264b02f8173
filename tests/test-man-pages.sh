#!/usr/bin/env bash
# tests/test-man-pages.sh: the man pages render without a warning,
# nbdgraphd.8 names every option of `nbdgraphd --help`, and every example
# config of nbdgraph.yaml.5 works as printed: --check-config accepts it
# (nodes opened, exports claimed) and a daemon started on it serves its
# exports.  Paths are moved into the test's temp dir: /var/tmp/X and
# /tmp/X become $dir/X, the sockets the test's own; a file a `filename:`
# names is made first (the page says to make it).
source "$srcdir/functions.sh"
set -euo pipefail
requires groff --version

pages=("$top_srcdir"/contrib/nbdgraphctl.1 "$top_srcdir"/contrib/nbdgraphd.8
       "$top_srcdir"/contrib/nbdgraph.yaml.5)

# Rendering: groff's warnings (-ww), man's, mandoc's lint where present.
for page in "${pages[@]}"; do
    out=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
    [ -z "$out" ] || { echo "$page: groff warns:"; echo "$out"; exit 1; }
    if command -v man >/dev/null; then
        out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
        [ -z "$out" ] || { echo "$page: man warns:"; echo "$out"; exit 1; }
    fi
    if command -v mandoc >/dev/null; then
        mandoc -T lint -W warning "$page"
    fi
done

# The page as printed, near enough: roff escapes of our pages undone.
unroff () { sed -e 's/\\-/-/g; s/\\f[BIRP]//g; s/\\e/\\/g; s/\\&//g' \
                -e "s/\\\\(aq/'/g; s/\\\\(dq/\"/g" "$1"; }

# Every option of --help is in nbdgraphd.8.
text=$(unroff "$top_srcdir/contrib/nbdgraphd.8")
for opt in $("$NBDGRAPHD" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    grep -qe "$opt" <<<"$text" || { echo "nbdgraphd.8 lacks $opt"; exit 1; }
done

# Each .EX block of nbdgraph.yaml.5 that is a config (it has nodes: or
# server: at the start of a line and no placeholders) into $dir/exN.yaml.
unroff "$top_srcdir/contrib/nbdgraph.yaml.5" |
    awk -v dir="$dir" '
        /^\.EX$/ { inex = 1; n++; body = ""; next }
        /^\.EE$/ { inex = 0
                   if (body ~ /(^|\n)(nodes|server):/ && body !~ /[A-Z]+-NAME/)
                       printf "%s", body > (dir "/ex" n ".yaml")
                   next }
        inex     { body = body $0 "\n" }'
examples=("$dir"/ex*.yaml)
[ ${#examples[@]} -ge 4 ] || { echo "only ${#examples[@]} examples"; exit 1; }

for ex in "${examples[@]}"; do
    sed -i -e 's|unix:/tmp/nbdgraph.sock|unix:@SOCK@|' \
           -e 's|/tmp/nbdgraph-control.sock|@CONTROL@|' \
           -e 's|tcp:127.0.0.1:10809|unix:@DIR@/tcp.sock|' \
           -e 's|/var/tmp/|@DIR@/|g; s|/tmp/|@DIR@/|g' "$ex"
    grep -q '^server:' "$ex" ||
        sed -i '1i server:\n  listen: [ "unix:@SOCK@" ]' "$ex"
    for f in $(sed -n 's/.*filename: *\([^ },]*\).*/\1/p' "$ex"); do
        truncate -s 1G "${f//@DIR@/$dir}"
    done
    sed -e "s|@SOCK@|$dir/nbd.sock|; s|@CONTROL@|$dir/control.sock|" \
        -e "s|@DIR@|$dir|g" "$ex" > "$ex.checked"
    "$NBDGRAPHD" --check-config --config "$ex.checked" ||
        { echo "example $ex refused:"; cat "$ex.checked"; exit 1; }
    # Serve it: the first export answers, and the list has them all.
    first=$(awk '/^exports:/ { e = 1; next } e && /^  [^ ]/ {
                     sub(/^  /, ""); sub(/:.*/, ""); print; exit }' "$ex")
    [ -n "$first" ] || continue
    start_nbdgraphd --config "$ex" "$first"
    want=$(awk '/^exports:/ { e = 1; next } e && /^  [^ ]/ { n++ }
                END { print n }' "$ex")
    got=$(nbdinfo --list --json "nbd+unix:///?socket=$sock" |
              jq '.exports | length')
    [ "$got" = "$want" ] || { echo "$ex: $got exports, expected $want"; exit 1; }
    stop_nbdgraphd
done
echo "${#examples[@]} examples work"
