#include "gateway/routes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A trie of path segments. Each node has its literal children sorted (by length, then bytes,
 * so a lookup rejects most candidates on the length alone), at most one "{name}" child and at
 * most one "{name+}" child; the routes ending at a node hang off it by method. Parameter names
 * live on the routes, not on the nodes, because routes of the same shape may name their
 * parameters differently (GET /users/{id} and DELETE /users/{uid}). */

#define MAX_TEMPLATE 2048
#define MAX_METHOD   32
#define MAX_NAME     64

typedef struct rt_route {
    char *method; /* "GET" or "ANY" */
    size_t method_len;
    char *key; /* "GET /users/{id}" */
    void *ud;
    int nparams;
    int greedy; /* the last parameter is "{name+}" */
    char *names[NB_RT_MAX_PARAMS];
} rt_route;

typedef struct rt_node rt_node;

typedef struct rt_lit {
    char *s; /* decoded literal */
    size_t len;
    rt_node *child;
} rt_lit;

struct rt_node {
    rt_lit *lits;
    size_t nlits;
    rt_node *param;
    rt_node *greedy;
    rt_route **routes;
    size_t nroutes;
};

struct nb_rt {
    rt_node root;
};

/* ---- templates ---- */

enum { SEG_LIT, SEG_PARAM, SEG_GREEDY };

typedef struct tseg {
    int kind;
    const char *p; /* literal: raw text; param: the name */
    size_t len;
} tseg;

typedef struct tmpl {
    tseg segs[NB_RT_MAX_SEGMENTS];
    int nsegs;
    int nparams;
} tmpl;

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %XX; the caller checked the encoding, so the output is never longer than the input. */
static size_t pct_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            out[o++] =
                (char)(hexval((unsigned char)in[i + 1]) << 4 | hexval((unsigned char)in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static int method_char(unsigned char c)
{
    /* RFC 9110 tchar without lower case letters: methods are case-sensitive and we keep them in
     * their canonical upper case, so "get" is refused rather than silently never matching. */
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

static int name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static int literal_char(unsigned char c)
{
    /* No controls or spaces, nothing that ends a path ('?', '#'), no braces (a '{' inside a
     * literal is a mistyped parameter). Bytes >= 0x80 pass: UTF-8 paths are legal once sent
     * percent-encoded, and a literal is compared after decoding. */
    return c > 0x20 && c != 0x7f && c != '?' && c != '#' && c != '{' && c != '}';
}

static int parse_method(const char *method, nb_err *err)
{
    size_t n = method ? strlen(method) : 0;
    if (n == 0 || n > MAX_METHOD)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "route method must be 1 to %d characters",
                          MAX_METHOD);
    for (size_t i = 0; i < n; i++)
        if (!method_char((unsigned char)method[i]))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "route method '%s' is not an upper-case HTTP method or ANY", method);
    return 0;
}

static int parse_template(const char *path, tmpl *t, nb_err *err)
{
    t->nsegs = t->nparams = 0;
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || path[0] != '/')
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "route path must start with '/'");
    if (n > MAX_TEMPLATE)
        return nb_err_set(err, 400, NB_E_INVALID_VALUE, "route path longer than %d characters",
                          MAX_TEMPLATE);
    if (n == 1) return 0; /* "/": the root, no segments */
    const char *p = path + 1, *end = path + n;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *e = slash ? slash : end;
        size_t len = (size_t)(e - p);
        if (len == 0)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "route path '%.200s' has an empty segment", path);
        if (t->nsegs == NB_RT_MAX_SEGMENTS)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "route path has more than %d segments",
                              NB_RT_MAX_SEGMENTS);
        if (t->nsegs && t->segs[t->nsegs - 1].kind == SEG_GREEDY)
            return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                              "route path '%.200s': a greedy parameter must be the last segment",
                              path);
        tseg *s = &t->segs[t->nsegs++];
        if (p[0] == '{') {
            if (p[len - 1] != '}' || len < 3)
                return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                  "route path '%.200s': segment '%.*s' is not a {name}", path,
                                  (int)(len > 100 ? 100 : len), p);
            s->kind = p[len - 2] == '+' ? SEG_GREEDY : SEG_PARAM;
            s->p = p + 1;
            s->len = len - 2 - (s->kind == SEG_GREEDY);
            if (s->len == 0 || s->len > MAX_NAME)
                return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                  "route path '%.200s': parameter names are 1 to %d characters",
                                  path, MAX_NAME);
            for (size_t i = 0; i < s->len; i++)
                if (!name_char((unsigned char)s->p[i]))
                    return nb_err_set(
                        err, 400, NB_E_INVALID_VALUE,
                        "route path '%.200s': parameter name '%.*s' has characters other than "
                        "letters, digits, '_', '-' and '.'",
                        path, (int)s->len, s->p);
            for (int k = 0; k < t->nsegs - 1; k++)
                if (t->segs[k].kind != SEG_LIT && t->segs[k].len == s->len &&
                    memcmp(t->segs[k].p, s->p, s->len) == 0)
                    return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                      "route path '%.200s': parameter '%.*s' appears twice", path,
                                      (int)s->len, s->p);
            if (++t->nparams > NB_RT_MAX_PARAMS)
                return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                  "route path has more than %d parameters", NB_RT_MAX_PARAMS);
        } else {
            s->kind = SEG_LIT;
            s->p = p;
            s->len = len;
            for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)p[i];
                if (c == '%') {
                    int hi = i + 2 < len ? hexval((unsigned char)p[i + 1]) : -1;
                    int lo = hi >= 0 ? hexval((unsigned char)p[i + 2]) : -1;
                    /* %00 would put a NUL inside a literal the table keeps as a C string */
                    if (lo < 0 || (hi == 0 && lo == 0))
                        return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                          "route path '%.200s': bad percent-encoding", path);
                    i += 2;
                } else if (!literal_char(c)) {
                    return nb_err_set(err, 400, NB_E_INVALID_VALUE,
                                      "route path '%.200s': character 0x%02x not allowed in a "
                                      "literal segment",
                                      path, c);
                }
            }
        }
        if (!slash) break;
        p = slash + 1;
    }
    return 0;
}

