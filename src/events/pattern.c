#include "events/pattern.h"

#include "base/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The pattern is compiled into its own tree rather than kept as a json_t: matching then never
 * touches jansson's reference counts or lookup tables of the pattern, which is what makes a
 * compiled pattern safe to share between threads, and every operator is decoded once. */

typedef struct num {
    int is_int; /* integers compare exactly; anything else as doubles */
    json_int_t i;
    double d;
} num;

typedef enum lit_type { L_STR, L_NUM, L_BOOL, L_NULL } lit_type;

typedef struct lit {
    lit_type t;
    char *s; /* L_STR, and the argument of prefix/suffix/equals-ignore-case */
    size_t len;
    num n;
    int b;
} lit;

typedef enum mkind {
    M_LIT,
    M_PREFIX,
    M_SUFFIX,
    M_EQIC,
    M_NOT_VALUES,
    M_NOT_PREFIX,
    M_NOT_SUFFIX,
    M_NUMERIC,
    M_EXISTS,
} mkind;

typedef enum op { OP_EQ, OP_LT, OP_LE, OP_GT, OP_GE } op;

typedef struct matcher {
    mkind kind;
    lit v;     /* M_LIT, string-argument kinds, M_EXISTS (v.b) */
    lit *vals; /* M_NOT_VALUES */
    size_t nvals;
    int nops; /* M_NUMERIC: 1 or 2 comparisons */
    op ops[2];
    num bound[2];
} matcher;

typedef struct node {
    char *key;
    int leaf;
    struct node *kids; /* !leaf */
    size_t nkids;
    matcher *m; /* leaf */
    size_t nm;
} node;

struct nb_pat {
    node root;
};

/* ---- compiling ---- */

typedef struct cctx {
    nb_err *err;
    const char *what; /* "pattern" or "filter policy", the first word of every message */
    int policy;
    int nmatchers;
    char path[256]; /* where we are, for messages: detail.state[2] */
    size_t plen;
} cctx;

static int fail(cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(cctx *c, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nb_err_set(c->err, 400, NB_E_INVALID_VALUE, "%s: %s%s%s", c->what, c->path,
                      c->plen ? ": " : "", msg);
}

/* Appends to the path; returns the old length for path_pop. A long path is cut, which only
 * shortens messages. */
static size_t path_push(cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(cctx *c, const char *fmt, ...)
{
    size_t old = c->plen;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + c->plen, sizeof c->path - c->plen, fmt, ap);
    va_end(ap);
    if (n > 0) c->plen += (size_t)n;
    if (c->plen >= sizeof c->path) c->plen = sizeof c->path - 1;
    return old;
}

static void path_pop(cctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = 0;
}

static num num_of(const json_t *v)
{
    num n = {0};
    if (json_is_integer(v)) {
        n.is_int = 1;
        n.i = json_integer_value(v);
    } else {
        n.d = json_real_value(v);
    }
    return n;
}

static char *dupn(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (!p) abort();
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

static int count_matcher(cctx *c)
{
    if (++c->nmatchers > NB_PAT_MAX_MATCHERS)
        return fail(c, "more than %d matchers in all", NB_PAT_MAX_MATCHERS);
    return 0;
}

/* A scalar value into a literal; -1 when v is not a scalar. */
static int compile_lit(cctx *c, const json_t *v, lit *out)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        out->t = L_STR;
        out->len = json_string_length(v);
        out->s = dupn(json_string_value(v), out->len);
        return 0;
    case JSON_INTEGER:
    case JSON_REAL:
        out->t = L_NUM;
        out->n = num_of(v);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        out->t = L_BOOL;
        out->b = json_is_true(v);
        return 0;
    case JSON_NULL:
        out->t = L_NULL;
        return 0;
    default:
        return fail(c, "%s is not a matcher", nb_json_kind(v));
    }
}

