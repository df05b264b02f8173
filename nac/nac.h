/* nac/nac.h: Node Access Control — claims on node-names and the conflict
 * rule of the "Operation Blockers" RFC, plus the registry of holders.
 *
 * A holder (a "NAC job": an export, a block job, an immediate command) has
 * a unique ID, a kind ("export", "job", "command", ...), a free-form
 * description and, per node-name, a pair of action masks:
 *
 *   require  the actions the holder itself performs on the node;
 *   allow    the actions the holder lets others perform at the same time.
 *
 * The default is to prohibit: an action not in `allow` is denied to
 * everyone else.  A new holder is refused when, on any node it names,
 *
 *   it requires an action that some existing holder does not allow, or
 *   it does not allow an action that some existing holder requires.
 *
 * Acquisition is all-or-nothing over the whole claim list.
 *
 * The library is pure C11 plus libc: no libuv, no graph types, no I/O,
 * no global state.  A registry is not thread-safe; the daemon uses it
 * from the loop thread only.  Node-names are plain strings: the library
 * does not know whether a node exists, nor how nodes are connected (the
 * caller computes the list of nodes an operation touches — the RFC's
 * "honor system").
 *
 * Errors (control path, but the library cannot use graph/error.h): calls
 * that can fail return 0 on success or a negative errno:
 *
 *   -1        refused by the conflict rule (-1 is -EPERM, so a caller may
 *             hand -r to ng_error_set() as usual); `why` says who and what
 *   -EEXIST   the holder ID is already in use
 *   -ENOENT   no holder with that ID
 *   -EINVAL   bad argument (NULL or empty name, name of NG_NAC_NAME_MAX
 *             bytes or more, mask bits outside NG_NAC_ALL)
 *   -ENOMEM   out of memory
 *
 * Whatever fails, the registry is left exactly as it was.
 */
#ifndef NG_NAC_H
#define NG_NAC_H

#include <stdbool.h>
#include <stddef.h>

/* ---- Actions ---------------------------------------------------------- */

/* One bit per action; masks are `unsigned`.  The user-visible spelling of
 * each is in the comment (QMP, config, logs, messages). */
#define NG_NAC_READ_DATA    (1u << 0)   /* read-data: read visible data */
#define NG_NAC_READ_META    (1u << 1)   /* read-meta: read metadata (size,
                                           block status, chain) */
#define NG_NAC_WRITE_DATA   (1u << 2)   /* write-data: change what a read
                                           of the node returns */
#define NG_NAC_WRITE_META   (1u << 3)   /* write-meta: change the image
                                           without changing visible data */
#define NG_NAC_GRAPH_MOD    (1u << 4)   /* graph-mod: change the node's
                                           place in the graph */
#define NG_NAC_N_ACTIONS    5
#define NG_NAC_ALL          ((1u << NG_NAC_N_ACTIONS) - 1)

/* "read-data", ... for one action bit; NULL if `action` is not exactly one
 * NG_NAC_* bit.  The string is static. */
const char *ng_nac_action_name(unsigned action);

/* The action bit spelled `name` ("write-meta"), or 0 if there is none. */
unsigned ng_nac_action_from_name(const char *name);

/* Fill names[] with the spellings of the actions in `mask`, lowest bit
 * first; return how many (at most NG_NAC_N_ACTIONS).  Bits outside
 * NG_NAC_ALL are ignored. */
size_t ng_nac_mask_names(unsigned mask,
                         const char *names[NG_NAC_N_ACTIONS]);

/* Write `mask` as "read-data|write-data" ("none" for 0) into buf, always
 * NUL-terminated when len > 0; return the length the full text needs, as
 * snprintf does.  Bits outside NG_NAC_ALL are ignored. */
int ng_nac_mask_format(unsigned mask, char *buf, size_t len);

/* Parse what ng_nac_mask_format writes: action names joined by '|' or
 * ',', or "none".  Return 0 and set *mask, or -EINVAL (empty string,
 * unknown name, empty item). */
