/* tests/test-qmp.c: the QMP control channel's wire protocol.
 *
 * Greeting and negotiation; id echo; malformed JSON, unknown commands,
 * wrong and missing argument types each get an error and the connection
 * stays usable; framing (strings holding brackets, broken messages that
 * end early, several messages in one write); several clients at once, each seeing GRAPH_CHANGED
 * events with timestamps; the socket is owner-only. */
#include <config.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

static void
expect_error(json_t *reply, const char *cls, const char *want)
{
    json_t *e = json_object_get(reply, "error");
    const char *c = json_string_value(json_object_get(e, "class"));
    const char *desc = json_string_value(json_object_get(e, "desc"));

    if (c == NULL || strcmp(c, cls) != 0 || desc == NULL ||
        strstr(desc, want) == NULL)
        ng_test_fail("expected %s error with '%s', got %s", cls, want,
                     json_dumps(reply, JSON_COMPACT));
    json_decref(reply);
}

static void
expect_return(json_t *reply, json_t *id)
{
    if (json_object_get(reply, "return") == NULL ||
        (id != NULL && !json_equal(json_object_get(reply, "id"), id)))
        ng_test_fail("expected a return with id %s, got %s",
                     id ? json_dumps(id, JSON_ENCODE_ANY) : "-",
                     json_dumps(reply, JSON_COMPACT));
    json_decref(reply);
    json_decref(id);
}

static void
negotiation(const char *path)
{
    json_t *greeting, *caps;
    struct ng_test_qmp *q = ng_test_qmp_connect_raw(path, &greeting);

    caps = json_object_get(json_object_get(greeting, "QMP"), "capabilities");
    if (!json_is_array(caps) ||
        !json_is_object(json_object_get(json_object_get(greeting, "QMP"),
                                        "version")))
        ng_test_fail("greeting lacks version or capabilities");
    json_decref(greeting);
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"query-version\"}\n"),
                 "CommandNotFound", "qmp_capabilities");
    expect_return(ng_test_qmp_raw(q, "{\"execute\":\"qmp_capabilities\","
                                     "\"id\":\"neg\"}\n"),
                  json_string("neg"));
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"qmp_capabilities\"}\n"),
                 "CommandNotFound", "already complete");
    ng_test_qmp_close(q);
}

static void
bad_input(struct ng_test_qmp *q)
{
    expect_error(ng_test_qmp_raw(q, "{\"execute\": oops}\n"),
                 "GenericError", "JSON parse error");
    expect_error(ng_test_qmp_raw(q, "[1, 2]\n"), "GenericError",
                 "must be a JSON object");
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"no-such\",\"id\":7}\n"),
                 "CommandNotFound", "no-such");
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"blockdev-del\","
                                    "\"arguments\":{\"node-name\":5}}\n"),
                 "GenericError", "Invalid parameter type for 'node-name'");
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"blockdev-del\"}\n"),
                 "GenericError", "Parameter 'node-name' is missing");
    expect_error(ng_test_qmp_raw(q, "{\"execute\":\"query-version\","
                                    "\"arguments\":{\"x\":1}}\n"),
                 "GenericError", "Parameter 'x' is unexpected");
    expect_error(ng_test_qmp_raw(q, "{\"exec\":\"query-version\"}\n"),
                 "GenericError", "unexpected");
    /* Framing: brackets and escaped quotes inside strings are data; a
     * wrong closing bracket or a raw newline inside a string ends the
     * message there (an error), and what follows is read afresh. */
    expect_return(ng_test_qmp_raw(q, "{\"execute\":\"query-version\","
                                     "\"id\":\"}]\\\"{[\"}\n"),
                  json_string("}]\"{["));
    expect_error(ng_test_qmp_raw(q, "{\"execute\": [1}\n"),
                 "GenericError", "JSON parse error");
    expect_error(ng_test_qmp_raw(q, "{\"execute\": \"query-\n"),
                 "GenericError", "JSON parse error");
    expect_return(ng_test_qmp_raw(q, "{\"execute\":\"query-version\","
                                     "\"id\":1}"), json_integer(1));
    /* Two in one write, no newline between them. */
    expect_return(ng_test_qmp_raw(q, "{\"execute\":\"query-version\","
                                     "\"id\":2}{\"execute\":"
                                     "\"query-version\",\"id\":3}"),
                  json_integer(2));
    expect_return(ng_test_qmp_raw(q, ""), json_integer(3));
    /* A message split across two writes, with an integer id. */
    ng_test_qmp_send(q, "{\"execute\":\"query-");
    usleep(50 * 1000);
    expect_return(ng_test_qmp_raw(q, "version\", \"id\": 42}\n"),
                  json_integer(42));
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *a, *b;
    json_t *ev;
    struct stat st;

    ng_test_timeout(60);
    d = ng_test_start(ng_test_memory_config("16M"), "demo");
    if (stat(d->control, &st) == -1 || (st.st_mode & 0077) != 0)
        ng_test_fail("control socket is not owner-only (mode %o)",
                     st.st_mode & 0777);
    negotiation(d->control);
    a = ng_test_qmp_connect(d->control);
    b = ng_test_qmp_connect(d->control);
    bad_input(a);
    json_decref(ng_test_qmp_ok(a, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "blockdev-add", "arguments", "driver",
                               "memory", "node-name", "m2", "size", "1M"));
    ev = ng_test_qmp_next_event(b, 5000);
    if (ev == NULL ||
        strcmp(json_string_value(json_object_get(ev, "event")),
               "GRAPH_CHANGED") != 0 ||
        !json_is_integer(json_object_get(json_object_get(ev, "timestamp"),
                                         "seconds")) ||
        strcmp(json_string_value(json_object_get(json_object_get(ev, "data"),
                                                 "node-name")), "m2") != 0)
        ng_test_fail("second client did not see GRAPH_CHANGED for m2: %s",
                     ev ? json_dumps(ev, JSON_COMPACT) : "(nothing)");
    json_decref(ev);
    ng_test_qmp_close(a);
    json_decref(ng_test_qmp_ok(b, "{s:s}", "execute", "query-version"));
    ng_test_qmp_close(b);
    ng_test_stop(d);
    printf("QMP wire protocol checks passed\n");
    return 0;
}
