/* A C function: greets the event's "name" and counts its warm invocations.
 *
 * Build it against the SDK into a file named `bootstrap`, zip it and deploy with runtime
 * `provided`. The counter is a plain static: an instance serves one invocation at a time and
 * keeps its memory between them, so the count shows how often this instance was reused. */
#include <nimbus/function.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long calls;

/* Skips JSON whitespace. */
static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Reads the JSON string starting at the quote *p into out (raw bytes, escapes resolved as far
 * as a greeting needs: \uXXXX becomes '?' unless ASCII). Returns the byte after the closing
 * quote, or NULL if the string is not terminated. */
static const char *read_string(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    for (p++; p < end; p++) {
        char c = *p;
        if (c == '"') {
            if (out) out[n] = 0;
            return p + 1;
        }
        if (c == '\\') {
            if (++p >= end) return NULL;
            switch (*p) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u': {
                if (end - p < 5) return NULL;
                char hex[5] = {p[1], p[2], p[3], p[4], 0};
                long v = strtol(hex, NULL, 16);
                c = v > 0 && v < 0x80 ? (char)v : '?';
                p += 4;
                break;
            }
            default:
                c = *p; /* \" \\ \/ */
            }
        }
        if (out && n + 1 < cap) out[n++] = c;
    }
    return NULL;
}

/* Finds the value of a top-level key in a JSON object: a small tolerant scan, not a parser.
 * It tracks nesting so {"a":{"name":"x"}} does not match "name". Returns a pointer to the
 * value's first byte or NULL. */
static const char *find_key(const char *p, const char *end, const char *key)
{
    int depth = 0;
    bool expect_key = false;
    while ((p = ws(p, end)) < end) {
        char c = *p;
        if (c == '{' || c == '[') {
            depth++;
            expect_key = c == '{' && depth == 1;
            p++;
        } else if (c == '}' || c == ']') {
            depth--;
            p++;
        } else if (c == ',') {
            expect_key = depth == 1;
            p++;
        } else if (c == '"') {
            char name[64];
            const char *after = read_string(p, end, name, sizeof name);
            if (!after) return NULL;
            if (expect_key) {
                expect_key = false;
                after = ws(after, end);
                if (after < end && *after == ':' && strcmp(name, key) == 0)
                    return ws(after + 1, end);
            }
            p = after;
        } else {
            p++;
        }
    }
    return NULL;
}

/* Appends s to out as JSON string content (no quotes), escaping what JSON requires. */
static size_t escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        if (c == '"' || c == '\\')
            snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c < 0x20)
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else
            tmp[0] = (char)c, tmp[1] = 0;
        size_t t = strlen(tmp);
        if (n + t >= cap) break;
        memcpy(out + n, tmp, t);
        n += t;
    }
    out[n] = 0;
    return n;
}

static void hello(const void *event, size_t len, const nimbus_context *ctx, nimbus_response *resp,
                  void *user)
{
    (void)ctx;
    (void)user;
    const char *ev = event, *end = ev + len;
    calls++;
    printf("hello called %lu times\n", calls);
    fflush(stdout);

    const char *fail = find_key(ev, end, "fail");
    if (fail && end - fail >= 4 && memcmp(fail, "true", 4) == 0) {
        nimbus_response_error(resp, "HelloError", "asked to fail");
        return;
    }

    char name[256] = "world";
    const char *v = find_key(ev, end, "name");
    if (v && v < end && *v == '"') read_string(v, end, name, sizeof name);

    char esc[6 * sizeof name + 1];
    escape(esc, sizeof esc, name);
    char body[sizeof esc + 128];
    int n = snprintf(body, sizeof body,
                     "{\"message\":\"Hello, %s!\",\"count\":%lu,\"runtime\":\"c\"}", esc, calls);
    nimbus_response_set(resp, body, (size_t)n);
}

int main(void)
{
    return nimbus_run(hello, NULL) == 0 ? 0 : 1;
}