int nb_rt_check(const char *method, const char *path, nb_err *err)
{
    tmpl t;
    if (parse_method(method, err) < 0) return -1;
    return parse_template(path, &t, err);
}

/* ---- building ---- */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) abort();
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xcalloc(1, n + 1);
    memcpy(p, s, n);
    return p;
}

nb_rt *nb_rt_new(void)
{
    return xcalloc(1, sizeof(nb_rt));
}

static void route_free(rt_route *r)
{
    free(r->method);
    free(r->key);
    for (int i = 0; i < r->nparams; i++)
        free(r->names[i]);
    free(r);
}

static void node_release(rt_node *n)
{
    for (size_t i = 0; i < n->nlits; i++) {
        free(n->lits[i].s);
        node_release(n->lits[i].child);
        free(n->lits[i].child);
    }
    free(n->lits);
    if (n->param) {
        node_release(n->param);
        free(n->param);
    }
    if (n->greedy) {
        node_release(n->greedy);
        free(n->greedy);
    }
    for (size_t i = 0; i < n->nroutes; i++)
        route_free(n->routes[i]);
    free(n->routes);
}

void nb_rt_free(nb_rt *t)
{
    if (!t) return;
    node_release(&t->root);
    free(t);
}

static int lit_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen) return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

/* Index of the literal, or -(insertion point) - 1. */
static long lit_find(const rt_node *n, const char *s, size_t len)
{
    size_t lo = 0, hi = n->nlits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = lit_cmp(n->lits[mid].s, n->lits[mid].len, s, len);
        if (c == 0) return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

/* The node for the template, created as needed; nothing is created when the walk only looks. */
static rt_node *walk(rt_node *n, const tmpl *t, int create)
{
    for (int i = 0; i < t->nsegs && n; i++) {
        const tseg *s = &t->segs[i];
        if (s->kind == SEG_PARAM || s->kind == SEG_GREEDY) {
            rt_node **slot = s->kind == SEG_PARAM ? &n->param : &n->greedy;
            if (!*slot && create) *slot = xcalloc(1, sizeof(rt_node));
            n = *slot;
            continue;
        }
        char dec[MAX_TEMPLATE];
        size_t len = pct_decode(s->p, s->len, dec);
        long at = lit_find(n, dec, len);
        if (at >= 0) {
            n = n->lits[at].child;
        } else if (!create) {
            return NULL;
        } else {
            size_t ins = (size_t)(-at - 1);
            n->lits = xrealloc(n->lits, (n->nlits + 1) * sizeof *n->lits);
            memmove(n->lits + ins + 1, n->lits + ins, (n->nlits - ins) * sizeof *n->lits);
            n->lits[ins] = (rt_lit){xstrndup(dec, len), len, xcalloc(1, sizeof(rt_node))};
            n->nlits++;
            n = n->lits[ins].child;
        }
    }
    return n;
}

int nb_rt_add(nb_rt *t, const char *method, const char *path, void *ud, nb_err *err)
{
    tmpl tp;
    if (parse_method(method, err) < 0 || parse_template(path, &tp, err) < 0) return -1;
    size_t mlen = strlen(method);
    /* Look before creating, so a refused route leaves no empty nodes behind. */
    rt_node *n = walk(&t->root, &tp, 0);
    for (size_t i = 0; n && i < n->nroutes; i++)
        if (n->routes[i]->method_len == mlen && memcmp(n->routes[i]->method, method, mlen) == 0)
            return nb_err_set(err, 409, NB_E_CONFLICT,
                              "route '%s %.200s' conflicts with the existing route '%.200s'",
                              method, path, n->routes[i]->key);
    n = walk(&t->root, &tp, 1);
    rt_route *r = xcalloc(1, sizeof *r);
    r->method = xstrndup(method, mlen);
    r->method_len = mlen;
    size_t plen = strlen(path);
    r->key = xcalloc(1, mlen + 1 + plen + 1);
    memcpy(r->key, method, mlen);
    r->key[mlen] = ' ';
    memcpy(r->key + mlen + 1, path, plen);
    r->ud = ud;
    for (int i = 0; i < tp.nsegs; i++)
        if (tp.segs[i].kind != SEG_LIT)
            r->names[r->nparams++] = xstrndup(tp.segs[i].p, tp.segs[i].len);
    r->greedy = tp.nsegs && tp.segs[tp.nsegs - 1].kind == SEG_GREEDY;
    /* Exact methods first, ANY last: a node's first route with a fitting method is the one. */
    int any = mlen == 3 && memcmp(method, "ANY", 3) == 0;
    n->routes = xrealloc(n->routes, (n->nroutes + 1) * sizeof *n->routes);
    if (any || n->nroutes == 0 || strcmp(n->routes[n->nroutes - 1]->method, "ANY") != 0) {
        n->routes[n->nroutes] = r;
    } else {
        n->routes[n->nroutes] = n->routes[n->nroutes - 1];
        n->routes[n->nroutes - 1] = r;
    }
    n->nroutes++;
    return 0;
}

/* ---- matching ---- */

typedef struct seg {
    const char *p;
    uint32_t len;    /* raw */
    uint32_t declen; /* decoded */
} seg;

typedef struct mstate {
    const char *method;
    size_t method_len;
    const char *path_end;
    seg segs[NB_RT_MAX_SEGMENTS + 1];
    int nsegs;
    /* the winning walk: which segments were parameters, and the greedy start */
    int pseg[NB_RT_MAX_PARAMS];
    int np;
} mstate;

/* Compares a raw path segment, decoded on the fly, with a decoded literal of the same decoded
 * length. */
static int seg_eq(const seg *s, const char *lit)
{
    if (s->len == s->declen) return memcmp(s->p, lit, s->len) == 0;
    size_t o = 0;
    for (size_t i = 0; i < s->len; i++, o++) {
        char c = s->p[i];
        if (c == '%') {
            c = (char)(hexval((unsigned char)s->p[i + 1]) << 4 |
                       hexval((unsigned char)s->p[i + 2]));
            i += 2;
        }
        if (c != lit[o]) return 0;
    }
    return 1;
}

static const rt_lit *seg_find(const rt_node *n, const seg *s)
{
    size_t lo = 0, hi = n->nlits;
    /* lower bound on the length, then a scan of that length's literals: they are few */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (n->lits[mid].len < s->declen)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n->nlits && n->lits[lo].len == s->declen; lo++)
        if (seg_eq(s, n->lits[lo].s)) return &n->lits[lo];
    return NULL;
}

