/* config/implicit.c: the implicit-filter keys of an export. */
#include <config.h>

#include <string.h>

#include "config/config.h"

static int
parse_detect_zeroes(const struct ng_value *v, struct ng_implicit_filters *f,
                    struct ng_error *err)
{
    const char *s = ng_value_to_string(v, "detect-zeroes", err);

    if (s == NULL)
        return -1;
    if (strcmp(s, "off") == 0) {
        f->detect_zeroes = NULL;
        return 0;
    }
    if (strcmp(s, "on") != 0 && strcmp(s, "unmap") != 0)
        return ng_value_error(err, &v->loc, "'detect-zeroes' must be off, "
                              "on or unmap, not '%s'", s);
    f->detect_zeroes = s;
    return 0;
}

static int
parse_throttle(const struct ng_value *map, struct ng_implicit_filters *f,
               struct ng_error *err)
{
    const struct ng_value *limits = ng_value_get(map, "throttle");
    const struct ng_value *group = ng_value_get(map, "throttle-group");

    if (limits != NULL && group != NULL)
        return ng_value_error(err, &group->loc, "give either 'throttle' "
                              "(limits of this export alone) or "
                              "'throttle-group' (a shared group), not both");
    if (limits != NULL && limits->kind != NG_VALUE_MAP)
        return ng_value_error(err, &limits->loc, "'throttle' must be a "
                              "mapping of limits such as iops-total");
    f->throttle = limits;
    if (group != NULL &&
        (f->throttle_group = ng_value_to_string(group, "throttle-group",
                                                err)) == NULL)
        return -1;
    return 0;
}

int
ng_implicit_filters_parse(const struct ng_value *map,
                          struct ng_implicit_filters *f,
                          struct ng_error *err)
{
    const struct ng_value *v;

    memset(f, 0, sizeof *f);
    if (parse_throttle(map, f, err) == -1)
        return -1;
    v = ng_value_get(map, "copy-on-read");
    if (v != NULL && ng_value_to_bool(v, "copy-on-read", &f->copy_on_read,
                                      err) == -1)
        return -1;
    v = ng_value_get(map, "detect-zeroes");
    if (v != NULL && parse_detect_zeroes(v, f, err) == -1)
        return -1;
    return 0;
}
