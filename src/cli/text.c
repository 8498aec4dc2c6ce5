/* Pure text helpers of the CLI: numbers, durations, K=V, URLs, log lines, tables. */
#include "cli/cli.h"

#include "base/util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int nb_cli_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s) return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (v < min || v > max) return -1;
    *out = v;
    return 0;
}

int nb_cli_parse_duration_ms(const char *s, int64_t *out)
{
    if (!s || !*s) return -1;
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        if (*p < '0' || *p > '9') return -1;
        int64_t n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n > (INT64_MAX - 9) / 10) return -1;
            n = n * 10 + (*p++ - '0');
        }
        int64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000, p++;
        } else if (*p == 'm') {
            unit = 60 * 1000, p++;
        } else if (*p == 'h') {
            unit = 3600 * 1000, p++;
        } else if (*p == 'd') {
            unit = 86400 * 1000, p++;
        } else {
            return -1; /* a bare number has no unit: not a duration */
        }
        if (n > (INT64_MAX - total) / unit) return -1;
        total += n * unit;
    }
    *out = total;
    return 0;
}

int nb_cli_parse_since(const char *s, int64_t now_ms, int64_t *out)
{
    if (nb_cli_parse_int(s, 0, INT64_MAX, out) == 0) return 0;
    int64_t d;
    if (nb_cli_parse_duration_ms(s, &d) < 0) return -1;
    *out = d >= now_ms ? 0 : now_ms - d;
    return 0;
}

static int is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int nb_cli_parse_env(const char *s, size_t *key_len)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s) return -1;
    if (!is_alpha(s[0]) && s[0] != '_') return -1;
    for (const char *p = s; p < eq; p++)
        if (!is_alpha(*p) && !is_digit(*p) && *p != '_') return -1;
    *key_len = (size_t)(eq - s);
    return 0;
}

int nb_cli_parse_attr(const char *s, size_t *key_len)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || eq - s > 256) return -1;
    for (const char *p = s; p < eq; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f) return -1;
    *key_len = (size_t)(eq - s);
    return 0;
}

int nb_cli_format_async(nb_buf *out, const struct json_t *async)
{
    if (!json_is_object(async)) return -1;
    static const char *const keys[] = {"queued", "in_flight", "oldest_ms", "retries", "failed"};
    for (size_t i = 0; i < NB_ARRAY_LEN(keys); i++) {
        const json_t *v = json_object_get(async, keys[i]);
        const char *name = i == 2 ? "oldest" : keys[i];
        int rc;
        if (!json_is_integer(v))
            rc = nb_buf_appendf(out, "%s%s=-", i ? " " : "", name);
        else if (i == 2)
            rc = nb_buf_appendf(out, " oldest=%llds", (long long)(json_integer_value(v) / 1000));
        else
            rc = nb_buf_appendf(out, "%s%s=%lld", i ? " " : "", name,
                                (long long)json_integer_value(v));
        if (rc < 0) return -1;
    }
    return 0;
}

int nb_cli_valid_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!is_alpha(s[n]) && !is_digit(s[n]) && s[n] != '_' && s[n] != '-') return 0;
    return n >= 1 && n <= 64;
}

int nb_cli_valid_method(const char *s)
{
    if (strcmp(s, "ANY") == 0) return 1;
    size_t n = 0;
    for (; s[n]; n++)
        if (!is_alpha(s[n]) && !is_digit(s[n]) && !strchr("!#$%&'*+-.^_`|~", s[n])) return 0;
    return n >= 1 && n <= 31;
}

int nb_cli_parse_real(const char *s, double min, double max, double *out)
{
    const char *p = s;
    size_t whole = 0, frac = 0;
    while (is_digit(*p))
        p++, whole++;
    if (*p == '.') {
        p++;
        while (is_digit(*p))
            p++, frac++;
        if (frac == 0) return -1;
    }
    if (*p || whole + frac == 0 || whole > 15) return -1;
    double v = strtod(s, NULL);
    if (!(v >= min && v <= max)) return -1;
    *out = v;
    return 0;
}

int nb_cli_parse_quota(const char *s, int64_t *limit, const char **period)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || (size_t)(slash - s) > 16) return -1;
    char num[20];
    memcpy(num, s, (size_t)(slash - s));
    num[slash - s] = 0;
    if (strcmp(slash + 1, "day") == 0)
        *period = "day";
    else if (strcmp(slash + 1, "month") == 0)
        *period = "month";
    else
        return -1;
    return nb_cli_parse_int(num, 1, 1000000000000000LL, limit);
}

int nb_cli_split_list(const char *s, json_t *arr)
{
    for (;;) {
        const char *comma = strchr(s, ',');
        const char *end = comma ? comma : s + strlen(s);
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == s || json_array_append_new(arr, json_stringn(s, (size_t)(end - s))) < 0)
            return -1;
        if (!comma) return 0;
        s = comma + 1;
    }
}

