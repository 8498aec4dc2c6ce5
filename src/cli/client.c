/* Locating the daemon and talking HTTP to it; the shared start and error paths of commands. */
#include "cli/internal.h"

#include "base/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_URL      "http://127.0.0.1:8080"
#define DEFAULT_DATA     "./nimbus-data"
#define BODY_MAX_DEFAULT (64u << 20)

/* ---- locating the daemon ---- */

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

/* Reads DATA/<name>, whitespace-trimmed; NULL when missing, empty or unreadable. */
static char *read_trimmed(const char *data, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", data, name);
    char *s = nb_read_file(path, 4096, NULL);
    if (!s) return NULL;
    size_t start = strspn(s, " \t\r\n");
    size_t n = strlen(s + start);
    while (n > 0 && strchr(" \t\r\n", s[start + n - 1]))
        n--;
    memmove(s, s + start, n);
    s[n] = 0;
    if (n == 0) {
        free(s);
        return NULL;
    }
    return s;
}

int nb_cli_conn_resolve(nb_cli_conn *c, const char *url_flag, const char *token_flag,
                        const char *data_flag)
{
    memset(c, 0, sizeof *c);
    const char *data = nonempty(data_flag);
    if (!data) data = nonempty(getenv("NIMBUS_DATA"));
    if (!data) data = DEFAULT_DATA;
    c->data = strdup(data);
    if (!c->data) goto oom;

    const char *url = nonempty(url_flag);
    c->url_source = "--url";
    if (!url) {
        url = nonempty(getenv("NIMBUS_URL"));
        c->url_source = "NIMBUS_URL";
    }
    if (url) {
        c->url = strdup(url);
        if (!c->url) goto oom;
        size_t n = strlen(c->url);
        while (n > 0 && c->url[n - 1] == '/')
            c->url[--n] = 0;
    } else {
        nb_buf b;
        nb_buf_init(&b, 1024);
        char *listen = read_trimmed(c->data, "listen");
        c->url_source = "DATA/listen";
        if (!listen || nb_cli_listen_url(listen, &b) < 0) {
            const char *env = nonempty(getenv("NIMBUS_LISTEN"));
            c->url_source = "NIMBUS_LISTEN";
            if (!env || nb_cli_listen_url(env, &b) < 0) {
                nb_buf_reset(&b);
                c->url_source = "default";
                nb_buf_appendf(&b, "%s", DEFAULT_URL);
            }
        }
        free(listen);
        c->url = nb_buf_steal(&b, NULL);
        if (!c->url) goto oom;
    }

    const char *token = nonempty(token_flag);
    c->token_source = "--token";
    if (!token) {
        token = nonempty(getenv("NIMBUS_TOKEN"));
        c->token_source = "NIMBUS_TOKEN";
    }
    if (token) {
        c->token = strdup(token);
        if (!c->token) goto oom;
    } else {
        c->token = read_trimmed(c->data, "admin.token");
        c->token_source = c->token ? "DATA/admin.token" : NULL;
    }
    return 0;
oom:
    nb_cli_conn_free(c);
    return -1;
}

void nb_cli_conn_free(nb_cli_conn *c)
{
    free(c->url);
    free(c->token);
    free(c->data);
    memset(c, 0, sizeof *c);
}

/* ---- command plumbing ---- */

int nb_cli__usage(const char *cmd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nimbus: %s: %s (see 'nimbus %s --help')\n", cmd, msg, cmd);
    return NB_CLI_USAGE;
}

int nb_cli__fail(const nb_err *err)
{
    fprintf(stderr, "nimbus: %s\n", err->msg);
    return NB_CLI_FAILED;
}

int nb_cli__begin(const nb_cli__cmd *cmd, int argc, char **argv, nb_cli_args *a)
{
    nb_err err;
    nb_err_clear(&err);
    if (nb_cli_args_parse(a, cmd->opts, cmd->nopts, argc, argv, 0, &err) < 0)
        return nb_cli__usage(cmd->name, "%s", err.msg);
    if (a->help) {
        nb_buf b;
        nb_buf_init(&b, 1u << 20);
        nb_cli_args_help(cmd->opts, cmd->nopts, cmd->name, cmd->synopsis, cmd->description, &b);
        nb_cli__write(b.data, b.len);
        nb_buf_free(&b);
        return NB_CLI_OK;
    }
    if (a->npos < cmd->min_pos) {
        /* The synopsis' first line only: diagnostics stay one line. */
        int n = (int)strcspn(cmd->synopsis, "\n");
        return nb_cli__usage(cmd->name, "missing arguments, expected %.*s", n, cmd->synopsis);
    }
    if (a->npos > cmd->max_pos)
        return nb_cli__usage(cmd->name, "unexpected argument '%s'", a->pos[cmd->max_pos]);
    return NB_CLI__CONTINUE;
}

