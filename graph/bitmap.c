/* graph/bitmap.c: dirty bitmaps (see bitmap.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "graph/graph.h"

#define WORD_BITS 64u

static bool
is_power_of_two(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

static unsigned
log2_of(uint64_t x)
{
    unsigned n = 0;

    while ((1ull << n) < x)
        n++;
    return n;
}

struct ng_bitmap *
ng_bitmap_find(struct ng_node *node, const char *name)
{
    struct ng_bitmap *bm;

    for (bm = node->bitmaps; bm != NULL; bm = bm->next)
        if (bm->name != NULL && strcmp(bm->name, name) == 0)
            return bm;
    return NULL;
}

static int
check_new(struct ng_node *node, const char *name, uint32_t granularity,
          struct ng_error *err)
{
    if (!is_power_of_two(granularity) || granularity < NG_BITMAP_GRAN_MIN ||
        granularity > NG_BITMAP_GRAN_MAX)
        return ng_error_set(err, EINVAL, "granularity must be a power of two "
                            "from 512 to 64M, not %u", granularity);
    if (name != NULL && *name == '\0')
        return ng_error_set(err, EINVAL, "bitmap name must not be empty");
    if (name != NULL && ng_bitmap_find(node, name) != NULL)
        return ng_error_set(err, EEXIST, "bitmap '%s' already exists on "
                            "node '%s'", name, node->name);
    if (ng_node_length(node) < 0)
        return ng_error_set(err, EIO, "node '%s' has no size", node->name);
    return 0;
}

struct ng_bitmap *
ng_bitmap_add(struct ng_node *node, const char *name, uint32_t granularity,
              struct ng_error *err)
{
    struct ng_bitmap *bm;

    if (check_new(node, name, granularity, err) == -1)
        return NULL;
    bm = calloc(1, sizeof *bm);
    if (bm == NULL)
        goto oom;
    bm->node = node;
    bm->size = (uint64_t)ng_node_length(node);
    bm->granularity = granularity;
    bm->shift = log2_of(granularity);
    bm->nbits = (bm->size + granularity - 1) >> bm->shift;
    bm->recording = true;
    /* calloc of a big array maps zero pages: untouched parts of a huge
     * node's bitmap cost no memory. */
    bm->words = calloc((bm->nbits + WORD_BITS - 1) / WORD_BITS + 1,
                       sizeof *bm->words);
    if (bm->words == NULL || (name != NULL &&
                              (bm->name = strdup(name)) == NULL))
        goto oom;
    bm->next = node->bitmaps;
    node->bitmaps = bm;
    return bm;

oom:
    if (bm != NULL)
        free(bm->words);
    free(bm);
    ng_error_set(err, ENOMEM, "out of memory");
    return NULL;
}

void
ng_bitmap_remove(struct ng_bitmap *bm)
{
    struct ng_bitmap **p;

    if (bm == NULL)
        return;
    for (p = &bm->node->bitmaps; *p != NULL; p = &(*p)->next) {
        if (*p == bm) {
            *p = bm->next;
            break;
        }
    }
    free(bm->words);
    free(bm->name);
    free(bm);
}

int
ng_bitmap_check_move(const struct ng_bitmap *bm, struct ng_node *to,
                     struct ng_error *err)
{
    if ((uint64_t)ng_node_length(to) != bm->size)
        return ng_error_set(err, EINVAL, "dirty bitmap '%s' covers %" PRIu64
                            " bytes, node '%s' has %" PRId64, bm->name,
                            bm->size, to->name, ng_node_length(to));
    if (bm->name != NULL && ng_bitmap_find(to, bm->name) != NULL)
        return ng_error_set(err, EEXIST, "node '%s' has a dirty bitmap '%s' "
                            "already", to->name, bm->name);
    return 0;
}

int
ng_bitmap_move(struct ng_bitmap *bm, struct ng_node *to,
               struct ng_error *err)
{
    struct ng_bitmap **p;

    if (ng_bitmap_check_move(bm, to, err) == -1)
        return -1;
    for (p = &bm->node->bitmaps; *p != NULL; p = &(*p)->next) {
        if (*p == bm) {
            *p = bm->next;
            break;
        }
    }
    bm->node = to;
    bm->next = to->bitmaps;
    to->bitmaps = bm;
    return 0;
}

void
ng_bitmap_remove_all(struct ng_node *node)
{
    while (node->bitmaps != NULL)
        ng_bitmap_remove(node->bitmaps);
}

/* Bits [first, end) of the bitmap as a mask of word w. */
static uint64_t
word_mask(uint64_t w, uint64_t first, uint64_t end)
{
    uint64_t lo = w * WORD_BITS, hi = lo + WORD_BITS;
    uint64_t from = first > lo ? first - lo : 0;
    uint64_t to = end < hi ? end - lo : WORD_BITS;
    uint64_t upper = to == WORD_BITS ? ~0ull : (1ull << to) - 1;

    return upper & ~((1ull << from) - 1);
}