int nb_cli_escape(nb_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char c = (char)*p;
        if (is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            if (nb_buf_append(out, &c, 1) < 0) return -1;
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            if (nb_buf_append(out, e, 3) < 0) return -1;
        }
    }
    return 0;
}

int nb_cli_fn_path(nb_buf *out, const char *name, const char *suffix)
{
    nb_buf_reset(out);
    if (nb_buf_appendf(out, "/v1/functions/") < 0 || nb_cli_escape(out, name) < 0) return -1;
    if (suffix && nb_buf_appendf(out, "%s", suffix) < 0) return -1;
    return 0;
}

int nb_cli_obj_path(nb_buf *out, const char *collection, const char *name, const char *suffix)
{
    nb_buf_reset(out);
    if (nb_buf_appendf(out, "/v1/%s", collection) < 0) return -1;
    if (name && (nb_buf_append(out, "/", 1) < 0 || nb_cli_escape(out, name) < 0)) return -1;
    if (suffix && nb_buf_appendf(out, "%s", suffix) < 0) return -1;
    return 0;
}

int nb_cli_logs_path(nb_buf *out, const char *name, int64_t since_ms, int follow, int64_t limit)
{
    if (nb_cli_fn_path(out, name, "/logs") < 0) return -1;
    char sep = '?';
    if (since_ms >= 0) {
        if (nb_buf_appendf(out, "%csince=%lld", sep, (long long)since_ms) < 0) return -1;
        sep = '&';
    }
    if (follow) {
        if (nb_buf_appendf(out, "%cfollow=1", sep) < 0) return -1;
        sep = '&';
    }
    if (limit > 0 && nb_buf_appendf(out, "%climit=%lld", sep, (long long)limit) < 0) return -1;
    return 0;
}

int nb_cli_listen_url(const char *listen, nb_buf *out)
{
    nb_buf_reset(out);
    while (*listen == ' ' || *listen == '\t' || *listen == '\n' || *listen == '\r')
        listen++;
    size_t n = strlen(listen);
    while (n > 0 && (listen[n - 1] == ' ' || listen[n - 1] == '\t' || listen[n - 1] == '\n' ||
                     listen[n - 1] == '\r'))
        n--;
    if (n == 0 || n > 512) return -1;
    char s[520];
    memcpy(s, listen, n);
    s[n] = 0;

    if (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0) {
        while (n > 0 && s[n - 1] == '/')
            s[--n] = 0;
        return nb_buf_appendf(out, "%s", s);
    }

    const char *host, *port;
    if (s[0] == '[') { /* [v6]:port */
        char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -1;
        *close = 0;
        host = s + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(s, ':');
        if (!colon) { /* just a port */
            host = "";
            port = s;
        } else {
            *colon = 0;
            host = s;
            port = colon + 1;
            if (strchr(host, ':')) return -1; /* bare v6 address: ambiguous, needs brackets */
        }
    }
    int64_t p;
    if (nb_cli_parse_int(port, 1, 65535, &p) < 0) return -1;
    if (host[0] == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0) host = "127.0.0.1";
    if (strcmp(host, "::") == 0) host = "::1";
    if (strchr(host, ':')) return nb_buf_appendf(out, "http://[%s]:%lld", host, (long long)p);
    return nb_buf_appendf(out, "http://%s:%lld", host, (long long)p);
}

int nb_cli_format_log(nb_buf *out, const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return -1;
    }
    char ts[32] = "-";
    json_t *v = json_object_get(j, "ts");
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        nb_time_iso8601(json_integer_value(v), ts, sizeof ts);

    char version[32] = "-";
    v = json_object_get(j, "version");
    if (json_is_integer(v))
        snprintf(version, sizeof version, "v%lld", (long long)json_integer_value(v));

    const char *inst = json_string_value(json_object_get(j, "instance"));
    const char *rid = json_string_value(json_object_get(j, "request_id"));
    const char *stream = json_string_value(json_object_get(j, "stream"));
    json_t *line = json_object_get(j, "line");
    const char *text_line = json_string_value(line);

    int rc = nb_buf_appendf(out, "%s [%s %s %s%s] ", ts, version, inst && *inst ? inst : "-",
                            rid && *rid ? rid : "-",
                            stream && strcmp(stream, "stderr") == 0 ? " stderr" : "");
    if (rc == 0 && text_line) {
        rc = nb_buf_append(out, text_line, json_string_length(line));
    } else if (rc == 0 && line) {
        char *dump = json_dumps(line, JSON_COMPACT | JSON_ENCODE_ANY);
        rc = dump ? nb_buf_appendf(out, "%s", dump) : -1;
        free(dump);
    }
    if (rc == 0) rc = nb_buf_append(out, "\n", 1);
    json_decref(j);
    return rc;
}