/* ---- HTTP ---- */

int nb_cli__client_open(nb_cli__client *c, const nb_cli_globals *g, const nb_cli_args *a,
                        nb_err *err)
{
    memset(c, 0, sizeof *c);
    const char *url = nb_cli_args_get(a, "url");
    const char *token = nb_cli_args_get(a, "token");
    const char *data = nb_cli_args_get(a, "data");
    if (nb_cli_conn_resolve(&c->conn, url ? url : g->url, token ? token : g->token,
                            data ? data : g->data) < 0)
        return nb_err_set(err, 500, NB_E_INTERNAL, "out of memory");
    c->verbose = g->verbose || nb_cli_args_has(a, "verbose");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(c->curl = curl_easy_init())) {
        nb_cli_conn_free(&c->conn);
        return nb_err_set(err, 500, NB_E_INTERNAL, "cannot initialize libcurl");
    }
    if (c->verbose)
        fprintf(stderr, "nimbus: daemon %s (from %s), token %s\n", c->conn.url, c->conn.url_source,
                c->conn.token_source ? c->conn.token_source : "none");
    return 0;
}

void nb_cli__client_close(nb_cli__client *c)
{
    if (c->curl) curl_easy_cleanup(c->curl);
    nb_cli_conn_free(&c->conn);
    c->curl = NULL;
}

void nb_cli__resp_init(nb_cli__resp *r, size_t body_max)
{
    memset(r, 0, sizeof *r);
    nb_buf_init(&r->body, body_max ? body_max : BODY_MAX_DEFAULT);
    nb_buf_init(&r->line, NB_CLI_LOG_LINE_MAX);
}

void nb_cli__resp_free(nb_cli__resp *r)
{
    nb_buf_free(&r->body);
    nb_buf_free(&r->line);
}

/* Copies a header's value (trimmed) if the line is "<name>: value". */
static void take_header(const char *line, size_t len, const char *name, char *dst, size_t size)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) return;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v);
    if (vl >= size) vl = size - 1;
    memcpy(dst, v, vl);
    dst[vl] = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    nb_cli__resp *r = ud;
    size_t len = size * nmemb;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue or a redirect): forget the previous one's. */
        r->request_id[0] = r->function_error[0] = r->executed_version[0] = 0;
        const char *sp = memchr(data, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    take_header(data, len, "X-Nimbus-Request-Id", r->request_id, sizeof r->request_id);
    take_header(data, len, "X-Nimbus-Function-Error", r->function_error, sizeof r->function_error);
    take_header(data, len, "X-Nimbus-Executed-Version", r->executed_version,
                sizeof r->executed_version);
    return len;
}

/* Feeds streamed bytes to on_line, one complete line at a time. A line over the cap is
 * dropped whole (with a note) rather than cut, since half a JSON record is useless. */
static int feed_lines(nb_cli__resp *r, const char *p, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t chunk = nl ? (size_t)(nl - p) : len;
        if (!r->line_too_long && nb_buf_append(&r->line, p, chunk) < 0) {
            r->line_too_long = 1;
            nb_buf_reset(&r->line);
            fprintf(stderr, "nimbus: skipping a log line over %u bytes\n", NB_CLI_LOG_LINE_MAX);
        }
        if (!nl) return 0;
        if (!r->line_too_long) {
            size_t n = r->line.len;
            if (n > 0 && r->line.data[n - 1] == '\r') n--;
            if (n > 0 && r->on_line(r->ud, r->line.data, n) < 0) {
                r->stopped = 1;
                return -1;
            }
        }
        r->line_too_long = 0;
        nb_buf_reset(&r->line);
        p = nl + 1;
        len -= chunk + 1;
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    nb_cli__resp *r = ud;
    size_t len = size * nmemb;
    /* The status line has been seen by now (on_header): only 2xx/3xx bodies stream. */
    if (r->on_line && r->status > 0 && r->status < 400)
        return feed_lines(r, data, len) < 0 ? 0 : len;
    return nb_buf_append(&r->body, data, len) < 0 ? 0 : len;
}