int ng_nac_mask_parse(const char *s, unsigned *mask);

/* ---- Claims and refusals ---------------------------------------------- */

/* Longest node-name, holder ID or kind, in bytes including the final NUL.
 * Longer names are refused with -EINVAL, so a refusal always holds the
 * full names. */
#define NG_NAC_NAME_MAX     128

/* What a holder asks for on one node.  Claim lists are borrowed for the
 * call.  A list may name a node more than once: the entries are merged as
 * QEMU merges one parent's permissions, require = OR of the requires,
 * allow = AND of the allows (an action is shared only if every entry
 * shares it).  Checking the entries one by one gives exactly the answer
 * for the merged claim, so a list with duplicates is neither better nor
 * worse off than its merged form. */
struct ng_nac_claim {
    const char *node;               /* node-name */
    unsigned require;               /* NG_NAC_* bits this holder does */
    unsigned allow;                 /* NG_NAC_* bits others may do */
};

/* Why a claim list was refused: one node, one action, one existing holder.
 * The reported conflict is the first in claim-list order, on that node the
 * lowest action bit, for that action the "new one requires" case before
 * the "holder requires" case, and then the first such holder in the
 * node's order (see ng_nac_foreach). */
struct ng_nac_conflict {
    char node[NG_NAC_NAME_MAX];         /* node-name */
    char holder_id[NG_NAC_NAME_MAX];    /* the existing holder */
    char holder_kind[NG_NAC_NAME_MAX];
    char new_id[NG_NAC_NAME_MAX];       /* the refused one */
    char new_kind[NG_NAC_NAME_MAX];
    unsigned action;                    /* exactly one NG_NAC_* bit */
    bool new_requires;  /* true: the new one requires what the holder does
                           not allow; false: the holder requires what the
                           new one does not allow */
};

/* The refusal as one phrase, the one who requires first:
 *   node 'disk0': job 'mirror0' requires write-data, which export 'vm1'
 *   does not allow
 * (on one line).  Same buffer contract and return as ng_nac_mask_format. */
int ng_nac_conflict_render(const struct ng_nac_conflict *why,
                           char *buf, size_t len);

/* ---- The registry ----------------------------------------------------- */

struct ng_nac;

/* A new, empty registry (caller frees with ng_nac_free), or NULL when out
 * of memory. */
struct ng_nac *ng_nac_new(void);

/* Free the registry and every holder still in it, without logging.
 * NULL is fine. */
void ng_nac_free(struct ng_nac *nac);

/* Called with one line, no trailing newline and no prefix, on every
 * acquire, replace, release and refusal (not for ng_nac_check, nor for
 * -EINVAL or -ENOMEM).  The line is borrowed for the call.  The callback
 * must not call back into the registry.  NULL turns logging off (the
 * default).  Lines look like:
 *   acquire job 'mirror0' (mirror disk0): disk0 require=read-data|... \
 *       allow=...; disk1 require=... allow=...
 *   refuse job 'commit0': node 'top': job 'commit0' requires graph-mod, \
 *       which job 'mirror0' does not allow
 *   refuse job 'mirror0': id already held by job 'mirror0'
 *   replace export 'vm1': ...   (same shape as acquire)
 *   release job 'mirror0'
 */
typedef void ng_nac_log_fn(void *opaque, const char *line);
void ng_nac_set_log(struct ng_nac *nac, ng_nac_log_fn *log, void *opaque);

/* Add holder `id` of kind `kind` (both copied) with description `desc`
 * (copied; NULL means "") and the n claims (borrowed; NULL if n is 0; a
 * holder with no claims just reserves its ID).  Returns 0, or one of the
 * errors at the top of this file; on -1, *why (if not NULL) says why.
 * Costs O(n) on average, whatever the number of holders, except that
 * naming the conflicting holder costs O(holders on that node). */
int ng_nac_acquire(struct ng_nac *nac, const char *id, const char *kind,
                   const char *desc, const struct ng_nac_claim *claims,
                   size_t n, struct ng_nac_conflict *why);

