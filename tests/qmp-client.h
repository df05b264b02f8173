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

/* Events received so far. */
unsigned ng_test_qmp_events(const struct ng_test_qmp *q);

#endif
