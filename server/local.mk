# server/: nbdgraphd main, NBD protocol, control channel, logging.
sbin_PROGRAMS += nbdgraphd
nbdgraphd_SOURCES = \
	server/main.c \
	server/log.h \
	server/log.c \
	server/nbd.h \
	$(NULL)
nbdgraphd_LDADD = $(CORE_LIBS)