static const rt_route *pick(const rt_node *n, const mstate *st)
{
    for (size_t i = 0; i < n->nroutes; i++) {
        const rt_route *r = n->routes[i];
        if ((r->method_len == st->method_len &&
             memcmp(r->method, st->method, st->method_len) == 0) ||
            (r->method_len == 3 && memcmp(r->method, "ANY", 3) == 0))
            return r;
    }
    return NULL;
}

/* Depth-first in precedence order (literal, parameter, greedy), so the first route found is
 * the most specific one; a dead end backtracks to the next alternative. */
static const rt_route *find(const rt_node *n, int i, mstate *st)
{
    if (i == st->nsegs) return pick(n, st);
    if (n->nlits && st->segs[i].declen) {
        const rt_lit *l = seg_find(n, &st->segs[i]);
        if (l) {
            const rt_route *r = find(l->child, i + 1, st);
            if (r) return r;
        }
    }
    if (n->param && st->segs[i].declen && st->np < NB_RT_MAX_PARAMS) {
        st->pseg[st->np++] = i;
        const rt_route *r = find(n->param, i + 1, st);
        if (r) return r;
        st->np--;
    }
    if (n->greedy && st->segs[i].p < st->path_end && st->np < NB_RT_MAX_PARAMS) {
        const rt_route *r = pick(n->greedy, st);
        if (r) {
            st->pseg[st->np++] = i;
            return r;
        }
    }
    return NULL;
}

