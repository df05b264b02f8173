/* filters/cbw.c: "copy-before-write", the backup job's filter.  Every
 * write, trim or write-zeroes waits until the copy engine has copied the
 * old data of its range to the backup target (the engine does those
 * ranges first), then goes on unchanged; so the target ends as the image
 * at the moment the filter went in.  A write whose old data could not
 * be saved fails with the target's error (QEMU's default
 * on-cbw-error=break-guest-write): let through, it would leave the
 * target with new data where a job that goes on (on-target-error ignore
 * or stop) must save the old.  Without a job attached (a filter spliced
 * in by hand, or once its job has stopped) it passes everything
 * through. */
#include <config.h>

#include <errno.h>

#include "filters/cbw.h"
#include "filters/filters.h"
#include "graph/copy.h"

#define CBW_SLOTS 64                /* writes held at once; more queue */

struct cbw_slot {
    struct ng_copy_waiter w;
    struct ng_node *node;
    struct ng_req *req;             /* NULL: free */
};

struct cbw_state {
    struct ng_node *child;          /* option "file" */
    struct ng_copy *copy;           /* the job's engine, or NULL */
    struct cbw_slot slots[CBW_SLOTS];
    struct ng_req *queue_head, *queue_tail;  /* waiting for a slot, via
                                     * req->filter_next */
};

static const struct ng_opt_desc cbw_opts[] = {
    NG_OPT_CHILD("file", struct cbw_state, child, NG_ROLE_FILTERED, true,
                 "the node whose old data is copied out"),
    NG_OPT_END,
};

static void cbw_hold(struct ng_node *node, struct ng_req *req);

/* The old data of the slot's range is safe: let its write go (or fail
 * it, see the top), and give the slot to the next queued one. */
static void
cbw_copied(struct ng_copy_waiter *w, int ret)
{
    struct cbw_slot *slot = w->opaque;
    struct ng_node *node = slot->node;
    struct cbw_state *s = ng_node_state(node);
    struct ng_req *req = slot->req, *next;

    slot->req = NULL;
    if (ret < 0 && ret != -ECANCELED)
        ng_req_complete(req, ret);
    else
        ng_node_forward(node, req);     /* saved, or the job is over */
    if ((next = s->queue_head) != NULL) {
        s->queue_head = next->filter_next;
        if (s->queue_head == NULL)
            s->queue_tail = NULL;
        next->filter_next = NULL;
        cbw_hold(node, next);
    }
}

static struct cbw_slot *
free_slot(struct cbw_state *s)
{
    unsigned i;

    for (i = 0; i < CBW_SLOTS; i++)
        if (s->slots[i].req == NULL)
            return &s->slots[i];
    return NULL;
}

static void
cbw_hold(struct ng_node *node, struct ng_req *req)
{
    struct cbw_state *s = ng_node_state(node);
    struct cbw_slot *slot;

    if (s->copy == NULL) {
        ng_node_forward(node, req);
        return;
    }
    if ((slot = free_slot(s)) == NULL) {
        req->filter_next = NULL;
        if (s->queue_tail != NULL)
            s->queue_tail->filter_next = req;
        else
            s->queue_head = req;
        s->queue_tail = req;
        return;
    }
    slot->node = node;
    slot->req = req;
    slot->w = (struct ng_copy_waiter){ .offset = req->offset,
                                       .length = req->length,
                                       .done = cbw_copied, .opaque = slot };
    if (ng_copy_wait(s->copy, &slot->w) == 1) {
        slot->req = NULL;
        ng_node_forward(node, req);
    }
}

static void
cbw_submit(struct ng_node *node, struct ng_req *req)
{
    if (!ng_req_changes_data(req)) {
        ng_node_forward(node, req);
        return;
    }
    cbw_hold(node, req);
}

void
ng_cbw_attach(struct ng_node *node, struct ng_copy *copy)
{
    struct cbw_state *s = ng_node_state(node);

    s->copy = copy;
}

void
ng_cbw_detach(struct ng_node *node)
{
    struct cbw_state *s = ng_node_state(node);
    struct ng_req *req;

    s->copy = NULL;
    /* A stopped engine has answered every slot; what queued goes on. */
    while ((req = s->queue_head) != NULL) {
        s->queue_head = req->filter_next;
        req->filter_next = NULL;
        ng_node_forward(node, req);
    }
    s->queue_tail = NULL;
}

bool
ng_cbw_is(const struct ng_node *node)
{
    return node->driver == &ng_filter_cbw;
}

const struct ng_driver ng_filter_cbw = {
    .name       = "copy-before-write",
    .help       = "copy old data to a backup target before a write "
                  "overwrites it (blockdev-backup puts it in)",
    .is_filter  = true,
    .state_size = sizeof(struct cbw_state),
    .opts       = cbw_opts,
    .submit     = cbw_submit,
};
