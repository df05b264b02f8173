# server/: nbdgraphd main, NBD protocol, control channel, logging.
# Everything but main() is a library, so tests/fuzz/ can drive the real
# NBD and QMP parsers in process.
noinst_LIBRARIES += server/libngserver.a
server_libngserver_a_CFLAGS = $(AM_CFLAGS) $(LIBSYSTEMD_CFLAGS)
server_libngserver_a_SOURCES = \
	server/log.h \
	server/log.c \
	server/nbd.h \
	server/nbd-proto.h \
	server/nbd-int.h \
	server/nbd.c \
	server/nbd-listen.c \
	server/nbd-export.c \
	server/nbd-pool.c \
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
	server/qmp-snapshot.c \
	server/exports.h \
	server/exports.c \
	server/reload.h \
	server/reload.c \
	server/unix-path.h \
	server/unix-path.c \
	server/tls.h \
	server/tls.c \
	server/sd-daemon.h \
	server/sd-daemon.c \
	$(NULL)

sbin_PROGRAMS += nbdgraphd
nbdgraphd_SOURCES = server/main.c
nbdgraphd_LDADD = server/libngserver.a $(CORE_LIBS) $(GNUTLS_LIBS) \
	$(LIBSYSTEMD_LIBS)
# nbdkit plugins loaded in process (graph/drv-nbdkit.c) call nbdkit_*
# functions they find in the executable: export those, and only those.
nbdgraphd_LDFLAGS = \
	$(AM_LDFLAGS) \
	-Wl,--dynamic-list=$(srcdir)/server/nbdgraphd.syms \
	$(NULL)
EXTRA_nbdgraphd_DEPENDENCIES = server/nbdgraphd.syms
EXTRA_DIST += server/nbdgraphd.syms
