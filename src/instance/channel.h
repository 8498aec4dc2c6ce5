/* nb_chan: codec of the native instance channel (docs/internals/channel.md).
 *
 * Pure functions over byte buffers: no I/O, no allocation except into the caller's nb_buf.
 * Decoded strings point into the input buffer and live as long as it does. */
#ifndef NB_CHANNEL_H
#define NB_CHANNEL_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

#define NB_CHAN_MAX_FRAME ((6u << 20) + (64u << 10))

enum nb_chan_type {
    NB_CHAN_READY = 1,
    NB_CHAN_INVOKE = 2,
    NB_CHAN_RESPONSE = 3,
    NB_CHAN_ERROR = 4,
    NB_CHAN_INIT_ERROR = 5,
    NB_CHAN_FATAL_ERROR = 6, /* ERROR, and the runtime exits right after it */
    NB_CHAN_CALL = 7,        /* a running function asks the platform (docs/internals/calls.md) */
    NB_CHAN_CALL_RESULT = 8, /* the answer to one CALL */
};

typedef struct nb_chan_str {
    const char *p;
    size_t len;
} nb_chan_str;

typedef struct nb_chan_msg {
    enum nb_chan_type type;
    uint64_t deadline_ms;     /* INVOKE */
    nb_chan_str request_id;   /* INVOKE, RESPONSE, ERROR, FATAL_ERROR */
    nb_chan_str function_arn; /* INVOKE */
    nb_chan_str trace_id;     /* INVOKE */
    nb_chan_str client_context;
    nb_chan_str error_type; /* ERROR, INIT_ERROR */
    uint32_t call_id;       /* CALL, CALL_RESULT: chosen by the runtime, echoed */
    uint16_t status;        /* CALL_RESULT: 200/202 done, 4xx/5xx refused */
    nb_chan_str op;         /* CALL: invoke, invoke_async, send, publish, emit */
    nb_chan_str target;     /* CALL: function, queue or topic name ("" for emit) */
    nb_chan_str attrs;      /* CALL: JSON object text or empty */
    nb_chan_str error_code; /* CALL_RESULT: "" ok; Unhandled/Handled (callee failed), or why */
    /* INVOKE event, RESPONSE result, ERROR/INIT_ERROR error JSON, CALL payload, CALL_RESULT
     * result or error JSON */
    nb_chan_str body;
} nb_chan_msg;

/* Parses one frame at the start of buf. Returns the frame's total size (> 0), 0 when more
 * bytes are needed, or -1 when the bytes can never form a valid frame. */
long nb_chan_decode(const void *buf, size_t len, nb_chan_msg *msg);

/* Appends one encoded frame for msg to out. -1 when a field is too long or out is full. */
int nb_chan_encode(nb_buf *out, const nb_chan_msg *msg);

#endif
