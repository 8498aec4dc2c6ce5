/* Fuzzes the route table (src/gateway/routes.c) against a slow reference matcher written here
 * from the header's rules alone.
 *
 * Input: lines. Up to the first empty line, each is "METHOD TEMPLATE" to add; after it, each is
 * "METHOD PATH" to look up (the path as raw bytes, NUL included). Properties:
 * - no crash, no read outside the bytes given;
 * - nb_rt_check and nb_rt_add agree on what is a valid route; add refuses with 409 exactly when
 *   a route of the same method and shape (literals compared decoded, parameter names ignored)
 *   is already there;
 * - a lookup finds the route the reference picks: among the routes whose template fits the
 *   path and whose method is the request's or ANY, the most specific by segment kinds from the
 *   left (literal < {param} < {greedy+}), then exact method before ANY; the parameters are the
 *   reference's decoded values;
 * - with no such route, NB_RT_METHOD when some template fits (its allow list names only methods
 *   of fitting routes, and all of them when they fit in the field), else NB_RT_NONE. */
/* The code under test is compiled into this target rather than taken from nimbus_core, so it
 * gets this target's -fsanitize=fuzzer coverage instrumentation (the library is built
 * without it); the linker then never pulls the library's copy of the same object. */
#include "gateway/routes.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

#define MAX_ROUTES  48
#define MAX_LOOKUPS 48
#define REF_SEGS    2048

typedef struct ref_route {
    char method[64];
    char tmpl[4096];
} ref_route;

typedef struct span {
    const char *p;
    size_t len;
} span;

/* Splits after the leading '/' on every '/'; "/" has no segments. */
static int ref_split(const char *s, size_t len, span *out)
{
    if (len <= 1) return 0;
    int n = 0;
    const char *p = s + 1, *end = s + len;
    for (;;) {
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (n == REF_SEGS) return -1;
        out[n].p = p;
        out[n].len = e ? (size_t)(e - p) : (size_t)(end - p);
        n++;
        if (!e) return n;
        p = e + 1;
    }
}

