/* server/nbd.h: the NBD server — listeners, connections, exports.
 *
 * All on the graph's loop thread.  An export wraps one BlockBackend,
 * which the export owns.  Names match exactly: a client that names no
 * export ("", the protocol's default export) gets the export named ""
 * if there is one, else an error.
 */
#ifndef NG_NBD_H
#define NG_NBD_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "graph/error.h"
#include "config/config.h"
#include "graph/graph.h"
#include "server/tls.h"

struct ng_nbd_server;

struct ng_nbd_server *ng_nbd_server_new(uv_loop_t *loop,
                                        struct ng_graph *graph,
                                        struct ng_error *err);

/* Largest READ or WRITE payload served and advertised (server.max-request
 * in the config, whose range NG_MAX_REQUEST_MIN .. _MAX it takes).
 * Takes effect for requests parsed from now on. */
#define NG_NBD_MAX_REQUEST_DEFAULT  (UINT32_C(64) << 20)
int ng_nbd_server_set_max_request(struct ng_nbd_server *srv, uint64_t bytes,
                                  struct ng_error *err);

/* At most `n` client connections at a time (0 = no limit, the default):
 * a client past it is closed at once, with a log line. */
void ng_nbd_server_set_max_connections(struct ng_nbd_server *srv,
                                       unsigned n);
/* Close a client in transmission that has nothing in flight and sent
 * nothing for `seconds` (0 = never, the default). */
void ng_nbd_server_set_idle_timeout(struct ng_nbd_server *srv,
                                    unsigned seconds);
/* After a client's bytes arrive, keep the loop from sleeping for `ns`
 * nanoseconds (0 = never, the server's default; the config's is
 * NG_CONFIG_POLL_MAX_NS_DEFAULT): QEMU's iothread polling.  A client
 * that sends its next request within that time finds the loop awake,
 * so neither side pays for a wakeup. */
void ng_nbd_server_set_poll_max_ns(struct ng_nbd_server *srv, uint32_t ns);

/* Listen on "unix:PATH" or "tcp:HOST:PORT" ("tcp:[::1]:PORT" for IPv6).
 * A stale Unix socket file is replaced; the file is removed again when
 * the server shuts down.  "fd:N" takes a bound stream socket we were
 * handed (socket activation); its file, if any, is left alone. */
int ng_nbd_server_listen(struct ng_nbd_server *srv, const char *addr,
                         struct ng_error *err);
/* The same with TLS (mode not NG_TLS_OFF needs creds, which must outlive
 * the server: graph objects do). */
int ng_nbd_server_listen_tls(struct ng_nbd_server *srv, const char *addr,
                             enum ng_tls_mode mode,
                             const struct ng_tls_creds *creds,
                             struct ng_error *err);

/* Reload: stop listening on `addr` (as given to ng_nbd_server_listen);
 * clients it accepted keep their connections, as a removed listener is
 * only the door.  ENOENT when nothing listens there. */
int ng_nbd_server_unlisten(struct ng_nbd_server *srv, const char *addr,
                           struct ng_error *err);
/* Reload: new TLS settings for the listener on `addr`; only clients
 * accepted from now on get them.  ENOENT when nothing listens there. */
int ng_nbd_server_listen_set_tls(struct ng_nbd_server *srv, const char *addr,
                                 enum ng_tls_mode mode,
                                 const struct ng_tls_creds *creds,
                                 struct ng_error *err);
/* Reload: listeners that use credentials `old` use `new` from now on
 * (clients already accepted keep `old`, which must stay allocated). */
void ng_nbd_server_swap_creds(struct ng_nbd_server *srv,
                              const struct ng_tls_creds *old,
                              const struct ng_tls_creds *new);

/* Add an export on `node`: creates the export's BB.  Fails if the name is
 * taken or a writable export is asked of a read-only node.  max_conns:
 * clients in transmission on it at a time (0 = no limit); one more gets
 * NBD_REP_ERR_POLICY for GO, a dropped connection for EXPORT_NAME. */
int ng_nbd_server_add_export(struct ng_nbd_server *srv, const char *name,
                             const char *description, struct ng_node *node,
                             bool writable, unsigned max_conns,
                             struct ng_error *err);

/* From now on only clients matching rules[0..n) (copied) see export
 * `name` (an empty list: none).  Without a call, everyone does. */
