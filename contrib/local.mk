# contrib/: nbdgraphctl, example configs, bench scripts.
EXTRA_DIST += \
	contrib/bench/README.md \
	contrib/bench/compare \
	$(NULL)