static int compile_string_arg(cctx *c, const char *opname, const json_t *v, lit *out)
{
    if (!json_is_string(v)) return fail(c, "%s needs a string, not %s", opname, nb_json_kind(v));
    out->t = L_STR;
    out->len = json_string_length(v);
    out->s = dupn(json_string_value(v), out->len);
    return 0;
}

static int parse_op(const char *s, op *out)
{
    static const struct {
        const char *name;
        op o;
    } ops[] = {{"=", OP_EQ}, {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT}, {">=", OP_GE}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(s, ops[i].name) == 0) {
            *out = ops[i].o;
            return 0;
        }
    return -1;
}

static int compile_numeric(cctx *c, const json_t *v, matcher *m)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (n != 2 && n != 4) return fail(c, "numeric needs [op, number] or [op, number, op, number]");
    m->kind = M_NUMERIC;
    m->nops = (int)(n / 2);
    for (int k = 0; k < m->nops; k++) {
        const json_t *o = json_array_get(v, (size_t)k * 2),
                     *b = json_array_get(v, (size_t)k * 2 + 1);
        if (!json_is_string(o) || parse_op(json_string_value(o), &m->ops[k]) < 0) {
            if (json_is_string(o))
                return fail(c, "bad numeric operator \"%s\" (use = < <= > >=)",
                            json_string_value(o));
            return fail(c, "bad numeric operator: %s where a string was expected", nb_json_kind(o));
        }
        if (!json_is_number(b))
            return fail(c, "numeric bound must be a number, not %s", nb_json_kind(b));
        m->bound[k] = num_of(b);
    }
    if (m->nops == 2) {
        /* Two bounds only make sense as a range: a lower bound then an upper one. */
        if ((m->ops[0] != OP_GT && m->ops[0] != OP_GE) ||
            (m->ops[1] != OP_LT && m->ops[1] != OP_LE))
            return fail(c, "bad numeric operator: a range is > or >= then < or <=");
    }
    return 0;
}

static int compile_anything_but(cctx *c, const json_t *v, matcher *m)
{
    if (json_is_object(v)) {
        const char *k;
        const json_t *arg;
        if (json_object_size(v) != 1)
            return fail(c, "anything-but object needs exactly one of prefix, suffix");
        json_object_foreach((json_t *)v, k, arg)
        {
            if (strcmp(k, "prefix") == 0)
                m->kind = M_NOT_PREFIX;
            else if (strcmp(k, "suffix") == 0)
                m->kind = M_NOT_SUFFIX;
            else
                return fail(c, "unknown anything-but operator \"%s\"", k);
            return compile_string_arg(c, k, arg, &m->v);
        }
    }
    m->kind = M_NOT_VALUES;
    if (!json_is_array(v)) {
        m->vals = calloc(1, sizeof *m->vals);
        if (!m->vals) abort();
        m->nvals = 1;
        return compile_lit(c, v, &m->vals[0]);
    }
    size_t n = json_array_size(v);
    if (n == 0) return fail(c, "anything-but with an empty list");
    m->vals = calloc(n, sizeof *m->vals);
    if (!m->vals) abort();
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (i > 0 && count_matcher(c) < 0) return -1; /* the first was counted by the leaf */
        m->nvals++;
        if (json_is_array(e) || json_is_object(e))
            return fail(c, "anything-but list holds %s; only strings, numbers, booleans, null",
                        nb_json_kind(e));
        if (compile_lit(c, e, &m->vals[i]) < 0) return -1;
    }
    return 0;
}