/* Adds the methods of every route whose template fits the path, for the 405's Allow. */
static void collect(const rt_node *n, int i, const mstate *st, nb_rt_match *m, size_t *len)
{
    if (i == st->nsegs) {
        for (size_t k = 0; k < n->nroutes; k++) {
            const rt_route *r = n->routes[k];
            /* no duplicates: the same method may end several templates */
            const char *a = m->allow;
            int dup = 0;
            while (*a && !dup) {
                const char *e = strchr(a, ',');
                size_t al = e ? (size_t)(e - a) : strlen(a);
                dup = al == r->method_len && memcmp(a, r->method, al) == 0;
                a = e ? e + 2 : a + al;
            }
            if (dup) continue;
            size_t need = (*len ? 2 : 0) + r->method_len;
            if (*len + need >= sizeof m->allow) continue; /* keep what fits, whole */
            if (*len) {
                memcpy(m->allow + *len, ", ", 2);
                *len += 2;
            }
            memcpy(m->allow + *len, r->method, r->method_len);
            *len += r->method_len;
            m->allow[*len] = 0;
        }
        return;
    }
    if (n->nlits && st->segs[i].declen) {
        const rt_lit *l = seg_find(n, &st->segs[i]);
        if (l) collect(l->child, i + 1, st, m, len);
    }
    if (n->param && st->segs[i].declen) collect(n->param, i + 1, st, m, len);
    if (n->greedy && st->segs[i].p < st->path_end) collect(n->greedy, st->nsegs, st, m, len);
}

/* Splits the path into segments, checking its percent-encoding. Past the last segment a
 * template can hold, the rest stays in one final segment that only a greedy parameter takes
 * (no template reaches that depth otherwise). */
static int split(const char *path, size_t len, mstate *st)
{
    if (len == 0 || path[0] != '/') return -1;
    st->path_end = path + len;
    st->nsegs = 0;
    if (len == 1) return 0;
    const char *p = path + 1, *end = path + len;
    for (;;) {
        seg *s = &st->segs[st->nsegs++];
        s->p = p;
        uint32_t pct = 0;
        const char *q = p;
        int last = st->nsegs == NB_RT_MAX_SEGMENTS + 1;
        for (; q < end && (last || *q != '/'); q++) {
            if (*q == '%') {
                if (end - q < 3 || hexval((unsigned char)q[1]) < 0 ||
                    hexval((unsigned char)q[2]) < 0)
                    return -1;
                pct++;
                q += 2;
            }
        }
        if ((size_t)(q - p) > UINT32_MAX) return -1;
        s->len = (uint32_t)(q - p);
        s->declen = s->len - 2 * pct;
        if (q == end) return 0;
        p = q + 1;
    }
}

/* The raw text of parameter k: its segment, or for a greedy parameter the rest of the path. */
static size_t param_raw(const rt_route *r, const mstate *st, int k, const char **p)
{
    const seg *s = &st->segs[st->pseg[k]];
    *p = s->p;
    return r->greedy && k == st->np - 1 ? (size_t)(st->path_end - s->p) : s->len;
}

static void fill_params(const rt_route *r, const mstate *st, nb_rt_match *m)
{
    if (st->np == 0) return;
    size_t total = 0;
    const char *p;
    for (int k = 0; k < st->np; k++)
        total += param_raw(r, st, k, &p) + 1;
    /* One block for every value; params[0].value owns it (nb_rt_match_clear). */
    char *o = malloc(total);
    if (!o) abort();
    for (int k = 0; k < st->np; k++) {
        size_t raw = param_raw(r, st, k, &p);
        nb_rt_param *pp = &m->params[k];
        pp->name = r->names[k];
        pp->value = o;
        pp->value_len = pct_decode(p, raw, o);
        o[pp->value_len] = 0;
        o += pp->value_len + 1;
    }
    m->nparams = st->np;
}

int nb_rt_lookup(const nb_rt *t, const char *method, size_t method_len, const char *path,
                 size_t path_len, nb_rt_match *m)
{
    m->ud = NULL;
    m->route_key = NULL;
    m->nparams = 0;
    m->allow[0] = 0;
    mstate st;
    st.method = method;
    st.method_len = method_len;
    st.np = 0;
    if (split(path, path_len, &st) < 0) return NB_RT_NONE;
    const rt_route *r = find(&t->root, 0, &st);
    if (r) {
        m->ud = r->ud;
        m->route_key = r->key;
        fill_params(r, &st, m);
        return NB_RT_FOUND;
    }
    size_t len = 0;
    collect(&t->root, 0, &st, m, &len);
    return len ? NB_RT_METHOD : NB_RT_NONE;
}

void nb_rt_match_clear(nb_rt_match *m)
{
    if (m->nparams > 0) free(m->params[0].value);
    m->nparams = 0;
    m->ud = NULL;
    m->route_key = NULL;
}
