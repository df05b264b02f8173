# contrib/: nbdgraphctl, example configs, bench scripts.
EXTRA_DIST += \
	contrib/bench/compare \
	$(NULL)
