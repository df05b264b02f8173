# server/: nbdgraphd main, NBD protocol, control channel, logging.
sbin_PROGRAMS += nbdgraphd
nbdgraphd_SOURCES = \
	server/main.c \
	server/log.h \
	server/log.c \
	server/nbd.h \
	server/nbd-proto.h \
	server/nbd-int.h \
	server/nbd.c \
	server/nbd-conn.c \
	server/nbd-handshake.c \
	server/control.h \
	server/control.c \
	server/qmp-framer.h \
	server/qmp-framer.c \
	server/qmp-util.h \
	server/qmp-util.c \
	server/qmp-graph.h \
	server/qmp-graph.c \
	server/qmp-commands.c \
	server/qmp-export.c \
	server/qmp-job.c \
	server/exports.h \
	server/exports.c \
	server/reload.h \
	server/reload.c \
	server/unix-path.h \
	server/unix-path.c \
	$(NULL)
nbdgraphd_LDADD = $(CORE_LIBS)