/* Set (value true) or clear bits [first, end). */
static void
change_bits(struct ng_bitmap *bm, uint64_t first, uint64_t end, bool value)
{
    uint64_t w, mask, old;

    if (end > bm->nbits)
        end = bm->nbits;
    if (first >= end)
        return;
    for (w = first / WORD_BITS; w <= (end - 1) / WORD_BITS; w++) {
        mask = word_mask(w, first, end);
        old = bm->words[w];
        bm->words[w] = value ? old | mask : old & ~mask;
        bm->count += (uint64_t)__builtin_popcountll(bm->words[w]);
        bm->count -= (uint64_t)__builtin_popcountll(old);
    }
}

void
ng_bitmap_set(struct ng_bitmap *bm, uint64_t offset, uint64_t length)
{
    uint64_t end = offset + length;

    if (length == 0 || end < offset)
        return;
    change_bits(bm, offset >> bm->shift,
                (end + bm->granularity - 1) >> bm->shift, true);
}

void
ng_bitmap_reset(struct ng_bitmap *bm, uint64_t offset, uint64_t length)
{
    uint64_t end = offset + length;

    if (length == 0 || end < offset)
        return;
    change_bits(bm, offset >> bm->shift,
                (end + bm->granularity - 1) >> bm->shift, false);
}

void
ng_bitmap_set_all(struct ng_bitmap *bm)
{
    change_bits(bm, 0, bm->nbits, true);
}

void
ng_bitmap_clear_all(struct ng_bitmap *bm)
{
    change_bits(bm, 0, bm->nbits, false);
}

bool
ng_bitmap_get(const struct ng_bitmap *bm, uint64_t offset)
{
    uint64_t bit = offset >> bm->shift;

    return bit < bm->nbits &&
           (bm->words[bit / WORD_BITS] >> (bit % WORD_BITS)) & 1;
}

int
ng_bitmap_merge(struct ng_bitmap *dst, const struct ng_bitmap *src,
                struct ng_error *err)
{
    uint64_t w, n = (dst->nbits + WORD_BITS - 1) / WORD_BITS;

    if (dst->size != src->size || dst->granularity != src->granularity)
        return ng_error_set(err, EINVAL, "bitmaps differ in size or "
                            "granularity");
    dst->count = 0;
    for (w = 0; w < n; w++) {
        dst->words[w] |= src->words[w];
        dst->count += (uint64_t)__builtin_popcountll(dst->words[w]);
    }
    return 0;
}

/* First bit >= from whose value is `value`, or nbits. */
static uint64_t
next_bit(const struct ng_bitmap *bm, uint64_t from, bool value)
{
    uint64_t w, word;

    while (from < bm->nbits) {
        w = from / WORD_BITS;
        word = value ? bm->words[w] : ~bm->words[w];
        word &= ~0ull << (from % WORD_BITS);
        if (word != 0) {
            from = w * WORD_BITS + (uint64_t)__builtin_ctzll(word);
            return from < bm->nbits ? from : bm->nbits;
        }
        from = (w + 1) * WORD_BITS;
    }
    return bm->nbits;
}

static uint64_t
bit_to_offset(const struct ng_bitmap *bm, uint64_t bit)
{
    uint64_t off = bit << bm->shift;

    return off < bm->size ? off : bm->size;
}

uint64_t
ng_bitmap_next_dirty(const struct ng_bitmap *bm, uint64_t offset)
{
    return bit_to_offset(bm, next_bit(bm, offset >> bm->shift, true));
}

uint64_t
ng_bitmap_next_clean(const struct ng_bitmap *bm, uint64_t offset)
{
    return bit_to_offset(bm, next_bit(bm, offset >> bm->shift, false));
}

uint64_t
ng_bitmap_dirty_bytes(const struct ng_bitmap *bm)
{
    uint64_t bytes = bm->count << bm->shift;

    /* The last granule may stick out past the end. */
    if (bm->nbits > 0 && ng_bitmap_get(bm, (bm->nbits - 1) << bm->shift))
        bytes -= (bm->nbits << bm->shift) - bm->size;
    return bytes;
}

void
ng_bitmap_mark_node(struct ng_node *node, uint64_t offset, uint64_t length)
{
    struct ng_bitmap *bm;

    for (bm = node->bitmaps; bm != NULL; bm = bm->next) {
        if (!bm->recording)
            continue;
        ng_bitmap_set(bm, offset, length);
        if (bm->on_dirty != NULL)
            bm->on_dirty(bm->on_dirty_opaque);
    }
}

void
ng_bitmap_mark_request(struct ng_node *node, const struct ng_req *req,
                       int ret)
{
    if (ret == 0 && node->bitmaps != NULL && ng_req_changes_data(req))
        ng_bitmap_mark_node(node, req->offset, req->length);
}
