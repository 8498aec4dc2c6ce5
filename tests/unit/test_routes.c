/* Unit tests of the route table (src/gateway/routes.h): template validation, conflicts,
 * precedence (literal > {param} > {greedy+} from the left, exact method > ANY), 404/405 with the
 * allowed methods, and percent-decoded parameters. */
#include "gateway/routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

/* Each route's ud is its index in this list, so a match names the route it found. */
static const char *const table[][2] = {
    {"GET", "/"},
    {"GET", "/users"},
    {"POST", "/users"},
    {"GET", "/users/me"},
    {"GET", "/users/{id}"},
    {"ANY", "/users/{id}"},
    {"GET", "/users/{id}/posts/{post}"},
    {"GET", "/users/{id}/{rest+}"},
    {"GET", "/files/{path+}"},
    {"PUT", "/files/special/x"},
    {"GET", "/a/{x}/c"},
    {"GET", "/a/b/{y+}"},
    {"ANY", "/{proxy+}"},
    {"DELETE", "/only/delete"},
    {"PATCH", "/only/delete"},
    {"GET", "/caf%C3%A9"},
    {"GET", "/v1/{a}/{b}/{c}"},
    {"POST", "/v1/x/{b}/z"},
};

static nb_rt *build(void)
{
    nb_rt *t = nb_rt_new();
    CHECK(t);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        nb_err err = {0};
        if (nb_rt_add(t, table[i][0], table[i][1], (void *)(i + 1), &err) != 0) {
            fprintf(stderr, "add %s %s: %s\n", table[i][0], table[i][1], err.msg);
            exit(1);
        }
    }
    return t;
}

/* Matches and checks the verdict, the route key and the parameters ("name=value" pairs). */
static void expect(const nb_rt *t, const char *method, const char *path, int want, const char *key,
                   const char *params)
{
    nb_rt_match m;
    int r = nb_rt_lookup(t, method, strlen(method), path, strlen(path), &m);
    if (r != want) {
        fprintf(stderr, "%s %s: got %d (%s), want %d (%s)\n", method, path, r,
                m.route_key ? m.route_key : "-", want, key ? key : "-");
        exit(1);
    }
    if (want == NB_RT_FOUND) {
        CHECK_STR(m.route_key, key);
        CHECK(m.ud != NULL);
        const char *want_key = NULL;
        size_t idx = (size_t)m.ud - 1;
        CHECK(idx < sizeof table / sizeof table[0]);
        static char buf[512];
        snprintf(buf, sizeof buf, "%s %s", table[idx][0], table[idx][1]);
        want_key = buf;
        CHECK_STR(m.route_key, want_key);
        char got[1024] = "";
        for (int i = 0; i < m.nparams; i++) {
            CHECK(strlen(m.params[i].value) <= m.params[i].value_len);
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s=%.*s", i ? " " : "",
                     m.params[i].name, (int)m.params[i].value_len, m.params[i].value);
        }
        CHECK_STR(got, params ? params : "");
    } else if (want == NB_RT_METHOD) {
        CHECK_STR(m.allow, key);
        CHECK(m.nparams == 0);
    } else {
        CHECK(m.nparams == 0 && m.ud == NULL);
    }
    nb_rt_match_clear(&m);
    CHECK(m.nparams == 0);
}

