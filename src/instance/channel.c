#include "instance/channel.h"

#include <string.h>

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct reader {
    const unsigned char *p;
    size_t left;
} reader;

static int rd_str(reader *r, nb_chan_str *s)
{
    if (r->left < 2) return -1;
    size_t n = (size_t)r->p[0] | (size_t)r->p[1] << 8;
    if (r->left - 2 < n) return -1;
    s->p = (const char *)r->p + 2;
    s->len = n;
    r->p += 2 + n;
    r->left -= 2 + n;
    return 0;
}

static void rd_rest(reader *r, nb_chan_str *s)
{
    s->p = (const char *)r->p;
    s->len = r->left;
    r->p += r->left;
    r->left = 0;
}

long nb_chan_decode(const void *buf, size_t len, nb_chan_msg *msg)
{
    const unsigned char *b = buf;
    if (len < 4) return 0;
    uint32_t flen = rd32(b);
    if (flen == 0 || flen > NB_CHAN_MAX_FRAME) return -1;
    if (len - 4 < flen) return 0;
    memset(msg, 0, sizeof *msg);
    msg->type = (enum nb_chan_type)b[4];
    reader r = {b + 5, flen - 1};
    switch (msg->type) {
    case NB_CHAN_READY:
        if (r.left) return -1;
        break;
    case NB_CHAN_INVOKE:
        if (r.left < 8) return -1;
        for (int i = 7; i >= 0; i--)
            msg->deadline_ms = msg->deadline_ms << 8 | r.p[i];
        r.p += 8;
        r.left -= 8;
        if (rd_str(&r, &msg->request_id) < 0 || rd_str(&r, &msg->function_arn) < 0 ||
            rd_str(&r, &msg->trace_id) < 0 || rd_str(&r, &msg->client_context) < 0)
            return -1;
        rd_rest(&r, &msg->body);
        break;
    case NB_CHAN_RESPONSE:
        if (rd_str(&r, &msg->request_id) < 0) return -1;
        rd_rest(&r, &msg->body);
        break;
    case NB_CHAN_ERROR:
    case NB_CHAN_FATAL_ERROR:
        if (rd_str(&r, &msg->request_id) < 0 || rd_str(&r, &msg->error_type) < 0) return -1;
        rd_rest(&r, &msg->body);
        break;
    case NB_CHAN_INIT_ERROR:
        if (rd_str(&r, &msg->error_type) < 0) return -1;
        rd_rest(&r, &msg->body);
        break;
    case NB_CHAN_CALL:
        if (r.left < 4) return -1;
        msg->call_id = rd32(r.p);
        r.p += 4;
        r.left -= 4;
        if (rd_str(&r, &msg->op) < 0 || rd_str(&r, &msg->target) < 0 || rd_str(&r, &msg->attrs) < 0)
            return -1;
        rd_rest(&r, &msg->body);
        break;
    case NB_CHAN_CALL_RESULT:
        if (r.left < 6) return -1;
        msg->call_id = rd32(r.p);
        msg->status = (uint16_t)(r.p[4] | r.p[5] << 8);
        r.p += 6;
        r.left -= 6;
        if (rd_str(&r, &msg->error_code) < 0) return -1;
        rd_rest(&r, &msg->body);
        break;
    default:
        return -1;
    }
    return (long)flen + 4;
}

static int put_str(nb_buf *out, nb_chan_str s)
{
    if (s.len > 0xffff) return -1;
    unsigned char h[2] = {(unsigned char)s.len, (unsigned char)(s.len >> 8)};
    if (nb_buf_append(out, h, 2) < 0) return -1;
    return nb_buf_append(out, s.p, s.len);
}

int nb_chan_encode(nb_buf *out, const nb_chan_msg *m)
{
    size_t start = out->len;
    unsigned char hdr[5] = {0, 0, 0, 0, (unsigned char)m->type};
    if (nb_buf_append(out, hdr, 5) < 0) return -1;
    int rc = 0;
    switch (m->type) {
    case NB_CHAN_READY:
        break;
    case NB_CHAN_INVOKE: {
        unsigned char d[8];
        for (int i = 0; i < 8; i++)
            d[i] = (unsigned char)(m->deadline_ms >> (8 * i));
        rc = nb_buf_append(out, d, 8);
        if (rc == 0) rc = put_str(out, m->request_id);
        if (rc == 0) rc = put_str(out, m->function_arn);
        if (rc == 0) rc = put_str(out, m->trace_id);
        if (rc == 0) rc = put_str(out, m->client_context);
        break;
    }
    case NB_CHAN_RESPONSE:
        rc = put_str(out, m->request_id);
        break;
    case NB_CHAN_ERROR:
    case NB_CHAN_FATAL_ERROR:
        rc = put_str(out, m->request_id);
        if (rc == 0) rc = put_str(out, m->error_type);
        break;
    case NB_CHAN_INIT_ERROR:
        rc = put_str(out, m->error_type);
        break;
    case NB_CHAN_CALL: {
        unsigned char d[4];
        for (int i = 0; i < 4; i++)
            d[i] = (unsigned char)(m->call_id >> (8 * i));
        rc = nb_buf_append(out, d, 4);
        if (rc == 0) rc = put_str(out, m->op);
        if (rc == 0) rc = put_str(out, m->target);
        if (rc == 0) rc = put_str(out, m->attrs);
        break;
    }
    case NB_CHAN_CALL_RESULT: {
        unsigned char d[6];
        for (int i = 0; i < 4; i++)
            d[i] = (unsigned char)(m->call_id >> (8 * i));
        d[4] = (unsigned char)m->status;
        d[5] = (unsigned char)(m->status >> 8);
        rc = nb_buf_append(out, d, 6);
        if (rc == 0) rc = put_str(out, m->error_code);
        break;
    }
    default:
        rc = -1;
    }
    if (rc == 0 && m->type != NB_CHAN_READY) rc = nb_buf_append(out, m->body.p, m->body.len);
    size_t flen = out->len - start - 4;
    if (rc < 0 || flen > NB_CHAN_MAX_FRAME) {
        out->len = start;
        return -1;
    }
    unsigned char *h = (unsigned char *)out->data + start;
    for (int i = 0; i < 4; i++)
        h[i] = (unsigned char)(flen >> (8 * i));
    return 0;
}