static int compile_matcher(cctx *c, const json_t *v, matcher *m)
{
    if (json_is_array(v)) return fail(c, "a nested array is not a matcher");
    if (!json_is_object(v)) {
        m->kind = M_LIT;
        return compile_lit(c, v, &m->v);
    }
    if (json_object_size(v) != 1)
        return fail(c, "a matcher object needs exactly one operator, not %zu", json_object_size(v));
    const char *k;
    const json_t *arg;
    json_object_foreach((json_t *)v, k, arg)
    {
        if (strcmp(k, "prefix") == 0) {
            m->kind = M_PREFIX;
            return compile_string_arg(c, k, arg, &m->v);
        }
        if (strcmp(k, "suffix") == 0) {
            m->kind = M_SUFFIX;
            return compile_string_arg(c, k, arg, &m->v);
        }
        if (strcmp(k, "equals-ignore-case") == 0) {
            m->kind = M_EQIC;
            return compile_string_arg(c, k, arg, &m->v);
        }
        if (strcmp(k, "anything-but") == 0) return compile_anything_but(c, arg, m);
        if (strcmp(k, "numeric") == 0) return compile_numeric(c, arg, m);
        if (strcmp(k, "exists") == 0) {
            if (!json_is_boolean(arg))
                return fail(c, "exists needs true or false, not %s", nb_json_kind(arg));
            m->kind = M_EXISTS;
            m->v.b = json_is_true(arg);
            return 0;
        }
        return fail(c, "unknown operator \"%s\"", k);
    }
    return 0; /* not reached: the object has one member */
}

static int compile_leaf(cctx *c, const json_t *arr, node *n)
{
    size_t cnt = json_array_size(arr);
    n->leaf = 1;
    if (cnt == 0) return fail(c, "an empty array matches nothing");
    n->m = calloc(cnt, sizeof *n->m);
    if (!n->m) abort();
    for (size_t i = 0; i < cnt; i++) {
        size_t old = path_push(c, "[%zu]", i);
        n->nm++; /* before compiling, so a partly filled matcher is freed too */
        if (count_matcher(c) < 0 || compile_matcher(c, json_array_get(arr, i), &n->m[i]) < 0)
            return -1;
        path_pop(c, old);
    }
    return 0;
}

static int compile_obj(cctx *c, const json_t *obj, node *n, int depth)
{
    size_t cnt = json_object_size(obj);
    if (cnt == 0) {
        if (depth == 0) return 0;
        return fail(c, "an empty object matches nothing");
    }
    n->kids = calloc(cnt, sizeof *n->kids);
    if (!n->kids) abort();
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        node *kid = &n->kids[n->nkids++];
        kid->key = dupn(k, strlen(k));
        size_t old = path_push(c, "%s%s", depth ? "." : "", k);
        if (depth + 1 > NB_PAT_MAX_DEPTH)
            return fail(c, "nested deeper than %d levels", NB_PAT_MAX_DEPTH);
        if (json_is_object(v)) {
            if (c->policy)
                return fail(c, "a filter policy is flat: attribute values are arrays of matchers");
            if (compile_obj(c, v, kid, depth + 1) < 0) return -1;
        } else if (json_is_array(v)) {
            if (compile_leaf(c, v, kid) < 0) return -1;
        } else {
            return fail(c, "must be an array of matchers%s, not %s",
                        c->policy ? "" : " or an object", nb_json_kind(v));
        }
        path_pop(c, old);
    }
    return 0;
}

static void free_lit(lit *l)
{
    free(l->s);
}

static void free_node(node *n)
{
    free(n->key);
    for (size_t i = 0; i < n->nkids; i++)
        free_node(&n->kids[i]);
    free(n->kids);
    for (size_t i = 0; i < n->nm; i++) {
        free_lit(&n->m[i].v);
        for (size_t j = 0; j < n->m[i].nvals; j++)
            free_lit(&n->m[i].vals[j]);
        free(n->m[i].vals);
    }
    free(n->m);
}

void nb_pat_free(nb_pat *p)
{
    if (!p) return;
    free_node(&p->root);
    free(p);
}

