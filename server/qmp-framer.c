/* server/qmp-framer.c: see qmp-framer.h. */
#include <config.h>

#include <string.h>

#include "server/qmp-framer.h"

static bool
is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static void
push(struct ng_qmp_framer *f, char open)
{
    size_t d = f->depth++;

    if (d >= NG_QMP_FRAMER_STACK)
        return;
    if (open == '[')
        f->square[d / 8] |= (unsigned char)(1u << (d % 8));
    else
        f->square[d / 8] &= (unsigned char)~(1u << (d % 8));
}

/* Close one bracket: false when it is of the wrong kind. */
static bool
pop(struct ng_qmp_framer *f, char close)
{
    size_t d = --f->depth;
    bool square;

    if (d >= NG_QMP_FRAMER_STACK)
        return true;
    square = (f->square[d / 8] >> (d % 8)) & 1;
    return square == (close == ']');
}

/* One byte inside a value: true when the value ends with it. */
static bool
value_byte(struct ng_qmp_framer *f, char ch)
{
    if (f->in_string) {
        if (f->escape)
            f->escape = false;
        else if (ch == '\\')
            f->escape = true;
        else if (ch == '"')
            f->in_string = false;
        else if ((unsigned char)ch < 0x20)
            return true;        /* not JSON: let the parser say so */
        return false;
    }
    switch (ch) {
    case '"':
        f->in_string = true;
        return false;
    case '{':
    case '[':
        push(f, ch);
        return false;
    case '}':
    case ']':
        return !pop(f, ch) || f->depth == 0;
    default:
        return false;
    }
}

/* One byte between messages or on a line: true when a message ends. */
static bool
message_byte(struct ng_qmp_framer *f, char ch)
{
    if (f->line)
        return ch == '\n';
    if (f->depth > 0)
        return value_byte(f, ch);
    if (f->size == 1 && (ch == '{' || ch == '['))
        push(f, ch);
    else
        f->line = true;         /* not a bracketed value */
    return false;
}

size_t
ng_qmp_framer_feed(struct ng_qmp_framer *f, const char *p, size_t n,
                   bool *end, size_t *msg_len)
{
    size_t i;

    *end = false;
    for (i = 0; i < n; i++) {
        if (f->size == 0 && is_blank(p[i]))
            continue;
        f->size++;
        if (message_byte(f, p[i])) {
            *end = true;
            *msg_len = f->size;
            f->size = f->depth = 0;
            f->in_string = f->escape = f->line = false;
            return i + 1;
        }
    }
    return n;
}
