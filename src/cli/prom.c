#include "cli/prom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* A name at *p (bounded by end) into out; advances *p. */
static int read_name(const char **p, const char *end, char *out, size_t size)
{
    const char *s = *p;
    if (s >= end || !name_start(*s)) return -1;
    size_t n = 0;
    while (s < end && name_char(*s)) {
        if (n + 1 >= size) return -1;
        out[n++] = *s++;
    }
    out[n] = 0;
    *p = s;
    return 0;
}

static void skip_blanks(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t'))
        (*p)++;
}

/* "...", escapes undone, into out; *p after the closing quote. */
static int read_quoted(const char **p, const char *end, char *out, size_t size)
{
    const char *s = *p;
    if (s >= end || *s != '"') return -1;
    s++;
    size_t n = 0;
    while (s < end && *s != '"') {
        char c = *s++;
        if (c == '\\') {
            if (s >= end) return -1;
            c = *s++;
            if (c == 'n')
                c = '\n';
            else if (c != '\\' && c != '"')
                return -1;
        }
        if (n + 1 >= size) return -1;
        out[n++] = c;
    }
    if (s >= end) return -1;
    out[n] = 0;
    *p = s + 1;
    return 0;
}

static int read_value(const char **p, const char *end, double *out)
{
    char buf[64];
    const char *s = *p;
    size_t n = 0;
    while (s < end && *s != ' ' && *s != '\t') {
        if (n + 1 >= sizeof buf) return -1;
        buf[n++] = *s++;
    }
    buf[n] = 0;
    if (n == 0) return -1;
    if (strcmp(buf, "+Inf") == 0 || strcmp(buf, "Inf") == 0) {
        *out = INFINITY;
    } else if (strcmp(buf, "-Inf") == 0) {
        *out = -INFINITY;
    } else if (strcmp(buf, "NaN") == 0) {
        *out = NAN;
    } else {
        char *e;
        *out = strtod(buf, &e);
        if (*e || e == buf) return -1;
    }
    *p = s;
    return 0;
}

int nb_prom_parse_line(const char *line, size_t len, nb_prom_sample *out)
{
    const char *p = line, *end = line + len;
    skip_blanks(&p, end);
    if (p == end || *p == '#') return 0;
    memset(out, 0, sizeof *out);
    if (read_name(&p, end, out->name, sizeof out->name) < 0) return -1;
    if (p < end && *p == '{') {
        p++;
        for (;;) {
            skip_blanks(&p, end);
            if (p < end && *p == '}') {
                p++;
                break;
            }
            if (out->nlabels == NB_PROM_MAX_LABELS) return -1;
            int i = out->nlabels;
            if (read_name(&p, end, out->label_names[i], NB_PROM_NAME_MAX) < 0) return -1;
            skip_blanks(&p, end);
            if (p >= end || *p++ != '=') return -1;
            skip_blanks(&p, end);
            if (read_quoted(&p, end, out->label_values[i], NB_PROM_VALUE_MAX) < 0) return -1;
            out->nlabels++;
            skip_blanks(&p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return -1;
        }
    }
    if (p >= end || (*p != ' ' && *p != '\t')) return -1;
    skip_blanks(&p, end);
    if (read_value(&p, end, &out->value) < 0) return -1;
    skip_blanks(&p, end);
    if (p < end) { /* a timestamp: digits, maybe signed */
        const char *t = p;
        if (*t == '-') t++;
        if (t == end) return -1;
        while (t < end && *t >= '0' && *t <= '9')
            t++;
        skip_blanks(&t, end);
        if (t != end) return -1;
    }
    return 1;
}

const char *nb_prom_label(const nb_prom_sample *s, const char *name)
{
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->label_names[i], name) == 0) return s->label_values[i];
    return NULL;
}