/* Dry run: what ng_nac_acquire would return now (including -EEXIST and
 * -EINVAL, and *why on -1), changing nothing and logging nothing.  Never
 * returns -ENOMEM. */
int ng_nac_check(const struct ng_nac *nac, const char *id, const char *kind,
                 const struct ng_nac_claim *claims, size_t n,
                 struct ng_nac_conflict *why);

/* Swap the claims of holder `id` for the n new ones, all-or-nothing, as
 * if it were released and acquired again with the same ID, kind and
 * description but with no window in between: the new claims are checked
 * against every other holder only.  Returns 0, -1 (old claims kept; *why
 * names the holder as new_id), -ENOENT, -EINVAL or -ENOMEM. */
int ng_nac_replace(struct ng_nac *nac, const char *id,
                   const struct ng_nac_claim *claims, size_t n,
                   struct ng_nac_conflict *why);

/* Drop holder `id` and all its claims.  Returns 0 or -ENOENT. */
int ng_nac_release(struct ng_nac *nac, const char *id);

/* ---- Looking inside (query-nac, tests) -------------------------------- */

/* Number of holders, and of node-names that at least one holder names.
 * Both are 0 for an empty registry. */
size_t ng_nac_count_holders(const struct ng_nac *nac);
size_t ng_nac_count_nodes(const struct ng_nac *nac);

/* Whether a holder with this ID exists. */
bool ng_nac_has_holder(const struct ng_nac *nac, const char *id);

/* The aggregate state of one node: *required = the actions some holder
 * requires, *denied = the actions some holder does not allow (both 0 for
 * a node nobody names; either pointer may be NULL).  A claim
 * (require, allow) on this node alone is refused exactly when
 *   (require & *denied) | (~allow & *required & NG_NAC_ALL)
 * is not 0.  Returns the number of holders naming the node. */
size_t ng_nac_node_state(const struct ng_nac *nac, const char *node,
                         unsigned *required, unsigned *denied);

/* One holder's claim on one node, as query-nac lists it.  All strings are
 * borrowed for the duration of the visit. */
struct ng_nac_holding {
    const char *node;
    const char *id;
    const char *kind;
    const char *desc;               /* "" when none was given */
    unsigned require;               /* merged, see struct ng_nac_claim */
    unsigned allow;
};

/* One holder, as a list of jobs shows it; borrowed for the visit. */
struct ng_nac_holder_info {
    const char *id;
    const char *kind;
    const char *desc;
    size_t nnodes;                  /* distinct node-names it claims */
};

/* Visitors return 0 to go on; any other value stops the walk, and the
 * walk returns it (use positive values to tell them from -ENOMEM).  A
 * visitor must not change the registry. */
typedef int ng_nac_holding_fn(void *opaque,
                              const struct ng_nac_holding *h);
typedef int ng_nac_holder_fn(void *opaque,
                             const struct ng_nac_holder_info *h);

/* Every (node, holder) pair: nodes in strcmp order, on each node the
 * holders in the order they first claimed it (ng_nac_replace keeps a
 * holder's place on the nodes it still claims).  Returns 0, the
 * visitor's stop value, or -ENOMEM (it sorts the node-names in a
 * temporary array). */
int ng_nac_foreach(const struct ng_nac *nac, ng_nac_holding_fn *fn,
                   void *opaque);

/* The claims of holder `id`, merged, in the order their node-names first
 * appeared in its claim list.  Returns 0, the visitor's stop value, or
 * -ENOENT. */
int ng_nac_foreach_claim(const struct ng_nac *nac, const char *id,
                         ng_nac_holding_fn *fn, void *opaque);

/* Every holder, oldest first (including holders with no claims).
 * Returns 0 or the visitor's stop value. */
int ng_nac_foreach_holder(const struct ng_nac *nac, ng_nac_holder_fn *fn,
                          void *opaque);

#endif
