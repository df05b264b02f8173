/* filters/filters.c: the registry of every driver compiled in. */
#include <config.h>

#include "graph/drivers.h"
#include "filters/filters.h"

#define NG_FILTER_LIST \
    &ng_filter_nofilter, \
    &ng_filter_throttle, \
    &ng_filter_copy_on_read, \
    &ng_filter_detect_zeroes, \
    &ng_filter_blkdebug, \
    &ng_filter_delay, \
    &ng_filter_log, \
    &ng_filter_cbw, \
    &ng_filter_mirror_top, \
    &ng_filter_blkverify, \
    &ng_filter_quorum

const struct ng_driver *const ng_all_drivers[] = {
    &ng_driver_file,
    &ng_driver_memory,
    &ng_driver_null_co,
    &ng_driver_raw,
    &ng_driver_luks,
    &ng_driver_qcow2,
    &ng_driver_nbd,
    &ng_driver_rbd,
    &ng_driver_nbdkit,
    NG_FILTER_LIST,
    NULL,
};

const struct ng_driver *const ng_filter_drivers[] = {
    NG_FILTER_LIST,
    NULL,
};
