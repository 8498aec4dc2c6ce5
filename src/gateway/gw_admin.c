/* The gateway's objects as the admin API takes them: validation of request bodies into the JSON
 * the store keeps (gw.c compiles it), and the public views of stored objects. */
#include "gateway/gw.h"

#include "auth/jwt.h"
#include "auth/secret.h"
#include "base/util.h"
#include "function/function.h"
#include "gateway/routes.h"

#include <ctype.h>
#include <math.h>
#include <sys/stat.h>
#include <string.h>
#include <strings.h>

static int bad(nb_err *err, const char *field, const char *rule)
{
    return nb_err_set(err, 400, NB_E_INVALID_VALUE, "%s: %s", field, rule);
}

static int string_array(const json_t *v, const char *field, size_t max, int nonempty, nb_err *err)
{
    if (!json_is_array(v)) return bad(err, field, "must be an array of strings");
    if (nonempty && json_array_size(v) == 0) return bad(err, field, "must not be empty");
    if (json_array_size(v) > max) return bad(err, field, "too many entries");
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 256)
            return bad(err, field, "must be an array of non-empty strings (<= 256 bytes)");
    }
    return 0;
}

static int valid_base_path(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 128 || p[0] != '/') return 0;
    if (n == 1) return 1;
    if (p[n - 1] == '/') return 0;
    for (size_t i = 1; i < n; i++) {
        char c = p[i];
        if (c == '/' && p[i - 1] == '/') return 0;
        if (!(c == '/' || c == '-' || c == '_' || c == '.' || c == '~' || (c >= 'a' && c <= 'z') ||
              (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    if (strstr(p, "/./") || strstr(p, "/../")) return 0;
    if (strcmp(p + n - 2, "/.") == 0 || (n >= 3 && strcmp(p + n - 3, "/..") == 0)) return 0;
    /* The gateway's own endpoints. */
    return strncmp(p, "/oauth2", 7) != 0 && strncmp(p, "/_nimbus", 8) != 0;
}

static int check_throttle(const json_t *t, const char *field, nb_err *err)
{
    if (json_is_null(t)) return 0;
    static const char *const fields[] = {"rate", "burst", NULL};
    if (!json_is_object(t) || nb_json_known_fields(t, fields, err) < 0)
        return err->status ? -1 : bad(err, field, "must be an object {rate, burst} or null");
    const json_t *r = json_object_get(t, "rate"), *b = json_object_get(t, "burst");
    if (!json_is_number(r) || json_number_value(r) <= 0 || json_number_value(r) > 1e6)
        return bad(err, field, "rate must be a number of requests per second in (0, 1000000]");
    if (b && (!json_is_integer(b) || json_integer_value(b) < 1 || json_integer_value(b) > 1000000))
        return bad(err, field, "burst must be an integer in 1..1000000");
    return 0;
}

/* Fills a missing burst from the rate (one second's worth, at least 1). */
static void default_burst(json_t *t)
{
    if (!json_is_object(t) || json_object_get(t, "burst")) return;
    double r = json_number_value(json_object_get(t, "rate"));
    json_object_set_new(t, "burst", json_integer(r < 1 ? 1 : (json_int_t)ceil(r)));
}

static int check_cors(json_t *c, nb_err *err)
{
    static const char *const fields[] = {"origins",     "methods", "headers", "expose_headers",
                                         "credentials", "max_age", NULL};
    if (!json_is_object(c)) return bad(err, "cors", "must be an object or null");
    if (nb_json_known_fields(c, fields, err) < 0) return -1;
    if (string_array(json_object_get(c, "origins"), "cors.origins", 64, 1, err) < 0) return -1;
    size_t i;
    json_t *o;
    int star = 0;
    json_array_foreach(json_object_get(c, "origins"), i, o)
    {
        const char *s = json_string_value(o);
        if (strcmp(s, "*") == 0) {
            star = 1;
            continue;
        }
        const char *sep = strstr(s, "://");
        if (!sep || sep == s || !sep[3] || strchr(sep + 3, '/') ||
            (strchr(sep + 3, '*') && strncmp(sep + 3, "*.", 2) != 0) || strchr(sep + 4, '*'))
            return bad(err, "cors.origins",
                       "each origin is '*', scheme://host[:port] or scheme://*.domain");
    }
    if (!json_object_get(c, "methods"))
        json_object_set_new(
            c, "methods",
            json_pack("[s,s,s,s,s,s]", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"));
    if (string_array(json_object_get(c, "methods"), "cors.methods", 16, 1, err) < 0) return -1;
    json_array_foreach(json_object_get(c, "methods"), i, o)
    {
        const char *m = json_string_value(o);
        for (const char *p = m; *p; p++)
            if (!((*p >= 'A' && *p <= 'Z') || *p == '*'))
                return bad(err, "cors.methods", "methods are upper-case tokens such as GET");
    }
    if (!json_object_get(c, "headers")) json_object_set_new(c, "headers", json_array());
    if (!json_object_get(c, "expose_headers"))
        json_object_set_new(c, "expose_headers", json_array());
    if (string_array(json_object_get(c, "headers"), "cors.headers", 64, 0, err) < 0 ||
        string_array(json_object_get(c, "expose_headers"), "cors.expose_headers", 64, 0, err) < 0)
        return -1;
    const json_t *cr = json_object_get(c, "credentials");
    if (cr && !json_is_boolean(cr)) return bad(err, "cors.credentials", "must be a boolean");
    if (json_is_true(cr) && star)
        return bad(err, "cors.credentials",
                   "browsers refuse credentials with the '*' origin: list the origins");
    const json_t *ma = json_object_get(c, "max_age");
    if (ma &&
        (!json_is_integer(ma) || json_integer_value(ma) < 0 || json_integer_value(ma) > 86400))
        return bad(err, "cors.max_age", "must be an integer in 0..86400 (seconds)");
    return 0;
}

static int check_jwt(json_t *j, nb_err *err)
{
    static const char *const fields[] = {"issuer",    "audiences", "algorithms",
                                         "jwks_file", "keys",      NULL};
    if (!json_is_object(j)) return bad(err, "jwt", "must be an object or null");
    if (nb_json_known_fields(j, fields, err) < 0) return -1;
    const json_t *iss = json_object_get(j, "issuer");
    if (iss && !json_is_string(iss)) return bad(err, "jwt.issuer", "must be a string");
    if (json_object_get(j, "audiences") &&
        string_array(json_object_get(j, "audiences"), "jwt.audiences", 16, 0, err) < 0)
        return -1;
    if (!json_object_get(j, "algorithms"))
        json_object_set_new(j, "algorithms", json_pack("[s,s]", "RS256", "ES256"));
    if (string_array(json_object_get(j, "algorithms"), "jwt.algorithms", 3, 1, err) < 0) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "algorithms"), i, v)
    {
        const char *a = json_string_value(v);
        if (strcmp(a, "HS256") != 0 && strcmp(a, "RS256") != 0 && strcmp(a, "ES256") != 0)
            return bad(err, "jwt.algorithms", "each is one of HS256, RS256, ES256");
    }
    /* The keys are loaded now, so a bad key or JWKS file is refused here rather than found
     * by the first request. */
    nb_jwt_keyset *ks = nb_jwt_keyset_new();
    int rc = 0;
    const json_t *file = json_object_get(j, "jwks_file");
    if (file) {
        if (!json_is_string(file) || json_string_value(file)[0] != '/') {
            rc = bad(err, "jwt.jwks_file", "must be an absolute path");
        } else {
            size_t len;
            struct stat st;
            char *text = NULL;
            if (stat(json_string_value(file), &st) < 0 || !S_ISREG(st.st_mode))
                rc = bad(err, "jwt.jwks_file", "must be a regular file the daemon can read");
            else if (!(text = nb_read_file(json_string_value(file), 1 << 20, &len)))
                rc = bad(err, "jwt.jwks_file", "cannot be read by the daemon");
            else if (nb_jwt_keyset_add_jwks(ks, text, len, err) < 0)
                rc = nb_err_prefix(err, "jwt.jwks_file");
            free(text);
        }
    }
    const json_t *keys = json_object_get(j, "keys");
    if (rc == 0 && keys && !json_is_array(keys)) rc = bad(err, "jwt.keys", "must be an array");
    json_array_foreach(keys, i, v)
    {
        if (rc < 0) break;
        static const char *const kf[] = {"kid", "secret", "pem", NULL};
        const char *secret = json_string_value(json_object_get(v, "secret"));
        const char *pem = json_string_value(json_object_get(v, "pem"));
        const char *kid = json_string_value(json_object_get(v, "kid"));
        if (!json_is_object(v) || nb_json_known_fields(v, kf, err) < 0 || (!secret == !pem)) {
            rc = err->status ? -1
                             : bad(err, "jwt.keys", "each key is {kid?, secret} or {kid?, pem}");
            break;
        }
        rc = secret ? nb_jwt_keyset_add_hmac(ks, kid, secret, strlen(secret), err)
                    : nb_jwt_keyset_add_pem(ks, kid, pem, strlen(pem), err);
        if (rc < 0) nb_err_prefix(err, "jwt.keys");
    }
    if (rc == 0 && nb_jwt_keyset_size(ks) == 0)
        rc = bad(err, "jwt", "needs keys: jwks_file or keys");
    nb_jwt_keyset_free(ks);
    return rc;
}

json_t *nb_gw_admin_api(const char *name, const json_t *in, const json_t *cur, nb_err *err)
{
    static const char *const fields[] = {"base_path", "cors", "jwt", "throttle", "plan", NULL};
    if (!nb_fn_valid_name(name)) {
        nb_err_set(err, 400, NB_E_INVALID_NAME,
                   "invalid API name: names match [A-Za-z0-9_-]{1,64}");
        return NULL;
    }
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    json_t *o = cur ? json_deep_copy(cur) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) json_object_set_new(o, k, json_deep_copy(v));
    const json_t *bp = json_object_get(o, "base_path");
    if (!bp) json_object_set_new(o, "base_path", json_sprintf("/%s", name));
    bp = json_object_get(o, "base_path");
    int rc = 0;
    if (!json_is_string(bp) || !valid_base_path(json_string_value(bp)))
        rc = bad(err, "base_path",
                 "must be '/' or /segments of letters, digits and -_.~ without a trailing '/'");
    json_t *c = json_object_get(o, "cors");
    if (rc == 0 && c && !json_is_null(c)) rc = check_cors(c, err);
    json_t *j = json_object_get(o, "jwt");
    if (rc == 0 && j && !json_is_null(j)) rc = check_jwt(j, err);
    json_t *t = json_object_get(o, "throttle");
    if (rc == 0 && t) rc = check_throttle(t, "throttle", err);
    default_burst(t);
    const json_t *p = json_object_get(o, "plan");
    if (rc == 0 && p && !json_is_null(p) &&
        !(json_is_string(p) && nb_fn_valid_name(json_string_value(p))))
        rc = bad(err, "plan", "must be a plan name or null");
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* RFC 6749 scope tokens (%x21 / %x23-5B / %x5D-7E) separated by spaces: they end up in
 * WWW-Authenticate headers. */
static int valid_scopes(const json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) > 500) return 0;
    for (const char *p = json_string_value(v); *p; p++)
        if (!(*p == ' ' || *p == 0x21 || (*p >= 0x23 && *p <= 0x5B) || (*p >= 0x5D && *p <= 0x7E)))
            return 0;
    return 1;
}

json_t *nb_gw_admin_route(const json_t *in, nb_err *err)
{
    static const char *const fields[] = {"method", "path",     "function", "auth", "timeout_ms",
                                         "scopes", "throttle", "log_body", NULL};
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    json_t *o = json_deep_copy(in);
    const char *method = json_string_value(json_object_get(o, "method"));
    const char *path = json_string_value(json_object_get(o, "path"));
    const char *fn = json_string_value(json_object_get(o, "function"));
    int rc = 0;
    if (!method || !path) {
        rc = bad(err, "method/path", "both are required strings");
    } else {
        char up[32];
        snprintf(up, sizeof up, "%s", method);
        for (char *c = up; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        json_object_set_new(o, "method", json_string(up));
        rc = nb_rt_check(up, path, err);
    }
    if (rc == 0 && (!fn || !nb_fn_valid_name(fn)))
        rc = bad(err, "function", "must be a function name ([A-Za-z0-9_-]{1,64})");
    const json_t *auth = json_object_get(o, "auth");
    if (!auth) json_object_set_new(o, "auth", json_string("none"));
    auth = json_object_get(o, "auth");
    const char *as = json_string_value(auth);
    if (rc == 0 && (!as || (strcmp(as, "none") && strcmp(as, "key") && strcmp(as, "client") &&
                            strcmp(as, "jwt"))))
        rc = bad(err, "auth", "must be none, key, client or jwt");
    const json_t *to = json_object_get(o, "timeout_ms");
    if (!to) json_object_set_new(o, "timeout_ms", json_integer(30000));
    to = json_object_get(o, "timeout_ms");
    if (rc == 0 &&
        (!json_is_integer(to) || json_integer_value(to) < 50 || json_integer_value(to) > 900000))
        rc = bad(err, "timeout_ms", "must be an integer in 50..900000");
    const json_t *sc = json_object_get(o, "scopes");
    if (rc == 0 && sc && !valid_scopes(sc))
        rc = bad(err, "scopes", "must be space-separated scope tokens (<= 500 bytes, no quotes)");
    json_t *t = json_object_get(o, "throttle");
    if (rc == 0 && t) rc = check_throttle(t, "throttle", err);
    default_burst(t);
    const json_t *lb = json_object_get(o, "log_body");
    if (rc == 0 && lb && !json_is_null(lb)) {
        static const char *const lf[] = {"max_bytes", "sample", NULL};
        const json_t *mb = json_object_get(lb, "max_bytes"), *sa = json_object_get(lb, "sample");
        if (!json_is_object(lb) || nb_json_known_fields(lb, lf, err) < 0)
            rc = err->status ? -1 : bad(err, "log_body", "must be {max_bytes, sample}");
        else if (!json_is_integer(mb) || json_integer_value(mb) < 1 ||
                 json_integer_value(mb) > 65536)
            rc = bad(err, "log_body.max_bytes", "must be an integer in 1..65536");
        else if (sa &&
                 (!json_is_number(sa) || json_number_value(sa) < 0 || json_number_value(sa) > 1))
            rc = bad(err, "log_body.sample", "must be a number in 0..1");
    }
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *nb_gw_admin_plan(const json_t *in, const json_t *cur, nb_err *err)
{
    static const char *const fields[] = {"rate", "burst", "quota", NULL};
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    json_t *o = cur ? json_deep_copy(cur) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) json_object_set_new(o, k, json_deep_copy(v));
    int rc = 0;
    const json_t *r = json_object_get(o, "rate");
    if (json_is_null(r)) {
        /* No rate any more: its burst goes with it. */
        json_object_del(o, "rate");
        json_object_del(o, "burst");
        r = NULL;
    }
    if (json_is_null(json_object_get(o, "quota"))) json_object_del(o, "quota");
    if (r && !json_is_null(r)) {
        json_t *t = json_pack("{s:O}", "rate", r);
        if (json_object_get(o, "burst")) json_object_set(t, "burst", json_object_get(o, "burst"));
        rc = check_throttle(t, "plan", err);
        default_burst(t);
        json_object_set(o, "burst", json_object_get(t, "burst"));
        json_decref(t);
    } else if (json_object_get(o, "burst")) {
        rc = bad(err, "burst", "needs a rate");
    }
    const json_t *q = json_object_get(o, "quota");
    if (rc == 0 && q && !json_is_null(q)) {
        static const char *const qf[] = {"limit", "period", NULL};
        const json_t *l = json_object_get(q, "limit");
        const char *p = json_string_value(json_object_get(q, "period"));
        if (!json_is_object(q) || nb_json_known_fields(q, qf, err) < 0)
            rc = err->status ? -1 : bad(err, "quota", "must be {limit, period}");
        else if (!json_is_integer(l) || json_integer_value(l) < 1)
            rc = bad(err, "quota.limit", "must be a positive integer");
        else if (!p || (strcmp(p, "day") && strcmp(p, "month")))
            rc = bad(err, "quota.period", "must be day or month");
    }
    if (rc == 0 && !json_object_get(o, "rate") && !json_object_get(o, "quota"))
        rc = bad(err, "plan", "needs a rate, a quota or both");
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Keys and clients share the fields plan and enabled; rotate is the admin API's own flag. */
static json_t *cred_common(const json_t *in, const json_t *cur, const char *const *fields,
                           nb_err *err)
{
    if (nb_json_known_fields(in, fields, err) < 0) return NULL;
    json_t *o = cur ? json_deep_copy(cur) : json_object();
    const json_t *p = json_object_get(in, "plan"), *e = json_object_get(in, "enabled");
    if (p && !json_is_null(p) && !(json_is_string(p) && nb_fn_valid_name(json_string_value(p)))) {
        bad(err, "plan", "must be a plan name or null");
        json_decref(o);
        return NULL;
    }
    if (e && !json_is_boolean(e)) {
        bad(err, "enabled", "must be a boolean");
        json_decref(o);
        return NULL;
    }
    if (p) json_object_set_new(o, "plan", json_copy((json_t *)p));
    if (e) json_object_set_new(o, "enabled", json_copy((json_t *)e));
    if (!json_object_get(o, "enabled")) json_object_set_new(o, "enabled", json_true());
    return o;
}

json_t *nb_gw_admin_key(const json_t *in, const json_t *cur, char *out_secret, size_t size,
                        nb_err *err)
{
    static const char *const fields[] = {"name", "plan", "enabled", "rotate", NULL};
    json_t *o = cred_common(in, cur, fields, err);
    if (!o) return NULL;
    out_secret[0] = 0;
    if (!cur || json_is_true(json_object_get(in, "rotate"))) {
        char rnd[64];
        nb_secret_random(rnd, sizeof rnd, 32);
        snprintf(out_secret, size, "nbk_%s", rnd);
        char h[NB_SECRET_HASH_HEX];
        nb_secret_hash(out_secret, strlen(out_secret), h);
        json_object_set_new(o, "hash", json_string(h));
        json_object_set_new(o, "prefix", json_stringn(out_secret, 10));
    }
    return o;
}

json_t *nb_gw_admin_client(const json_t *in, const json_t *cur, char *out_secret, size_t size,
                           nb_err *err)
{
    static const char *const fields[] = {"name", "plan", "enabled", "scopes", "rotate", NULL};
    json_t *o = cred_common(in, cur, fields, err);
    if (!o) return NULL;
    const json_t *sc = json_object_get(in, "scopes");
    if (sc && !valid_scopes(sc)) {
        bad(err, "scopes", "must be space-separated scope tokens (<= 500 bytes, no quotes)");
        json_decref(o);
        return NULL;
    }
    if (sc) json_object_set_new(o, "scopes", json_copy((json_t *)sc));
    if (!json_object_get(o, "scopes")) json_object_set_new(o, "scopes", json_string(""));
    out_secret[0] = 0;
    if (!cur) {
        char rnd[32];
        nb_secret_random(rnd, sizeof rnd, 12);
        json_object_set_new(o, "client_id", json_sprintf("nbc_%s", rnd));
    }
    if (!cur || json_is_true(json_object_get(in, "rotate"))) {
        char rnd[64];
        nb_secret_random(rnd, sizeof rnd, 32);
        snprintf(out_secret, size, "nbs_%s", rnd);
        char h[NB_SECRET_HASH_HEX];
        nb_secret_hash(out_secret, strlen(out_secret), h);
        json_object_set_new(o, "hash", json_string(h));
        /* Tokens carry the generation: a rotation revokes the tokens issued before it. */
        json_object_set_new(o, "gen",
                            json_integer(json_integer_value(json_object_get(o, "gen")) + 1));
    }
    return o;
}

json_t *nb_gw_admin_view(const char *kind, const char *name, const json_t *body, int64_t created,
                         int64_t updated)
{
    json_t *o = json_deep_copy(body);
    json_object_del(o, "hash");
    json_object_del(o, "gen");
    /* An authorizer's HMAC secrets are credentials: never shown back. */
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(json_object_get(o, "jwt"), "keys"), i, k)
    {
        if (json_object_get(k, "secret")) json_object_set_new(k, "secret", json_string("(hidden)"));
    }
    if (strcmp(kind, "route") != 0 && strcmp(kind, "share") != 0)
        json_object_set_new(o, "name", json_string(name));
    char t[32];
    nb_time_iso8601(created, t, sizeof t);
    json_object_set_new(o, "created_at", json_string(t));
    nb_time_iso8601(updated, t, sizeof t);
    json_object_set_new(o, "updated_at", json_string(t));
    return o;
}
