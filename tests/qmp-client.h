/* tests/qmp-client.h: a blocking QMP client for integration tests. */
#ifndef NG_TEST_QMP_CLIENT_H
#define NG_TEST_QMP_CLIENT_H

#include <jansson.h>

struct ng_test_qmp;

/* Connect, read the greeting, negotiate.  Fails the test on error. */
struct ng_test_qmp *ng_test_qmp_connect(const char *path);
void ng_test_qmp_close(struct ng_test_qmp *q);

/* Send a command built from a json_pack format (the whole {"execute":...}
 * object) and return the reply object ({"return":..} or {"error":..});
 * events that arrive meanwhile are counted and dropped.  New reference. */
json_t *ng_test_qmp(struct ng_test_qmp *q, const char *fmt, ...);

/* The same, failing the test unless the reply is a return; returns the
 * "return" value (new reference). */
json_t *ng_test_qmp_ok(struct ng_test_qmp *q, const char *fmt, ...);

/* The same, failing the test unless the reply is an error whose desc
 * contains `want`; returns nothing. */
void ng_test_qmp_fails(struct ng_test_qmp *q, const char *want,
                       const char *fmt, ...);

/* Send `text` as it is (it may be malformed) and return the next reply
 * that is not an event.  New reference. */
json_t *ng_test_qmp_raw(struct ng_test_qmp *q, const char *text);

/* Send `text` as it is, without waiting for anything. */
void ng_test_qmp_send(struct ng_test_qmp *q, const char *text);

/* Connect and read the greeting only (no negotiation). */
struct ng_test_qmp *ng_test_qmp_connect_raw(const char *path,
                                            json_t **greeting);

/* Wait for the next event (up to `ms`); NULL on timeout.  New reference. */
json_t *ng_test_qmp_next_event(struct ng_test_qmp *q, int ms);

/* The node on edge `role` (QEMU's child name) of node `name`, as
 * query-named-block-nodes shows it, or NULL; the caller frees it. */
char *ng_test_qmp_child(struct ng_test_qmp *q, const char *name,
                        const char *role);
/* Fail the test unless that child is `want` (NULL: there is none). */
void ng_test_qmp_expect_child(struct ng_test_qmp *q, const char *name,
                              const char *role, const char *want);

/* The status of job `id` in query-jobs into out ("gone" when it is not
 * listed), and its total-progress into *total when total is not NULL
 * and the job is listed.  Returns out. */
const char *ng_test_qmp_job_status(struct ng_test_qmp *q, const char *id,
                                   char *out, size_t size, long long *total);
/* Ask every 10 ms until job `id` is `want` ("gone": not listed), then
 * its total-progress is in *total (as above); fail the test after
 * `seconds`. */
void ng_test_qmp_wait_job(struct ng_test_qmp *q, const char *id,
                          const char *want, unsigned seconds,
                          long long *total);

/* Events received so far. */
unsigned ng_test_qmp_events(const struct ng_test_qmp *q);

#endif