int ng_nbd_server_set_export_allow(struct ng_nbd_server *srv,
                                   const char *name,
                                   const struct ng_allow_rule *rules,
                                   size_t n, struct ng_error *err);
/* Set export `name`'s max-connections (0 = no limit) live: clients
 * connected now stay, the new cap applies to the next ones. */
int ng_nbd_server_set_export_max_connections(struct ng_nbd_server *srv,
                                             const char *name, unsigned n,
                                             struct ng_error *err);

/* Dirty bitmaps one export may offer. */
#define NG_NBD_MAX_EXPORT_BITMAPS 8

/* From now on export `name` offers the dirty bitmaps names[0..n) of
 * node `node` as metadata contexts qemu:dirty-bitmap:NAME.  Each must
 * exist and not be busy; they are busy (the user cannot remove or
 * change them) until the export is gone.  n <= NG_NBD_MAX_EXPORT_BITMAPS. */
int ng_nbd_server_set_export_bitmaps(struct ng_nbd_server *srv,
                                     const char *name, const char *node,
                                     const char *const *names, size_t n,
                                     struct ng_error *err);

/* A mirror or active commit is about to move the users of node `from`
 * to node `to` (same size): could every export's bitmaps on `from` go
 * with them?  -1 with *err naming the export and the bitmap. */
int ng_nbd_server_check_follow_bitmaps(struct ng_nbd_server *srv,
                                       const char *from, const char *to,
                                       struct ng_error *err);
/* The pivot moved them (inside its drained section): the exports'
 * bitmaps on `from` move to `to`, bits and all, and record there, so
 * their qemu:dirty-bitmap contexts go on answering (QEMU moves no
 * bitmaps; but its exports' contexts do not outlive a pivot either).
 * A bitmap that cannot move (a clash made since the check) stays on
 * `from`, and a warning says so. */
void ng_nbd_server_follow_bitmaps(struct ng_nbd_server *srv,
                                  const char *from, const char *to);

/* Whether export `name` offers qemu:allocation-depth. */
int ng_nbd_server_set_export_allocation_depth(struct ng_nbd_server *srv,
                                              const char *name, bool on,
                                              struct ng_error *err);

/* Remove an export.  hard = false refuses while clients are connected;
 * hard = true disconnects them once their requests in flight finish. */
int ng_nbd_server_del_export(struct ng_nbd_server *srv, const char *name,
                             bool hard, struct ng_error *err);

/* cb runs when an export removed in hard mode while clients were still
 * connected is finally gone (its BB freed), with its name. */
void ng_nbd_server_on_export_gone(struct ng_nbd_server *srv,
                                  void (*cb)(void *opaque, const char *name),
                                  void *opaque);

/* Stop accepting (listeners close, Unix socket files are removed), let
 * requests in flight finish and be answered while later ones get
 * NBD_ESHUTDOWN, close each connection once it is done (after
 * NBD_SHUTDOWN_GRACE_MS at most), then call cb on the loop. */
void ng_nbd_server_shutdown(struct ng_nbd_server *srv,
                            void (*cb)(void *opaque), void *opaque);

/* After shutdown has called back (a server that was never shut down
 * still has a libuv handle on the loop).  NULL-safe. */
void ng_nbd_server_free(struct ng_nbd_server *srv);

/* ---- Looking at exports (query-block-exports and the like) ------------- */

struct ng_nbd_export;

/* Exports in config order: prev NULL gives the first, NULL follows the
 * last.  Borrowed; valid until the export is removed. */
const struct ng_nbd_export *
ng_nbd_server_next_export(const struct ng_nbd_server *srv,
                          const struct ng_nbd_export *prev);
/* By exact name; NULL if there is none. */
const struct ng_nbd_export *
ng_nbd_server_find_export(const struct ng_nbd_server *srv, const char *name);

const char *ng_nbd_export_name(const struct ng_nbd_export *exp);
const char *ng_nbd_export_description(const struct ng_nbd_export *exp);
bool ng_nbd_export_writable(const struct ng_nbd_export *exp);
struct ng_bb *ng_nbd_export_bb(const struct ng_nbd_export *exp);
/* Clients connected to the export (past the handshake). */
unsigned ng_nbd_export_connections(const struct ng_nbd_export *exp);
/* Connections the server still holds, in handshake or not, until each is
 * freed (its handle closed and every request back from the graph). */
unsigned ng_nbd_server_connections(const struct ng_nbd_server *srv);

#endif