static void test_precedence(void)
{
    nb_rt *t = build();
    expect(t, "GET", "/", NB_RT_FOUND, "GET /", NULL);
    expect(t, "GET", "/users", NB_RT_FOUND, "GET /users", NULL);
    expect(t, "POST", "/users", NB_RT_FOUND, "POST /users", NULL);
    /* literal beats {param} */
    expect(t, "GET", "/users/me", NB_RT_FOUND, "GET /users/me", NULL);
    expect(t, "GET", "/users/42", NB_RT_FOUND, "GET /users/{id}", "id=42");
    /* exact method beats ANY on the same template; ANY takes the other methods */
    expect(t, "DELETE", "/users/42", NB_RT_FOUND, "ANY /users/{id}", "id=42");
    /* POST /users/me: the literal has no POST, so the next most specific route with the
     * method wins (ANY /users/{id}), not a 405 */
    expect(t, "POST", "/users/me", NB_RT_FOUND, "ANY /users/{id}", "id=me");
    /* {param} beats {greedy+} at the same segment */
    expect(t, "GET", "/users/42/posts/7", NB_RT_FOUND, "GET /users/{id}/posts/{post}",
           "id=42 post=7");
    expect(t, "GET", "/users/42/posts", NB_RT_FOUND, "GET /users/{id}/{rest+}", "id=42 rest=posts");
    expect(t, "GET", "/users/42/posts/7/comments", NB_RT_FOUND, "GET /users/{id}/{rest+}",
           "id=42 rest=posts/7/comments");
    /* no GET route fits those segments past the {id}: the catch-all ANY takes it */
    expect(t, "POST", "/users/42/posts/7", NB_RT_FOUND, "ANY /{proxy+}", "proxy=users/42/posts/7");
    /* greedy keeps inner slashes, empty segments and a trailing slash */
    expect(t, "GET", "/files/a/b/c.txt", NB_RT_FOUND, "GET /files/{path+}", "path=a/b/c.txt");
    expect(t, "GET", "/files/a//b/", NB_RT_FOUND, "GET /files/{path+}", "path=a//b/");
    expect(t, "GET", "/files/special/x", NB_RT_FOUND, "GET /files/{path+}", "path=special/x");
    expect(t, "PUT", "/files/special/x", NB_RT_FOUND, "PUT /files/special/x", NULL);
    /* greedy needs at least one character */
    expect(t, "GET", "/files/", NB_RT_FOUND, "ANY /{proxy+}", "proxy=files/");
    expect(t, "GET", "/files", NB_RT_FOUND, "ANY /{proxy+}", "proxy=files");
    /* segment by segment from the left: /a/b/{y+} beats /a/{x}/c at segment 2 even though the
     * latter is "more literal" overall */
    expect(t, "GET", "/a/b/c", NB_RT_FOUND, "GET /a/b/{y+}", "y=c");
    expect(t, "GET", "/a/z/c", NB_RT_FOUND, "GET /a/{x}/c", "x=z");
    /* backtracking: the literal path /v1/x/.../z has no GET, the all-param one does */
    expect(t, "GET", "/v1/x/y/z", NB_RT_FOUND, "GET /v1/{a}/{b}/{c}", "a=x b=y c=z");
    expect(t, "POST", "/v1/x/y/z", NB_RT_FOUND, "POST /v1/x/{b}/z", "b=y");
    /* percent-decoded literals compare decoded; either spelling matches */
    expect(t, "GET", "/caf%C3%A9", NB_RT_FOUND, "GET /caf%C3%A9", NULL);
    expect(t, "GET", "/caf%c3%a9", NB_RT_FOUND, "GET /caf%C3%A9", NULL);
    expect(t, "GET", "/caf\xc3\xa9", NB_RT_FOUND, "GET /caf%C3%A9", NULL);
    expect(t, "GET", "/%75sers/%6De", NB_RT_FOUND, "GET /users/me", NULL);
    /* the catch-all's root is not matched by the greedy parameter */
    expect(t, "POST", "/", NB_RT_METHOD, "GET", NULL);
    /* empty segment: no {param} takes it */
    expect(t, "GET", "/users//posts/1", NB_RT_FOUND, "ANY /{proxy+}", "proxy=users//posts/1");
    nb_rt_free(t);
}

