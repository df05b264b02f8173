/* server/control.h: the control channel — QEMU's QMP wire protocol on a
 * Unix socket (mode 0600).
 *
 * Greeting, then `qmp_capabilities`, then `{"execute": NAME, "arguments":
 * {...}, "id": ANY}` answered by `{"return": ...}` or `{"error": {"class":
 * ..., "desc": ...}}` with the id echoed, and asynchronous `{"event": ...,
 * "data": ..., "timestamp": ...}` to every client past negotiation.
 */
#ifndef NG_CONTROL_H
#define NG_CONTROL_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "graph/error.h"
#include "graph/strmap.h"

struct ng_control;
struct ng_qmp_call;

/* What commands work on; borrowed for the control channel's lifetime. */
struct ng_control_ctx {
    struct ng_graph *graph;
    struct ng_nbd_server *nbd;
    struct ng_nac *nac;                     /* NULL until NAC lands */
    struct ng_control *control;             /* set by ng_control_new */
    unsigned long job_counter;              /* for generated job IDs */
    struct ng_export_entry *exports;        /* server/exports.c, owned */
    struct ng_export_entry *exports_tail;   /* last on `exports` */
    struct ng_strmap export_ids;            /* ID -> entry on `exports` */
    struct ng_export_entry *removing;       /* removed in hard mode, clients
                                             * still draining; owned */
    struct ng_reload *reload;               /* server/reload.c: the live
                                             * model; owned by the daemon */
    unsigned long changes_done;             /* commands not named query-*
                                             * that answered success: the
                                             * only ones that may have
                                             * changed the daemon's state
                                             * (a failed command changes
                                             * nothing) */
};

struct ng_control *ng_control_new(uv_loop_t *loop, struct ng_control_ctx *ctx,
                                  struct ng_error *err);
/* Listen on `path` (mode 0600), replacing only a stale socket file: a
 * live socket or any other file there is an error. */
int ng_control_listen(struct ng_control *ctl, const char *path,
                      struct ng_error *err);
/* After ng_control_listen: let members of `group` use the socket too
 * (owner stays the daemon's user; mode 0660). */
int ng_control_share_with_group(struct ng_control *ctl, const char *group,
                                struct ng_error *err);
/* Send an event to every negotiated client.  Takes ownership of data. */
void ng_control_emit(struct ng_control *ctl, const char *event, json_t *data);
/* Close the listener and every client (removing the socket file), then
 * call cb from the loop. */
void ng_control_shutdown(struct ng_control *ctl, void (*cb)(void *opaque),
                         void *opaque);
void ng_control_free(struct ng_control *ctl);      /* NULL-safe */

/* ---- For command handlers (server/qmp-*.c) ---------------------------- */

/* QMP error classes. */
#define NG_QMP_GENERIC "GenericError"
#define NG_QMP_NOT_FOUND "CommandNotFound"
#define NG_QMP_DEVICE_NOT_FOUND "DeviceNotFound"

/* Answer a call: exactly one of these per call, now or later.  The call is
 * freed by it.  `ret` is stolen (NULL = {}). */
void ng_qmp_return(struct ng_qmp_call *call, json_t *ret);
void ng_qmp_error(struct ng_qmp_call *call, const char *cls,
                  const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with an ng_error's message. */
void ng_qmp_error_from(struct ng_qmp_call *call, const struct ng_error *err);

struct ng_control_ctx *ng_qmp_ctx(struct ng_qmp_call *call);

/* A command: args is the "arguments" object (never NULL, borrowed for the
 * call).  It may answer later (after a drain); the call stays valid until
 * answered even if the client goes away. */
typedef void ng_qmp_handler(struct ng_qmp_call *call, json_t *args);

struct ng_qmp_arg {
    const char *name;
    char type;                  /* 's' string, 'b' bool, 'i' integer,
                                 * 'o' object, 'a' array, '*' anything */
    bool required;
};

struct ng_qmp_command {
    const char *name;
    ng_qmp_handler *handler;
    const struct ng_qmp_arg *args;  /* NULL-name terminated */
    bool extra_args;                /* accept keys not in args
                                     * (blockdev-add's driver options) */
};

/* The command table (server/qmp-commands.c), NULL-name terminated. */
extern const struct ng_qmp_command ng_qmp_commands[];

#endif
