/* server/qmp-util.h: helpers shared by the QMP command files. */
#ifndef NG_QMP_UTIL_H
#define NG_QMP_UTIL_H

#include <stdbool.h>

#include <jansson.h>

#include "graph/graph.h"
#include "graph/value.h"
#include "server/control.h"

/* JSON -> located value tree (no file location).  Caller frees. */
struct ng_value *ng_value_from_json(json_t *j);

/* The "dry-run" argument, false when absent. */
bool ng_qmp_dry_run(json_t *args);

/* A NAC/job ID for an immediate command: the "job-id" argument when
 * given, else "<prefix><counter>".  Writes into buf. */
const char *ng_qmp_job_id(struct ng_control_ctx *ctx, json_t *args,
                          const char *prefix, char *buf, size_t size);

/* Emit GRAPH_CHANGED {"change": change, "job": job, key: value, ...}.
 * `fields` is stolen and may be NULL. */
void ng_qmp_graph_changed(struct ng_control_ctx *ctx, const char *change,
                          const char *job, json_t *fields);

/* The graph's event hook (ng_graph_event_fn): a driver's event, its
 * fields as the QMP event's data, to every control client.  `opaque` is
 * the struct ng_control_ctx. */
void ng_qmp_graph_event(void *opaque, const char *event,
                        const struct ng_event_field *fields, size_t n);

#endif