static void test_405_404(void)
{
    nb_rt *t = build();
    expect(t, "GET", "/only/delete", NB_RT_FOUND, "ANY /{proxy+}", "proxy=only/delete");
    nb_rt_free(t);

    t = nb_rt_new();
    nb_err err;
    CHECK(nb_rt_add(t, "DELETE", "/items/{id}", NULL, &err) == 0);
    CHECK(nb_rt_add(t, "GET", "/items/{id}", NULL, &err) == 0);
    CHECK(nb_rt_add(t, "PUT", "/items/special", NULL, &err) == 0);
    CHECK(nb_rt_add(t, "GET", "/items/{id}/{rest+}", NULL, &err) == 0);
    CHECK(nb_rt_add(t, "POST", "/items", NULL, &err) == 0);
    expect(t, "POST", "/items/1", NB_RT_METHOD, "DELETE, GET", NULL);
    /* the allow list gathers every template that fits, without duplicates */
    expect(t, "POST", "/items/special", NB_RT_METHOD, "PUT, DELETE, GET", NULL);
    expect(t, "GET", "/items", NB_RT_METHOD, "POST", NULL);
    /* methods are case-sensitive */
    expect(t, "get", "/items/1", NB_RT_METHOD, "DELETE, GET", NULL);
    expect(t, "GET", "/nothing", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/items/", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/items/1/", NB_RT_NONE, NULL, NULL);
    /* not a valid path */
    expect(t, "GET", "", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "items/1", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/items/%zz", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/items/%4", NB_RT_NONE, NULL, NULL);
    expect(t, "GET", "/items/1%", NB_RT_NONE, NULL, NULL);
    /* an empty table */
    nb_rt_free(t);
    t = nb_rt_new();
    expect(t, "GET", "/", NB_RT_NONE, NULL, NULL);
    nb_rt_free(t);

    /* an allow list longer than the field keeps the methods that fit, whole */
    t = nb_rt_new();
    char m[40];
    for (int i = 0; i < 12; i++) {
        snprintf(m, sizeof m, "METHOD%02d-%.20s", i, "XXXXXXXXXXXXXXXXXXXX");
        CHECK(nb_rt_add(t, m, "/x", NULL, &err) == 0);
    }
    nb_rt_match mm;
    CHECK(nb_rt_lookup(t, "GET", 3, "/x", 2, &mm) == NB_RT_METHOD);
    CHECK(strlen(mm.allow) < sizeof mm.allow);
    CHECK(strncmp(mm.allow, "METHOD00-", 9) == 0);
    size_t al = strlen(mm.allow);
    CHECK(mm.allow[al - 1] == 'X'); /* ends on a whole method */
    nb_rt_free(t);
}

static void test_params(void)
{
    nb_rt *t = nb_rt_new();
    nb_err err;
    CHECK(nb_rt_add(t, "GET", "/p/{a}/{b}", (void *)1, &err) == 0);
    CHECK(nb_rt_add(t, "GET", "/g/{all+}", (void *)2, &err) == 0);
    nb_rt_match m;
    const char *p = "/p/a%20b/%2F%00x";
    CHECK(nb_rt_lookup(t, "GET", 3, p, strlen(p), &m) == NB_RT_FOUND);
    CHECK(m.nparams == 2);
    CHECK_STR(m.params[0].name, "a");
    CHECK_STR(m.params[0].value, "a b");
    CHECK(m.params[0].value_len == 3);
    CHECK_STR(m.params[1].name, "b");
    CHECK(m.params[1].value_len == 3 && memcmp(m.params[1].value, "/\0x", 4) == 0);
    nb_rt_match_clear(&m);
    /* '+' is not a space in a path */
    p = "/p/a+b/c";
    CHECK(nb_rt_lookup(t, "GET", 3, p, strlen(p), &m) == NB_RT_FOUND);
    CHECK_STR(m.params[0].value, "a+b");
    nb_rt_match_clear(&m);
    /* a greedy value decodes too, %2F included */
    p = "/g/x%2Fy/z%41";
    CHECK(nb_rt_lookup(t, "GET", 3, p, strlen(p), &m) == NB_RT_FOUND);
    CHECK(m.ud == (void *)2);
    CHECK_STR(m.params[0].value, "x/y/zA");
    nb_rt_match_clear(&m);
    /* the path is given by length: bytes after it are not part of it */
    p = "/g/abc/def";
    CHECK(nb_rt_lookup(t, "GET", 3, p, 6, &m) == NB_RT_FOUND);
    CHECK_STR(m.params[0].value, "abc");
    nb_rt_match_clear(&m);
    /* method by length too */
    CHECK(nb_rt_lookup(t, "GETX", 3, p, 6, &m) == NB_RT_FOUND);
    nb_rt_match_clear(&m);
    /* a path deeper than the segment limit still reaches a greedy parameter */
    char deep[1024] = "/g";
    for (int i = 0; i < 100; i++)
        strcat(deep, "/s");
    CHECK(nb_rt_lookup(t, "GET", 3, deep, strlen(deep), &m) == NB_RT_FOUND);
    CHECK(m.params[0].value_len == 199);
    nb_rt_match_clear(&m);
    CHECK(nb_rt_lookup(t, "GET", 3, deep + 2, strlen(deep + 2), &m) == NB_RT_NONE);
    nb_rt_free(t);
}