/* A string field, or "-" when missing or empty. */
static const char *or_dash(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

int nb_cli_format_access(nb_buf *out, const json_t *rec)
{
    if (!json_is_object(rec)) return -1;
    char ts[40] = "-", status[16] = "-", lat[32] = "-", consumer[160] = "-";
    const json_t *v = json_object_get(rec, "time");
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        nb_time_iso8601(json_integer_value(v), ts, sizeof ts);
    else if (json_is_string(v) && json_string_length(v) > 0)
        snprintf(ts, sizeof ts, "%s", json_string_value(v));
    v = json_object_get(rec, "status");
    if (json_is_integer(v))
        snprintf(status, sizeof status, "%lld", (long long)json_integer_value(v));
    v = json_object_get(rec, "latency_ms");
    if (json_is_integer(v))
        snprintf(lat, sizeof lat, "%lldms", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(lat, sizeof lat, "%.1fms", json_real_value(v));
    const char *who = json_string_value(json_object_get(rec, "consumer"));
    const char *kind = json_string_value(json_object_get(rec, "consumer_kind"));
    if (who && *who)
        snprintf(consumer, sizeof consumer, "%s%s%s", kind && *kind ? kind : "",
                 kind && *kind ? ":" : "", who);
    /* The route key is "METHOD /pattern": the pattern alone keeps one field per column. */
    const char *route = or_dash(rec, "route");
    const char *sp = strchr(route, ' ');
    if (sp && sp[1]) route = sp + 1;
    const json_t *cold = json_object_get(rec, "cold_start");
    const char *code = json_string_value(json_object_get(rec, "error_code"));
    return nb_buf_appendf(
        out, "%s %s %s %s %s %s %s %s%s%s%s\n", ts, status, or_dash(rec, "method"),
        or_dash(rec, "path"), lat, consumer, route, or_dash(rec, "request_id"),
        json_is_true(cold) || (json_is_integer(cold) && json_integer_value(cold)) ? " cold" : "",
        code && *code ? " " : "", code && *code ? code : "");
}

int nb_cli_table_init(nb_cli_table *t, size_t ncols, const char *const *header)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->widths = calloc(ncols, sizeof *t->widths);
    if (!t->widths) return -1;
    return nb_cli_table_add(t, header);
}

int nb_cli_table_add(nb_cli_table *t, const char *const *cells)
{
    char **grown = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *grown);
    if (!grown) return -1;
    t->cells = grown;
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            while (i > 0)
                free(row[--i]);
            return -1;
        }
        size_t w = strlen(row[i]);
        if (w > t->widths[i]) t->widths[i] = w;
    }
    t->nrows++;
    return 0;
}

int nb_cli_table_render(const nb_cli_table *t, nb_buf *out)
{
    for (size_t r = 0; r < t->nrows; r++) {
        char **row = t->cells + r * t->ncols;
        for (size_t c = 0; c < t->ncols; c++) {
            int last = c + 1 == t->ncols;
            if (last) {
                if (nb_buf_appendf(out, "%s\n", row[c]) < 0) return -1;
            } else if (nb_buf_appendf(out, "%-*s  ", (int)t->widths[c], row[c]) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

void nb_cli_table_free(nb_cli_table *t)
{
    if (t->cells)
        for (size_t i = 0; i < t->nrows * t->ncols; i++)
            free(t->cells[i]);
    free(t->cells);
    free(t->widths);
    memset(t, 0, sizeof *t);
}

static int in_list(const char *const *list, const char *key)
{
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0) return 1;
    return 0;
}

static int object_line(nb_buf *out, const char *key, const json_t *v, size_t width)
{
    char *dump = NULL;
    const char *val = "";
    size_t len = 0;
    if (json_is_string(v)) {
        val = json_string_value(v);
        len = json_string_length(v);
    } else if (!json_is_null(v)) {
        dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!dump) return -1;
        val = dump;
        len = strlen(dump);
    }
    int rc = nb_buf_appendf(out, "%s:", key);
    /* No trailing blanks after an empty value. */
    if (rc == 0 && len > 0) rc = nb_buf_appendf(out, "%*s", (int)(width - strlen(key) + 1), "");
    if (rc == 0) rc = nb_buf_append(out, val, len);
    if (rc == 0) rc = nb_buf_append(out, "\n", 1);
    free(dump);
    return rc;
}

int nb_cli_format_object(nb_buf *out, const struct json_t *cobj, const char *const *order)
{
    json_t *obj = (json_t *)cobj; /* jansson's getters take non-const pointers */
    if (!json_is_object(obj)) return -1;
    size_t width = 0;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strlen(key) > width) width = strlen(key);
    }
    for (const char *const *k = order; k && *k; k++) {
        v = json_object_get(obj, *k);
        if (v && object_line(out, *k, v, width) < 0) return -1;
    }
    json_object_foreach(obj, key, v)
    {
        if (in_list(order, key)) continue;
        if (object_line(out, key, v, width) < 0) return -1;
    }
    return 0;
}
