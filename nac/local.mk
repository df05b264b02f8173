# nac/: Node Access Control, a pure library (no libuv, no graph types).
noinst_LIBRARIES += nac/libngnac.a
nac_libngnac_a_SOURCES = \
	nac/nac.h \
	nac/nac.c \
	$(NULL)