static nb_pat *compile(const char *json, size_t len, int policy, nb_err *err)
{
    cctx c = {.err = err, .what = policy ? "filter policy" : "pattern", .policy = policy};
    if (len > NB_PAT_MAX_BYTES) {
        fail(&c, "%zu bytes; the limit is %d", len, NB_PAT_MAX_BYTES);
        return NULL;
    }
    json_error_t je;
    /* Duplicate keys are refused: with last-one-wins, a pattern could say two things at once. */
    json_t *j = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!j) {
        nb_err_set(err, 400, NB_E_INVALID_JSON, "%s: not valid JSON: %s (line %d, column %d)",
                   c.what, je.text, je.line, je.column);
        return NULL;
    }
    nb_pat *p = calloc(1, sizeof *p);
    if (!p) abort();
    int rc = json_is_object(j) ? compile_obj(&c, j, &p->root, 0)
                               : fail(&c, "must be a JSON object, not %s", nb_json_kind(j));
    json_decref(j);
    if (rc < 0) {
        nb_pat_free(p);
        return NULL;
    }
    return p;
}

nb_pat *nb_pat_compile(const char *json, size_t len, nb_err *err)
{
    return compile(json, len, 0, err);
}

nb_pat *nb_pat_compile_filter_policy(const char *json, size_t len, nb_err *err)
{
    return compile(json, len, 1, err);
}

/* ---- matching ---- */

/* A string that is wholly a JSON-style number, as message attributes carry numbers. Strict on
 * purpose: strtod alone would take " 5", "0x10", "inf" and "5abc"'s prefix. */
static int parse_num_str(const char *s, size_t len, num *out)
{
    char buf[64];
    size_t i = 0;
    int integral = 1;
    if (len == 0 || len >= sizeof buf) return 0;
    if (s[i] == '-') i++;
    if (i == len || s[i] < '0' || s[i] > '9') return 0;
    if (s[i] == '0' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') return 0;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i < len && s[i] == '.') {
        integral = 0;
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start) return 0;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start) return 0;
    }
    if (i != len) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    errno = 0;
    if (integral) {
        long long v = strtoll(buf, NULL, 10);
        if (errno == 0) {
            out->is_int = 1;
            out->i = v;
            return 1;
        }
        errno = 0; /* too big for an integer: still a number, as a double */
    }
    double d = strtod(buf, NULL);
    if (errno == ERANGE && (d > 1.0 || d < -1.0)) return 0; /* overflow to infinity */
    out->is_int = 0;
    out->d = d;
    return 1;
}

/* The value as a number: JSON numbers always, strings only among message attributes. */
static int value_num(const json_t *v, int attrs, num *out)
{
    if (json_is_number(v)) {
        *out = num_of(v);
        return 1;
    }
    if (attrs && json_is_string(v))
        return parse_num_str(json_string_value(v), json_string_length(v), out);
    return 0;
}

static int num_cmp(num a, num b)
{
    if (a.is_int && b.is_int) return (a.i > b.i) - (a.i < b.i);
    double x = a.is_int ? (double)a.i : a.d, y = b.is_int ? (double)b.i : b.d;
    return (x > y) - (x < y);
}

static int op_holds(op o, int cmp)
{
    switch (o) {
    case OP_EQ:
        return cmp == 0;
    case OP_LT:
        return cmp < 0;
    case OP_LE:
        return cmp <= 0;
    case OP_GT:
        return cmp > 0;
    default:
        return cmp >= 0;
    }
}

static int lit_eq(const lit *l, const json_t *v, int attrs)
{
    num n;
    switch (l->t) {
    case L_STR:
        return json_is_string(v) && json_string_length(v) == l->len &&
               memcmp(json_string_value(v), l->s, l->len) == 0;
    case L_NUM:
        return value_num(v, attrs, &n) && num_cmp(n, l->n) == 0;
    case L_BOOL:
        return json_is_boolean(v) && json_is_true(v) == l->b;
    default:
        return json_is_null(v);
    }
}

static int has_prefix(const json_t *v, const lit *l)
{
    return json_string_length(v) >= l->len && memcmp(json_string_value(v), l->s, l->len) == 0;
}