static void expect_add(nb_rt *t, const char *method, const char *path, int status,
                       const char *in_msg)
{
    nb_err err = {0};
    int r = nb_rt_add(t, method, path, NULL, &err);
    if (status == 0) {
        if (r != 0) fprintf(stderr, "add %s %s: %s\n", method, path, err.msg);
        CHECK(r == 0);
        return;
    }
    if (r != -1 || err.status != status) {
        fprintf(stderr, "add %s %s: got %d/%d (%s), want %d\n", method ? method : "(null)",
                path ? path : "(null)", r, err.status, err.msg, status);
        exit(1);
    }
    CHECK_STR(err.code, status == 409 ? NB_E_CONFLICT : NB_E_INVALID_VALUE);
    if (in_msg && !strstr(err.msg, in_msg)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.msg, in_msg);
        exit(1);
    }
    /* the check without a table agrees on 400s */
    if (status == 400) {
        nb_err e2 = {0};
        CHECK(nb_rt_check(method, path, &e2) == -1 && e2.status == 400);
    }
}

static void test_validation(void)
{
    nb_rt *t = nb_rt_new();
    expect_add(t, "GET", "/users/{id}", 0, NULL);
    /* same method and shape, whatever the names: 409 naming the existing route */
    expect_add(t, "GET", "/users/{id}", 409, "GET /users/{id}");
    expect_add(t, "GET", "/users/{uid}", 409, "'GET /users/{id}'");
    expect_add(t, "PUT", "/users/{uid}", 0, NULL);
    expect_add(t, "ANY", "/users/{x}", 0, NULL);
    expect_add(t, "ANY", "/users/{y}", 409, "ANY /users/{x}");
    /* a literal written in two percent spellings is one shape */
    expect_add(t, "GET", "/caf%C3%A9", 0, NULL);
    expect_add(t, "GET", "/caf%c3%a9", 409, "GET /caf%C3%A9");
    /* param and greedy at the same place are different shapes */
    expect_add(t, "GET", "/users/{id+}", 0, NULL);
    expect_add(t, "GET", "/users", 0, NULL);
    expect_add(t, "GET", "/", 0, NULL);
    expect_add(t, "GET", "/", 409, "GET /");
    expect_add(t, "GET", "/{proxy+}", 0, NULL);
    expect_add(t, "GET", "/{other+}", 409, "GET /{proxy+}");

    /* bad templates */
    expect_add(t, "GET", "", 400, "start with '/'");
    expect_add(t, "GET", NULL, 400, NULL);
    expect_add(t, "GET", "users", 400, "start with '/'");
    expect_add(t, "GET", "/users//x", 400, "empty segment");
    expect_add(t, "GET", "/users/", 400, "empty segment");
    expect_add(t, "GET", "/{}", 400, NULL);
    expect_add(t, "GET", "/{+}", 400, NULL);
    expect_add(t, "GET", "/{a", 400, NULL);
    expect_add(t, "GET", "/a}", 400, NULL);
    expect_add(t, "GET", "/a{b}", 400, NULL);
    expect_add(t, "GET", "/{a}b", 400, NULL);
    expect_add(t, "GET", "/{a b}", 400, NULL);
    expect_add(t, "GET", "/{a/b}", 400, NULL);
    expect_add(t, "GET", "/{a}/{a}", 400, "twice");
    expect_add(t, "GET", "/{a}/{a+}", 400, "twice");
    expect_add(t, "GET", "/{a+}/b", 400, "last");
    expect_add(t, "GET", "/{a+}/{b}", 400, "last");
    expect_add(t, "GET", "/a b", 400, NULL);
    expect_add(t, "GET", "/a?b", 400, NULL);
    expect_add(t, "GET", "/a#b", 400, NULL);
    expect_add(t, "GET", "/a\tb", 400, NULL);
    expect_add(t, "GET", "/a%zz", 400, "percent");
    expect_add(t, "GET", "/a%2", 400, "percent");
    expect_add(t, "GET", "/a%00", 400, "percent");
    /* bad methods */
    expect_add(t, "get", "/m", 400, "method");
    expect_add(t, "", "/m", 400, "method");
    expect_add(t, NULL, "/m", 400, "method");
    expect_add(t, "G ET", "/m", 400, "method");
    expect_add(t, "GET\n", "/m", 400, "method");
    expect_add(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG", "/m", 400, "method");
    expect_add(t, "M-SEARCH", "/m", 0, NULL);

    /* limits: 64 segments and 16 parameters are fine, one more is not */
    char p[4096] = "";
    for (int i = 0; i < NB_RT_MAX_SEGMENTS; i++)
        strcat(p, "/s");
    expect_add(t, "GET", p, 0, NULL);
    strcat(p, "/s");
    expect_add(t, "GET", p, 400, "segments");
    p[0] = 0;
    for (int i = 0; i < NB_RT_MAX_PARAMS; i++)
        snprintf(p + strlen(p), sizeof p - strlen(p), "/{p%d}", i);
    expect_add(t, "GET", p, 0, NULL);
    snprintf(p + strlen(p), sizeof p - strlen(p), "/{p%d}", 99);
    expect_add(t, "GET", p, 400, "parameters");
    char longp[3000];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = 0;
    expect_add(t, "GET", longp, 400, "longer");
    nb_rt_free(t);

    nb_err err = {0};
    CHECK(nb_rt_check("ANY", "/x/{y}/{z+}", &err) == 0);
    CHECK(nb_rt_check("ANY", "/x/{y}/{y+}", &err) == -1 && err.status == 400);
}

/* A 16-parameter route fills every slot. */
static void test_max_params_match(void)
{
    nb_rt *t = nb_rt_new();
    nb_err err;
    char tp[512] = "", path[512] = "";
    for (int i = 0; i < NB_RT_MAX_PARAMS - 1; i++) {
        snprintf(tp + strlen(tp), sizeof tp - strlen(tp), "/{p%d}", i);
        snprintf(path + strlen(path), sizeof path - strlen(path), "/v%d", i);
    }
    strcat(tp, "/{rest+}");
    strcat(path, "/r/s");
    CHECK(nb_rt_add(t, "GET", tp, NULL, &err) == 0);
    nb_rt_match m;
    CHECK(nb_rt_lookup(t, "GET", 3, path, strlen(path), &m) == NB_RT_FOUND);
    CHECK(m.nparams == NB_RT_MAX_PARAMS);
    CHECK_STR(m.params[3].name, "p3");
    CHECK_STR(m.params[3].value, "v3");
    CHECK_STR(m.params[15].name, "rest");
    CHECK_STR(m.params[15].value, "r/s");
    nb_rt_match_clear(&m);
    nb_rt_free(t);
}

int main(void)
{
    test_precedence();
    test_405_404();
    test_params();
    test_validation();
    test_max_params_match();
    printf("routes: ok\n");
    return 0;
}
