# tests/nbdkit.sh: sourced after functions.sh by the nbdkit leaf's tests:
# sets $plugindir, where nbdkit keeps its plugins.  (Sanitizer builds run
# them with NBDGRAPH_NBDKIT_NO_DLCLOSE: see tests/local.mk.)
requires nbdkit --version
plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