static size_t ref_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%' && i + 2 < len) {
            out[o++] =
                (char)(hexval((unsigned char)in[i + 1]) * 16 + hexval((unsigned char)in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static int kind_of(span s)
{
    if (s.len && s.p[0] == '{') return s.p[s.len - 2] == '+' ? 2 : 1;
    return 0;
}

static int lit_eq(span a, span b)
{
    static char da[8192], db[8192];
    if (a.len > sizeof da || b.len > sizeof db) return 0;
    size_t na = ref_decode(a.p, a.len, da), nb = ref_decode(b.p, b.len, db);
    return na == nb && memcmp(da, db, na) == 0;
}

static int same_shape(const char *a, const char *b)
{
    static span sa[REF_SEGS], sb[REF_SEGS];
    int na = ref_split(a, strlen(a), sa), nb = ref_split(b, strlen(b), sb);
    if (na != nb) return 0;
    for (int i = 0; i < na; i++) {
        int ka = kind_of(sa[i]), kb = kind_of(sb[i]);
        if (ka != kb || (ka == 0 && !lit_eq(sa[i], sb[i]))) return 0;
    }
    return 1;
}

/* Whether the template fits the path; kinds[] and the parameters' raw spans are filled. */
static int ref_fit(const char *tp, const char *path, size_t plen, int *kinds, int *nk, span *params,
                   int *np)
{
    static span ts[REF_SEGS], ps[REF_SEGS];
    int nt = ref_split(tp, strlen(tp), ts);
    int npath = ref_split(path, plen, ps);
    if (npath < 0) npath = REF_SEGS + 1; /* deeper than we split: only a greedy fits */
    *nk = *np = 0;
    for (int i = 0; i < nt; i++) {
        int k = kind_of(ts[i]);
        kinds[(*nk)++] = k;
        if (k == 2) {
            if (i >= npath || i >= REF_SEGS) return 0;
            size_t rest = (size_t)(path + plen - ps[i].p);
            if (rest == 0) return 0;
            params[(*np)++] = (span){ps[i].p, rest};
            return 1;
        }
        if (i >= npath) return 0;
        if (k == 1) {
            if (ps[i].len == 0) return 0;
            params[(*np)++] = ps[i];
        } else if (!lit_eq(ts[i], ps[i])) {
            return 0;
        }
    }
    return nt == npath;
}

static int path_valid(const char *p, size_t len)
{
    if (len == 0 || p[0] != '/') return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '%' && (len - i < 3 || hexval((unsigned char)p[i + 1]) < 0 ||
                            hexval((unsigned char)p[i + 2]) < 0))
            return 0;
    return 1;
}

/* <0 when a is more specific than b */
static int spec_cmp(const int *ka, int na, int any_a, const int *kb, int nb, int any_b)
{
    for (int i = 0; i < na && i < nb; i++)
        if (ka[i] != kb[i]) return ka[i] < kb[i] ? -1 : 1;
    if (na != nb) abort(); /* two fitting routes never have one's kinds a prefix of the other's */
    return any_a - any_b;
}

static ref_route routes[MAX_ROUTES];

/* How many times the method is in the allow list. */
static int in_allow(const char *allow, const char *method)
{
    int n = 0;
    size_t ml = strlen(method);
    for (const char *a = allow; *a;) {
        const char *e = strstr(a, ", ");
        size_t al = e ? (size_t)(e - a) : strlen(a);
        n += al == ml && memcmp(a, method, ml) == 0;
        a = e ? e + 2 : a + al;
    }
    return n;
}

static void lookup(nb_rt *t, int nroutes, const char *m, size_t mlen, const char *path, size_t plen)
{
    nb_rt_match mt;
    int r = nb_rt_lookup(t, m, mlen, path, plen, &mt);
    CHECK(r == NB_RT_NONE || r == NB_RT_FOUND || r == NB_RT_METHOD);
    int best = -1, best_nk = 0, best_any = 0, fitting = 0;
    static int kinds[REF_SEGS + 1], best_kinds[REF_SEGS + 1];
    span params[NB_RT_MAX_PARAMS + 1], best_params[NB_RT_MAX_PARAMS + 1];
    int np, best_np = 0, nk;
    int valid = path_valid(path, plen);
    for (int i = 0; valid && i < nroutes; i++) {
        if (!ref_fit(routes[i].tmpl, path, plen, kinds, &nk, params, &np)) continue;
        fitting = 1;
        int any = strcmp(routes[i].method, "ANY") == 0;
        if (!any && (strlen(routes[i].method) != mlen || memcmp(routes[i].method, m, mlen) != 0))
            continue;
        if (best < 0 || spec_cmp(kinds, nk, any, best_kinds, best_nk, best_any) < 0) {
            best = i;
            best_nk = nk;
            best_any = any;
            memcpy(best_kinds, kinds, sizeof(int) * (size_t)nk);
            memcpy(best_params, params, sizeof(span) * (size_t)np);
            best_np = np;
        }
    }
    if (best >= 0) {
        CHECK(r == NB_RT_FOUND);
        CHECK(mt.ud == &routes[best]);
        char key[4200];
        snprintf(key, sizeof key, "%s %s", routes[best].method, routes[best].tmpl);
        CHECK(strcmp(mt.route_key, key) == 0);
        CHECK(mt.nparams == best_np);
        for (int k = 0; k < best_np; k++) {
            char *dec = malloc(best_params[k].len + 1);
            CHECK(dec);
            size_t n = ref_decode(best_params[k].p, best_params[k].len, dec);
            CHECK(mt.params[k].value_len == n && memcmp(mt.params[k].value, dec, n) == 0);
            CHECK(mt.params[k].value[n] == 0);
            CHECK(strcmp(mt.params[k].name, "") != 0);
            free(dec);
        }
        nb_rt_match_clear(&mt);
        return;
    }
    CHECK(mt.nparams == 0);
    if (!fitting) {
        CHECK(r == NB_RT_NONE);
        return;
    }
    CHECK(r == NB_RT_METHOD);
    CHECK(mt.allow[0] && strlen(mt.allow) < sizeof mt.allow);
    /* every listed method is one of a fitting route's, once; a fitting route's method is
     * missing only when it would not have fitted in the field */
    for (const char *a = mt.allow; *a;) {
        const char *e = strstr(a, ", ");
        size_t al = e ? (size_t)(e - a) : strlen(a);
        int found = 0;
        for (int i = 0; i < nroutes && !found; i++)
            found = strlen(routes[i].method) == al && memcmp(routes[i].method, a, al) == 0 &&
                    ref_fit(routes[i].tmpl, path, plen, kinds, &nk, params, &np);
        CHECK(found);
        a = e ? e + 2 : a + al;
    }
    for (int i = 0; i < nroutes; i++) {
        if (!ref_fit(routes[i].tmpl, path, plen, kinds, &nk, params, &np)) continue;
        CHECK(in_allow(mt.allow, routes[i].method) == 1 ||
              (in_allow(mt.allow, routes[i].method) == 0 &&
               strlen(mt.allow) + 2 + strlen(routes[i].method) >= sizeof mt.allow));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    nb_rt *t = nb_rt_new();
    int nroutes = 0, adding = 1, nlookups = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le == p && adding) {
            adding = 0;
        } else if (adding && nroutes < MAX_ROUTES) {
            const char *sp = memchr(p, ' ', (size_t)(le - p));
            const char *me = sp ? sp : le;
            ref_route *rr = &routes[nroutes];
            size_t ml =
                (size_t)(me - p) < sizeof rr->method - 1 ? (size_t)(me - p) : sizeof rr->method - 1;
            memcpy(rr->method, p, ml);
            rr->method[ml] = 0;
            size_t tl = sp ? (size_t)(le - sp - 1) : 0;
            if (tl > sizeof rr->tmpl - 1) tl = sizeof rr->tmpl - 1;
            memcpy(rr->tmpl, sp ? sp + 1 : "", tl);
            rr->tmpl[tl] = 0;
            nb_err e1 = {0}, e2 = {0};
            int ok = nb_rt_check(rr->method, rr->tmpl, &e1) == 0;
            int a = nb_rt_add(t, rr->method, rr->tmpl, rr, &e2);
            if (!ok) {
                CHECK(a == -1 && e2.status == 400 && e1.status == 400);
            } else {
                int dup = 0;
                for (int i = 0; i < nroutes && !dup; i++)
                    dup = strcmp(routes[i].method, rr->method) == 0 &&
                          same_shape(routes[i].tmpl, rr->tmpl);
                CHECK(dup ? a == -1 && e2.status == 409 : a == 0);
                if (a == 0) nroutes++;
            }
        } else if (!adding && nlookups < MAX_LOOKUPS) {
            nlookups++;
            const char *sp = memchr(p, ' ', (size_t)(le - p));
            const char *me = sp ? sp : le;
            lookup(t, nroutes, p, (size_t)(me - p), sp ? sp + 1 : le,
                   sp ? (size_t)(le - sp - 1) : 0);
        }
        p = nl ? nl + 1 : end;
    }
    nb_rt_free(t);
    return 0;
}
