/* tests/fuzz/fuzz-config.c: the YAML config loader (config/), from
 * libyaml's events through the value tree to the validated model.  The
 * input is a config file's text; a valid one must also survive being
 * freed, and an invalid one must say why, with a position.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "tests/fuzz/fuzz-util.h"

#define FUZZ_CONFIG_NAME "fuzz.yaml"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg;
    char *text = malloc(size + 1);

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';          /* the loader takes a C string */
    cfg = ng_config_load_string(text, FUZZ_CONFIG_NAME, &err);
    /* README.md: "Every error names file:line:column". */
    if (cfg == NULL && err.code != ENOMEM &&
        !ng_config_error_located(&err, FUZZ_CONFIG_NAME))
        fuzz_die("config error without its position: '%s'", err.msg);
    ng_config_free(cfg);
    free(text);
    return 0;
}
