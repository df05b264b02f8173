/* nac/policy.h: what each kind of holder claims — the table in
 * nac/README.md, in code, so the daemon and the tests use one copy. */
#ifndef NG_NAC_POLICY_H
#define NG_NAC_POLICY_H

#include "nac/nac.h"

#define NG_NAC_READS (NG_NAC_READ_DATA | NG_NAC_READ_META)

/* An export on its node.  A read-only export shares everything; a
 * writable one is the only writer but lets snapshots, filter insertion
 * and pivots happen under it (the daemon drains; clients see a pause). */
#define NG_NAC_EXPORT_RO_REQUIRE  NG_NAC_READS
#define NG_NAC_EXPORT_RO_ALLOW    NG_NAC_ALL
#define NG_NAC_EXPORT_RW_REQUIRE  (NG_NAC_READS | NG_NAC_WRITE_DATA)
#define NG_NAC_EXPORT_RW_ALLOW    (NG_NAC_READS | NG_NAC_WRITE_META | \
                                   NG_NAC_GRAPH_MOD)

/* An immediate command that moves a node in the graph (filter insertion
 * above it, filter removal of it): needs graph-mod, shares the rest. */
#define NG_NAC_SPLICE_REQUIRE     NG_NAC_GRAPH_MOD
#define NG_NAC_SPLICE_ALLOW       (NG_NAC_ALL & ~NG_NAC_GRAPH_MOD)

/* block_resize on a node, and on the nodes whose size follows it: to
 * the jobs that hold one, as if it moved (their bitmaps and copy ranges
 * were sized by it), so graph-mod; exports allow it (their clients keep
 * the size they were told).  Shares the rest. */
#define NG_NAC_RESIZE_REQUIRE     NG_NAC_GRAPH_MOD
#define NG_NAC_RESIZE_ALLOW       (NG_NAC_ALL & ~NG_NAC_GRAPH_MOD)

/* A mirror (nac/README.md, "Jobs"): the source keeps taking client
 * writes (the job's bitmap tracks them) but nobody else may move it; the
 * target holds half-copied data nobody may read or write. */
#define NG_NAC_MIRROR_SOURCE_REQUIRE  (NG_NAC_READS | NG_NAC_GRAPH_MOD)
#define NG_NAC_MIRROR_SOURCE_ALLOW    (NG_NAC_READS | NG_NAC_WRITE_DATA | \
                                       NG_NAC_WRITE_META)
#define NG_NAC_MIRROR_TARGET_REQUIRE  (NG_NAC_READ_META | NG_NAC_WRITE_DATA)
#define NG_NAC_MIRROR_TARGET_ALLOW    NG_NAC_READ_META

/* A backup: the source as a mirror's (its copy-before-write filter goes
 * above it); the target may be read meanwhile (fleecing). */
#define NG_NAC_BACKUP_SOURCE_REQUIRE  NG_NAC_MIRROR_SOURCE_REQUIRE
#define NG_NAC_BACKUP_SOURCE_ALLOW    NG_NAC_MIRROR_SOURCE_ALLOW
#define NG_NAC_BACKUP_TARGET_REQUIRE  (NG_NAC_READ_META | NG_NAC_WRITE_DATA)
#define NG_NAC_BACKUP_TARGET_ALLOW    NG_NAC_READS

/* block-stream and block-commit (nac/README.md, "Jobs"): a stream
 * only changes its top's metadata (data copied up reads the same) and
 * reads the rest of the chain, which must hold still; a commit writes
 * its base's visible data, and what it drops from the chain must not
 * change.  The overlay is the node whose backing link a commit rewrites. */
#define NG_NAC_STREAM_TOP_REQUIRE     (NG_NAC_READS | NG_NAC_WRITE_META | \
                                       NG_NAC_GRAPH_MOD)
#define NG_NAC_STREAM_TOP_ALLOW       (NG_NAC_READS | NG_NAC_WRITE_DATA)
#define NG_NAC_CHAIN_MID_REQUIRE      (NG_NAC_READS | NG_NAC_GRAPH_MOD)
#define NG_NAC_CHAIN_MID_ALLOW        NG_NAC_READS
#define NG_NAC_STREAM_BASE_REQUIRE    NG_NAC_READS
#define NG_NAC_STREAM_BASE_ALLOW      (NG_NAC_READS | NG_NAC_WRITE_META)
#define NG_NAC_COMMIT_OVERLAY_REQUIRE (NG_NAC_WRITE_META | NG_NAC_GRAPH_MOD)
#define NG_NAC_COMMIT_OVERLAY_ALLOW   (NG_NAC_READS | NG_NAC_WRITE_DATA)
#define NG_NAC_COMMIT_TOP_REQUIRE     (NG_NAC_READS | NG_NAC_GRAPH_MOD)
#define NG_NAC_COMMIT_TOP_ALLOW       NG_NAC_READS
#define NG_NAC_COMMIT_ACTIVE_TOP_ALLOW (NG_NAC_READS | NG_NAC_WRITE_DATA | \
                                        NG_NAC_WRITE_META)
#define NG_NAC_COMMIT_BASE_REQUIRE    (NG_NAC_READS | NG_NAC_WRITE_DATA)
#define NG_NAC_COMMIT_BASE_ALLOW      NG_NAC_READS

/* Creating or deleting a node: nobody else may touch it meanwhile. */
#define NG_NAC_EXCLUSIVE_REQUIRE  NG_NAC_ALL
#define NG_NAC_EXCLUSIVE_ALLOW    0u

#endif
