/* graph/qcow2-corrupt.c: metadata found wrong while serving I/O, handled
 * as QEMU's qcow2_signal_corruption(): the image is marked corrupt in its
 * header (v3; written back and flushed), the node refuses writes from
 * then on, the message is logged once with the file and offset, and
 * BLOCK_IMAGE_CORRUPTED goes to the control clients.  The request that
 * found it fails with EIO (the caller's part).  Also the overlap check
 * QEMU runs before metadata-blind writes: data must never land on the
 * header or a table. */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "graph/qcow2.h"

static bool
hits(uint64_t off, uint64_t len, uint64_t start, uint64_t size)
{
    return size > 0 && off < start + size && start < off + len;
}

const char *
qcow2_meta_overlap(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    uint64_t cs = s->cluster_size;

    if (hits(off, len, 0, cs))
        return "the header";
    if (hits(off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
        return "the L1 table";
    if (hits(off, len, s->reft_offset, s->reft_entries * 8))
        return "the refcount table";
    for (uint64_t i = 0; i < s->l1_size; i++)
        if (s->l1[i] != 0 &&
            hits(off, len, be64toh(s->l1[i]) & QCOW2_OFFSET_MASK, cs))
            return "an L2 table";
    for (uint64_t i = 0; i < s->reft_entries; i++)
        if (s->reft[i] != 0 &&
            hits(off, len, be64toh(s->reft[i]) & QCOW2_REFT_OFFSET_MASK, cs))
            return "a refcount block";
    return NULL;
}

void
qcow2_signal_corruption(struct qcow2_state *s, int64_t offset, int64_t size,
                        const char *fmt, ...)
{
    bool fatal = s->writable;
    char msg[256];
    va_list ap;

    if (s->corrupt)
        return;                     /* once */
    s->corrupt = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ng_node_warn(s->node, "'%s': %s (offset %" PRId64 ", %" PRId64
                 " bytes); %s", ng_node_filename(s->file), msg, offset, size,
                 fatal ? "marked corrupt, no more writes" :
                 "read-only, not marked");
    {
        struct ng_event_field f[] = {
            { .key = "device", .kind = NG_EVENT_STR, .str = "" },
            { .key = "node-name", .kind = NG_EVENT_STR,
              .str = s->node->name },
            { .key = "msg", .kind = NG_EVENT_STR, .str = msg },
            { .key = "fatal", .kind = NG_EVENT_BOOL, .num = fatal },
            { .key = "offset", .kind = NG_EVENT_INT, .num = offset },
            { .key = "size", .kind = NG_EVENT_INT, .num = size },
        };

        /* As QEMU: offset and size only when known. */
        ng_graph_emit(s->node->graph, "BLOCK_IMAGE_CORRUPTED", f,
                      offset < 0 ? 4 : 6);
    }
    /* v2 has no feature bits: it is only refused writes. */
    if (!fatal || s->version < 3)
        return;
    s->incompat |= QCOW2_INCOMPAT_CORRUPT;
    qcow2_header_update(s);
}
