/* server/qmp-framer.h: find where each QMP message ends in a byte stream,
 * in one pass: every byte is looked at once however it arrives (a message
 * trickled a byte per read costs what it costs in one read).
 *
 * Like QEMU's json-streamer it counts brackets outside strings and does
 * not parse: the caller hands the framed bytes to the JSON parser.  A
 * message is a bracketed value ({...} or [...]) or, for anything else, a
 * line (up to and including '\n'), which the parser then refuses with its
 * own words.  A value also ends early where it cannot go on — a closing
 * bracket of the wrong kind, a control character inside a string — so
 * broken input resynchronises instead of swallowing what follows. */
#ifndef NG_QMP_FRAMER_H
#define NG_QMP_FRAMER_H

#include <stdbool.h>
#include <stddef.h>

/* Bracket kinds are checked this deep; deeper ones are only counted (the
 * JSON parser refuses such depths anyway). */
#define NG_QMP_FRAMER_STACK 1024

struct ng_qmp_framer {
    size_t size;            /* bytes of the current message so far (0
                             * between messages: blanks are skipped) */
    size_t depth;           /* open brackets */
    bool in_string, escape;
    bool line;              /* the message is a non-JSON line */
    unsigned char square[NG_QMP_FRAMER_STACK / 8]; /* bit set: '[' */
};

/* Look at up to n bytes of p.  Returns how many were consumed; *end is
 * set when the last of them ends a message, whose length (ending there)
 * is then in *msg_len and the framer is ready for the next.  Otherwise
 * all n bytes were consumed and f->size says how long the message being
 * framed is so far. */
size_t ng_qmp_framer_feed(struct ng_qmp_framer *f, const char *p, size_t n,
                          bool *end, size_t *msg_len);

#endif