/* At most ten updates a second, and the last one (100%) always. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    nb_cli__client *c = ud;
    int64_t now = nb_mono_us();
    if (ultotal <= 0 || (ulnow < ultotal && now - c->progress_shown_us < 100000)) return 0;
    if (c->progress_shown_us < 0) return 0; /* 100% already shown */
    c->progress_shown_us = ulnow == ultotal ? -1 : now;
    fprintf(stderr, "\rnimbus: %s: %.1f of %.1f MB (%d%%)%s", c->progress, (double)ulnow / 1e6,
            (double)ultotal / 1e6, (int)(ulnow * 100 / ultotal), ulnow == ultotal ? "\n" : "");
    fflush(stderr);
    return 0;
}

int nb_cli__request(nb_cli__client *c, const char *method, const char *path, const void *body,
                    size_t len, const char *content_type, nb_cli__resp *r, nb_err *err)
{
    CURL *h = c->curl;
    curl_easy_reset(h);

    nb_buf url;
    nb_buf_init(&url, 16384);
    if (nb_buf_appendf(&url, "%s%s", c->conn.url, path) < 0) {
        nb_buf_free(&url);
        return nb_err_set(err, 400, NB_E_BAD_REQUEST, "URL too long");
    }

    struct curl_slist *hdrs = NULL;
    char line[700];
    if (c->conn.token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", c->conn.token);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", content_type);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (c->header) hdrs = curl_slist_append(hdrs, c->header);
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip for big uploads */

    c->errbuf[0] = 0;
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "nimbus-cli/" NIMBUS_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The daemon is usually local: never send loopback traffic through an http_proxy. */
    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
        }
    }

    if (c->progress) {
        c->progress_shown_us = 0;
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);

    /* A last line without its newline still counts. */
    if (rc == CURLE_OK && r->on_line && r->status < 400 && r->line.len > 0 && !r->line_too_long) {
        r->on_line(r->ud, r->line.data, r->line.len);
        nb_buf_reset(&r->line);
    }

    if (c->verbose && r->status > 0)
        fprintf(stderr, "nimbus: %s %s -> %ld, request id %s\n", method, path, r->status,
                r->request_id[0] ? r->request_id : "-");

    int ret = 0;
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r->stopped)) {
        const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
            (rc == CURLE_OPERATION_TIMEDOUT && r->status == 0))
            ret = nb_err_set(err, 503, NB_E_UNAVAILABLE,
                             "cannot reach the daemon at %s: %s (is nimbus serve running?)",
                             c->conn.url, why);
        else if (rc == CURLE_WRITE_ERROR && !r->on_line)
            ret = nb_err_set(err, 413, NB_E_TOO_LARGE, "%s %s: response over %zu bytes", method,
                             path, r->body.max);
        else
            ret = nb_err_set(err, 502, NB_E_UNAVAILABLE, "%s %s%s: %s", method, c->conn.url, path,
                             why);
    }
    nb_buf_free(&url);
    return ret;
}

int nb_cli__check(const nb_cli__client *c, const nb_cli__resp *r, nb_err *err)
{
    if (r->status < 400) return 0;
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code && msg) {
        nb_err_set(err, (int)r->status, NB_E_BAD_REQUEST, "%s (%s)", msg, code);
        if (strcmp(code, "unauthorized") == 0 && !c->conn.token)
            nb_err_set(err, 401, NB_E_UNAUTHORIZED,
                       "%s (%s); no admin token found: pass --token, set NIMBUS_TOKEN, or point "
                       "--data at the daemon's data dir",
                       msg, code);
    } else {
        nb_err_set(err, (int)r->status, NB_E_BAD_REQUEST, "the daemon at %s answered HTTP %ld",
                   c->conn.url, r->status);
    }
    json_decref(j);
    return -1;
}

int nb_cli__call_json(nb_cli__client *c, const char *method, const char *path, const void *body,
                      size_t len, const char *content_type, json_t **out, nb_err *err)
{
    nb_cli__resp r;
    nb_cli__resp_init(&r, 0);
    int rc = nb_cli__request(c, method, path, body, len, content_type, &r, err);
    if (rc == 0) rc = nb_cli__check(c, &r, err);
    if (rc == 0) {
        json_error_t je;
        *out = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, &je);
        if (!*out)
            rc = nb_err_set(err, 502, NB_E_INTERNAL, "%s %s: the daemon's answer is not JSON: %s",
                            method, path, je.text);
    }
    nb_cli__resp_free(&r);
    return rc;
}

/* ---- output ---- */

void nb_cli__write(const char *s, size_t len)
{
    if (len > 0) fwrite(s, 1, len, stdout);
}

void nb_cli__print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
    }
    free(s);
}

int64_t nb_cli__int(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

const char *nb_cli__str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}