static int has_suffix(const json_t *v, const lit *l)
{
    size_t n = json_string_length(v);
    return n >= l->len && memcmp(json_string_value(v) + n - l->len, l->s, l->len) == 0;
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int eq_ignore_case(const json_t *v, const lit *l)
{
    if (json_string_length(v) != l->len) return 0;
    const unsigned char *a = (const unsigned char *)json_string_value(v);
    const unsigned char *b = (const unsigned char *)l->s;
    for (size_t i = 0; i < l->len; i++)
        if (lower(a[i]) != lower(b[i])) return 0;
    return 1;
}

/* One matcher against one scalar (containers never match here). */
static int match_one(const matcher *m, const json_t *v, int attrs)
{
    if (json_is_object(v) || json_is_array(v)) return 0;
    num n;
    switch (m->kind) {
    case M_LIT:
        return lit_eq(&m->v, v, attrs);
    case M_PREFIX:
        return json_is_string(v) && has_prefix(v, &m->v);
    case M_SUFFIX:
        return json_is_string(v) && has_suffix(v, &m->v);
    case M_EQIC:
        return json_is_string(v) && eq_ignore_case(v, &m->v);
    case M_NOT_PREFIX:
        return json_is_string(v) && !has_prefix(v, &m->v);
    case M_NOT_SUFFIX:
        return json_is_string(v) && !has_suffix(v, &m->v);
    case M_NOT_VALUES:
        for (size_t i = 0; i < m->nvals; i++)
            if (lit_eq(&m->vals[i], v, attrs)) return 0;
        return 1;
    case M_NUMERIC:
        if (!value_num(v, attrs, &n)) return 0;
        for (int k = 0; k < m->nops; k++)
            if (!op_holds(m->ops[k], num_cmp(n, m->bound[k]))) return 0;
        return 1;
    default:
        return 0; /* M_EXISTS is decided by the leaf */
    }
}

static int match_leaf(const node *n, const json_t *v, int attrs)
{
    for (size_t i = 0; i < n->nm; i++) {
        const matcher *m = &n->m[i];
        if (m->kind == M_EXISTS) {
            if (m->v.b == (v != NULL)) return 1;
            continue;
        }
        if (!v) continue;
        if (json_is_array(v)) {
            for (size_t k = 0; k < json_array_size(v); k++)
                if (match_one(m, json_array_get(v, k), attrs)) return 1;
        } else if (match_one(m, v, attrs)) {
            return 1;
        }
    }
    return 0;
}

static int match_obj(const node *n, const json_t *obj, int attrs);

static int match_field(const node *k, const json_t *v, int attrs)
{
    if (k->leaf) return match_leaf(k, v, attrs);
    if (json_is_array(v)) {
        int any_obj = 0;
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            if (!json_is_object(e)) continue;
            any_obj = 1;
            if (match_obj(k, e, attrs)) return 1;
        }
        if (any_obj) return 0;
    }
    /* Missing or not an object: its fields are all missing, which exists:false still matches. */
    return match_obj(k, json_is_object(v) ? v : NULL, attrs);
}

/* Recursion is bounded by the pattern's depth (NB_PAT_MAX_DEPTH), whatever the event's. */
static int match_obj(const node *n, const json_t *obj, int attrs)
{
    for (size_t i = 0; i < n->nkids; i++) {
        const node *k = &n->kids[i];
        const json_t *v = obj ? json_object_get(obj, k->key) : NULL;
        if (!match_field(k, v, attrs)) return 0;
    }
    return 1;
}

int nb_pat_match(const nb_pat *p, const json_t *event)
{
    return match_obj(&p->root, json_is_object(event) ? event : NULL, 0);
}

int nb_pat_match_attrs(const nb_pat *p, const json_t *attrs)
{
    return match_obj(&p->root, json_is_object(attrs) ? attrs : NULL, 1);
}
