# tests/nbdkit.sh: sourced after functions.sh by the nbdkit leaf's tests.
# Sets $plugindir (nbdkit's plugins) and, for a sanitizer build, keeps
# plugins mapped after their unload (NBDGRAPH_NBDKIT_NO_DLCLOSE): Debian's
# plugins leave memory their globals point to, which LeakSanitizer would
# blame on the daemon once dlclose() has unmapped those globals; and
# CPython's own leftovers are not ours either (tests/nbdkit-lsan.supp).
requires nbdkit --version
plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
if ldd "$NBDGRAPHD" 2>/dev/null | grep -q libasan; then
    export NBDGRAPH_NBDKIT_NO_DLCLOSE=1
    export LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$srcdir/nbdkit-lsan.supp
fi
