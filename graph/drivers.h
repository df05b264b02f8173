/* graph/drivers.h: the leaf and format drivers graph/ implements.  A
 * graph only uses those in the registry handed to ng_graph_new()
 * (filters/filters.c lists them all). */
#ifndef NG_DRIVERS_H
#define NG_DRIVERS_H

#include "graph/graph.h"

extern const struct ng_driver ng_driver_file;
extern const struct ng_driver ng_driver_memory;
extern const struct ng_driver ng_driver_null_co;
extern const struct ng_driver ng_driver_raw;
extern const struct ng_driver ng_driver_luks;
extern const struct ng_driver ng_driver_qcow2;

/* Create (or overwrite) `path` as an empty qcow2 v3 image of `size`
 * bytes with clusters of `cluster_size` (a power of two, 512 to 2M;
 * QEMU's default is 65536), optionally naming a backing file and its
 * format ("qcow2", "raw") in the header, as qemu-img create -b -F does.
 * Blocking file I/O (open, write, fsync).  Returns 0, or -1 with *err
 * set. */
int ng_qcow2_create(const char *path, uint64_t size, uint64_t cluster_size,
                    const char *backing_file, const char *backing_fmt,
                    struct ng_error *err);
/* How a qcow2 header names `backing` (QEMU's backing file name and
 * format): a qcow2 or raw node on a file node (or a file node: raw),
 * by its file's absolute path.  False when it is none of those, or the
 * name does not fit in `size` bytes (or qcow2's 1023). */
bool ng_qcow2_backing_ref(struct ng_node *backing, char *name, size_t size,
                          const char **fmt);
extern const struct ng_driver ng_driver_nbd;
extern const struct ng_driver ng_driver_rbd;
extern const struct ng_driver ng_driver_nbdkit;
/* The mirror and commit jobs' filter (graph/mirror-top.c). */
extern const struct ng_driver ng_filter_mirror_top;

#endif
