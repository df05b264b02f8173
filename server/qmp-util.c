/* server/qmp-util.c: see qmp-util.h. */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "server/qmp-util.h"

struct ng_value *
ng_value_from_json(json_t *j)
{
    struct ng_loc nowhere = { 0 };
    struct ng_value *v;
    char num[64];
    const char *key;
    json_t *item;
    size_t i;

    switch (json_typeof(j)) {
    case JSON_OBJECT:
        if ((v = ng_value_new_map(nowhere)) == NULL)
            return NULL;
        json_object_foreach(j, key, item) {
            struct ng_value *c = ng_value_from_json(item);

            if (c == NULL || ng_value_map_put(v, key, nowhere, c) == -1) {
                ng_value_free(v);
                return NULL;
            }
        }
        return v;
    case JSON_ARRAY:
        if ((v = ng_value_new_list(nowhere)) == NULL)
            return NULL;
        json_array_foreach(j, i, item) {
            struct ng_value *c = ng_value_from_json(item);

            if (c == NULL || ng_value_list_append(v, c) == -1) {
                ng_value_free(v);
                return NULL;
            }
        }
        return v;
    case JSON_STRING:
        return ng_value_new_scalar(json_string_value(j), nowhere);
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(j));
        return ng_value_new_scalar(num, nowhere);
    case JSON_REAL:
        snprintf(num, sizeof num, "%.17g", json_real_value(j));
        return ng_value_new_scalar(num, nowhere);
    case JSON_TRUE:
        return ng_value_new_scalar("true", nowhere);
    case JSON_FALSE:
        return ng_value_new_scalar("false", nowhere);
    default:
        return ng_value_new_scalar(NULL, nowhere);
    }
}

bool
ng_qmp_dry_run(json_t *args)
{
    return json_is_true(json_object_get(args, "dry-run"));
}

const char *
ng_qmp_job_id(struct ng_control_ctx *ctx, json_t *args, const char *prefix,
              char *buf, size_t size)
{
    json_t *id = json_object_get(args, "job-id");

    if (json_is_string(id))
        snprintf(buf, size, "%s", json_string_value(id));
    else
        snprintf(buf, size, "%s%lu", prefix, ++ctx->job_counter);
    return buf;
}

void
ng_qmp_graph_event(void *opaque, const char *event,
                   const struct ng_event_field *fields, size_t n)
{
    struct ng_control_ctx *ctx = opaque;
    json_t *data = json_object();
    size_t i;

    if (data == NULL)
        return;
    for (i = 0; i < n; i++)
        json_object_set_new(data, fields[i].key,
                            fields[i].kind == NG_EVENT_STR
                            ? json_string(fields[i].str)
                            : fields[i].kind == NG_EVENT_BOOL
                            ? json_boolean(fields[i].num != 0)
                            : json_integer(fields[i].num));
    ng_control_emit(ctx->control, event, data);
}

void
ng_qmp_graph_changed(struct ng_control_ctx *ctx, const char *change,
                     const char *job, json_t *fields)
{
    json_t *data = json_pack("{s:s,s:s}", "change", change, "job", job);

    if (fields != NULL) {
        json_object_update(data, fields);
        json_decref(fields);
    }
    ng_control_emit(ctx->control, "GRAPH_CHANGED", data);
}
