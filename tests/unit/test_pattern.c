/* Unit tests of event patterns and filter policies (src/events/pattern.h): tables of pattern x
 * event -> expected match, and of invalid patterns -> a substring of the error. */
#include "events/pattern.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

typedef struct mcase {
    const char *pattern;
    const char *event;
    int want;
} mcase;

#define EV                                                                                         \
    "{\"source\":\"com.shop\",\"detail-type\":\"Order Placed\",\"n\":5,\"f\":2.5,\"ok\":true,"     \
    "\"none\":null,\"empty\":\"\",\"tags\":[\"red\",\"blue\",7],\"big\":9007199254740993,"         \
    "\"detail\":{\"state\":\"shipped\",\"qty\":0,\"addr\":{\"city\":\"Lyon\",\"zip\":\"69001\"},"  \
    "\"items\":[{\"sku\":\"A1\",\"n\":2},{\"sku\":\"B2\",\"n\":9}],\"obj\":{}}}"

static const mcase cases[] = {
    /* literals */
    {"{\"source\":[\"com.shop\"]}", EV, 1},
    {"{\"source\":[\"com.sho\"]}", EV, 0},
    {"{\"source\":[\"COM.SHOP\"]}", EV, 0},
    {"{\"n\":[5]}", EV, 1},
    {"{\"n\":[5.0]}", EV, 1},
    {"{\"n\":[\"5\"]}", EV, 0},
    {"{\"f\":[2.5]}", EV, 1},
    {"{\"f\":[2]}", EV, 0},
    {"{\"ok\":[true]}", EV, 1},
    {"{\"ok\":[false]}", EV, 0},
    {"{\"ok\":[\"true\"]}", EV, 0},
    {"{\"none\":[null]}", EV, 1},
    {"{\"source\":[null]}", EV, 0},
    {"{\"missing\":[null]}", EV, 0},
    {"{\"empty\":[\"\"]}", EV, 1},
    {"{\"big\":[9007199254740993]}", EV, 1},
    {"{\"big\":[9007199254740992]}", EV, 0}, /* integers compare exactly, not as doubles */
    /* OR within a leaf, AND across keys */
    {"{\"source\":[\"x\",\"com.shop\"]}", EV, 1},
    {"{\"source\":[\"x\",\"y\"]}", EV, 0},
    {"{\"source\":[\"com.shop\"],\"n\":[5]}", EV, 1},
    {"{\"source\":[\"com.shop\"],\"n\":[6]}", EV, 0},
    {"{}", EV, 1},
    /* nested */
    {"{\"detail\":{\"state\":[\"shipped\"]}}", EV, 1},
    {"{\"detail\":{\"addr\":{\"city\":[\"Lyon\"],\"zip\":[{\"prefix\":\"69\"}]}}}", EV, 1},
    {"{\"detail\":{\"addr\":{\"city\":[\"Paris\"]}}}", EV, 0},
    {"{\"detail\":{\"state\":[\"shipped\"]},\"source\":[\"other\"]}", EV, 0},
    {"{\"source\":{\"x\":[\"y\"]}}", EV, 0}, /* nested pattern over a scalar */
    {"{\"detail\":[\"shipped\"]}", EV, 0},   /* literal over an object */
    {"{\"detail\":{\"obj\":{\"a\":[{\"exists\":false}]}}}", EV, 1},
    {"{\"nope\":{\"a\":[{\"exists\":false}]}}", EV, 1},
    {"{\"nope\":{\"a\":[{\"exists\":true}]}}", EV, 0},
    /* arrays in the event */
    {"{\"tags\":[\"blue\"]}", EV, 1},
    {"{\"tags\":[7]}", EV, 1},
    {"{\"tags\":[\"green\"]}", EV, 0},
    {"{\"tags\":[{\"prefix\":\"bl\"}]}", EV, 1},
    {"{\"tags\":[{\"numeric\":[\">\",6]}]}", EV, 1},
    {"{\"tags\":[{\"anything-but\":[\"red\",\"blue\"]}]}", EV, 1}, /* 7 is neither */
    {"{\"detail\":{\"items\":{\"sku\":[\"B2\"]}}}", EV, 1},
    {"{\"detail\":{\"items\":{\"sku\":[\"B2\"],\"n\":[2]}}}", EV, 0}, /* one element holds all */
    {"{\"detail\":{\"items\":{\"sku\":[\"A1\"],\"n\":[2]}}}", EV, 1},
    {"{\"x\":[\"a\"]}", "{\"x\":[]}", 0},
    {"{\"x\":[{\"exists\":true}]}", "{\"x\":[]}", 1},
    /* prefix / suffix / equals-ignore-case */
    {"{\"source\":[{\"prefix\":\"com.\"}]}", EV, 1},
    {"{\"source\":[{\"prefix\":\"\"}]}", EV, 1},
    {"{\"source\":[{\"prefix\":\"org.\"}]}", EV, 0},
    {"{\"n\":[{\"prefix\":\"5\"}]}", EV, 0},
    {"{\"source\":[{\"suffix\":\".shop\"}]}", EV, 1},
    {"{\"source\":[{\"suffix\":\"com.shop.x\"}]}", EV, 0},
    {"{\"detail-type\":[{\"equals-ignore-case\":\"order PLACED\"}]}", EV, 1},
    {"{\"detail-type\":[{\"equals-ignore-case\":\"order placed!\"}]}", EV, 0},
    {"{\"ok\":[{\"equals-ignore-case\":\"true\"}]}", EV, 0},
    /* anything-but */
    {"{\"source\":[{\"anything-but\":\"com.shop\"}]}", EV, 0},
    {"{\"source\":[{\"anything-but\":\"other\"}]}", EV, 1},
    {"{\"source\":[{\"anything-but\":[\"a\",\"com.shop\"]}]}", EV, 0},
    {"{\"n\":[{\"anything-but\":[4,6]}]}", EV, 1},
    {"{\"n\":[{\"anything-but\":5.0}]}", EV, 0},
    {"{\"missing\":[{\"anything-but\":\"x\"}]}", EV, 0}, /* needs the field */
    {"{\"source\":[{\"anything-but\":{\"prefix\":\"com.\"}}]}", EV, 0},
    {"{\"source\":[{\"anything-but\":{\"prefix\":\"org.\"}}]}", EV, 1},
    {"{\"source\":[{\"anything-but\":{\"suffix\":\"shop\"}}]}", EV, 0},
    {"{\"n\":[{\"anything-but\":{\"prefix\":\"x\"}}]}", EV, 0}, /* strings only */
    {"{\"detail\":[{\"anything-but\":\"x\"}]}", EV, 0},         /* objects never */
    /* numeric */
    {"{\"n\":[{\"numeric\":[\"=\",5]}]}", EV, 1},
    {"{\"n\":[{\"numeric\":[\"=\",5.0]}]}", EV, 1},
    {"{\"n\":[{\"numeric\":[\">\",5]}]}", EV, 0},
    {"{\"n\":[{\"numeric\":[\">=\",5]}]}", EV, 1},
    {"{\"n\":[{\"numeric\":[\"<\",5]}]}", EV, 0},
    {"{\"n\":[{\"numeric\":[\"<=\",5]}]}", EV, 1},
    {"{\"n\":[{\"numeric\":[\">\",0,\"<=\",5]}]}", EV, 1},
    {"{\"n\":[{\"numeric\":[\">\",0,\"<\",5]}]}", EV, 0},
    {"{\"f\":[{\"numeric\":[\">\",2,\"<\",3]}]}", EV, 1},
    {"{\"f\":[{\"numeric\":[\">\",2.5]}]}", EV, 0},
    {"{\"f\":[{\"numeric\":[\">\",2.49]}]}", EV, 1},
    {"{\"detail\":{\"qty\":[{\"numeric\":[\"=\",0]}]}}", EV, 1},
    {"{\"x\":[{\"numeric\":[\"<\",0]}]}", "{\"x\":-0.5}", 1},
    {"{\"x\":[{\"numeric\":[\">\",-1e3]}]}", "{\"x\":-999}", 1},
    {"{\"x\":[{\"numeric\":[\">\",1]}]}", "{\"x\":\"5\"}", 0}, /* events: strings aren't numbers */
    {"{\"x\":[{\"numeric\":[\">\",1]}]}", "{\"x\":true}", 0},
    {"{\"missing\":[{\"numeric\":[\">\",1]}]}", EV, 0},
    /* exists */
    {"{\"source\":[{\"exists\":true}]}", EV, 1},
    {"{\"source\":[{\"exists\":false}]}", EV, 0},
    {"{\"missing\":[{\"exists\":false}]}", EV, 1},
    {"{\"missing\":[{\"exists\":true}]}", EV, 0},
    {"{\"none\":[{\"exists\":true}]}", EV, 1},
    {"{\"detail\":[{\"exists\":true}]}", EV, 1},
    {"{\"missing\":[\"x\",{\"exists\":false}]}", EV, 1},
    {"{\"detail\":{\"nope\":[{\"exists\":false}],\"state\":[\"shipped\"]}}", EV, 1},
    /* events that are not objects */
    {"{\"a\":[\"x\"]}", "[1,2]", 0},
    {"{\"a\":[{\"exists\":false}]}", "\"str\"", 1},
    /* exotic strings */
    {"{\"s\":[\"caf\\u00e9\"]}", "{\"s\":\"caf\\u00e9\"}", 1},
    {"{\"s\":[{\"equals-ignore-case\":\"CAF\\u00e9\"}]}", "{\"s\":\"caf\\u00e9\"}", 1},
};

/* Filter policies against message attributes (string values). */
static const mcase attr_cases[] = {
    {"{\"store\":[\"example_corp\"]}", "{\"store\":\"example_corp\"}", 1},
    {"{\"store\":[\"example_corp\"]}", "{\"store\":\"other\"}", 0},
    {"{\"store\":[\"example_corp\"]}", "{}", 0},
    {"{\"price\":[100]}", "{\"price\":\"100\"}", 1},
    {"{\"price\":[100]}", "{\"price\":\"100.0\"}", 1},
    {"{\"price\":[100]}", "{\"price\":\"1e2\"}", 1},
    {"{\"price\":[100]}", "{\"price\":\"100 \"}", 0},
    {"{\"price\":[\"100\"]}", "{\"price\":\"100\"}", 1},
    {"{\"price\":[\"100\"]}", "{\"price\":\"100.0\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",50]}]}", "{\"price\":\"100\"}", 1},
    {"{\"price\":[{\"numeric\":[\">\",50]}]}", "{\"price\":\"49.99\"}", 0},
    {"{\"price\":[{\"numeric\":[\">=\",0,\"<\",1]}]}", "{\"price\":\"0.5\"}", 1},
    {"{\"price\":[{\"numeric\":[\">=\",0,\"<\",1]}]}", "{\"price\":\"-0\"}", 1},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"100 apples\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"0x10\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\" 5\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"inf\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"1e999\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"01\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"1.\"}", 0},
    {"{\"price\":[{\"numeric\":[\">\",0]}]}", "{\"price\":\"\"}", 0},
    {"{\"price\":[{\"numeric\":[\"<\",0]}]}", "{\"price\":\"-2.5e3\"}", 1},
    {"{\"price\":[{\"numeric\":[\">\",1e18]}]}", "{\"price\":\"99999999999999999999\"}", 1},
    {"{\"price\":[{\"numeric\":[\"=\",5]}]}", "{\"price\":5}", 1}, /* a real number works too */
    {"{\"price\":[{\"anything-but\":[100]}]}", "{\"price\":\"100.0\"}", 0},
    {"{\"price\":[{\"anything-but\":[100]}]}", "{\"price\":\"101\"}", 1},
    {"{\"event\":[{\"prefix\":\"order-\"}]}", "{\"event\":\"order-placed\"}", 1},
    {"{\"event\":[{\"anything-but\":{\"prefix\":\"order-\"}}]}", "{\"event\":\"order-x\"}", 0},
    {"{\"event\":[{\"equals-ignore-case\":\"ABC\"}]}", "{\"event\":\"aBc\"}", 1},
    {"{\"a\":[{\"exists\":false}]}", "{\"b\":\"1\"}", 1},
    {"{\"a\":[{\"exists\":true}],\"b\":[\"1\"]}", "{\"a\":\"x\",\"b\":\"1\"}", 1},
    {"{\"a\":[{\"exists\":true}],\"b\":[\"2\"]}", "{\"a\":\"x\",\"b\":\"1\"}", 0},
    {"{\"a\":[\"x\"]}", "{\"a\":[\"y\",\"x\"]}", 1}, /* String.Array attributes */
};

typedef struct ecase {
    const char *pattern;
    int policy;
    const char *want; /* substring of the message */
} ecase;

static const ecase bad[] = {
    {"", 0, "not valid JSON"},
    {"{", 0, "not valid JSON"},
    {"[]", 0, "must be a JSON object, not an array"},
    {"\"x\"", 0, "must be a JSON object"},
    {"{\"a\":\"x\"}", 0, "pattern: a: must be an array of matchers or an object, not a string"},
    {"{\"a\":5}", 0, "a: must be an array"},
    {"{\"a\":null}", 0, "a: must be an array"},
    {"{\"a\":[]}", 0, "a: an empty array matches nothing"},
    {"{\"a\":{}}", 0, "a: an empty object matches nothing"},
    {"{\"a\":{\"b\":[[1]]}}", 0, "a.b[0]: a nested array is not a matcher"},
    {"{\"a\":[\"x\",{\"prefx\":\"y\"}]}", 0, "a[1]: unknown operator \"prefx\""},
    {"{\"a\":[{}]}", 0, "a[0]: a matcher object needs exactly one operator, not 0"},
    {"{\"a\":[{\"prefix\":\"x\",\"suffix\":\"y\"}]}", 0, "exactly one operator, not 2"},
    {"{\"a\":[{\"prefix\":5}]}", 0, "a[0]: prefix needs a string, not a number"},
    {"{\"a\":[{\"suffix\":null}]}", 0, "suffix needs a string, not null"},
    {"{\"a\":[{\"equals-ignore-case\":[\"x\"]}]}", 0, "equals-ignore-case needs a string"},
    {"{\"a\":[{\"exists\":\"yes\"}]}", 0, "exists needs true or false, not a string"},
    {"{\"a\":[{\"numeric\":[\"=>\",5]}]}", 0, "a[0]: bad numeric operator \"=>\""},
    {"{\"a\":[{\"numeric\":[5,5]}]}", 0, "bad numeric operator"},
    {"{\"a\":[{\"numeric\":[\">\"]}]}", 0, "numeric needs [op, number]"},
    {"{\"a\":[{\"numeric\":[\">\",1,\"<\"]}]}", 0, "numeric needs [op, number]"},
    {"{\"a\":[{\"numeric\":\">5\"}]}", 0, "numeric needs [op, number]"},
    {"{\"a\":[{\"numeric\":[\">\",\"5\"]}]}", 0, "numeric bound must be a number, not a string"},
    {"{\"a\":[{\"numeric\":[\"<\",5,\">\",1]}]}", 0, "a range is > or >= then < or <="},
    {"{\"a\":[{\"numeric\":[\"=\",5,\"<\",6]}]}", 0, "a range is"},
    {"{\"a\":[{\"anything-but\":[]}]}", 0, "anything-but with an empty list"},
    {"{\"a\":[{\"anything-but\":[[1]]}]}", 0, "anything-but list holds an array"},
    {"{\"a\":[{\"anything-but\":{\"numeric\":[\">\",1]}}]}", 0,
     "unknown anything-but operator \"numeric\""},
    {"{\"a\":[{\"anything-but\":{\"prefix\":1}}]}", 0, "prefix needs a string"},
    {"{\"a\":[{\"anything-but\":{}}]}", 0, "anything-but object needs exactly one"},
    {"{\"a\":[\"x\"],\"a\":[\"y\"]}", 0, "duplicate"},
    {"{\"a\":{\"b\":[\"x\"]}}", 1, "filter policy: a: a filter policy is flat"},
    {"{\"a\":\"x\"}", 1, "filter policy: a: must be an array of matchers, not a string"},
    {"{\"a\":[{\"nope\":1}]}", 1, "filter policy: a[0]: unknown operator \"nope\""},
};

static void check_match(const mcase *c, int attrs)
{
    nb_err err = {0};
    nb_pat *p = attrs ? nb_pat_compile_filter_policy(c->pattern, strlen(c->pattern), &err)
                      : nb_pat_compile(c->pattern, strlen(c->pattern), &err);
    if (!p) {
        fprintf(stderr, "compile %s: %s\n", c->pattern, err.msg);
        exit(1);
    }
    json_error_t je;
    json_t *ev = json_loads(c->event, JSON_DECODE_ANY, &je);
    if (!ev) {
        fprintf(stderr, "test event %s: %s\n", c->event, je.text);
        exit(1);
    }
    int got = attrs ? nb_pat_match_attrs(p, ev) : nb_pat_match(p, ev);
    if (got != c->want) {
        fprintf(stderr, "%s\n  vs %s\n  got %d, want %d\n", c->pattern, c->event, got, c->want);
        exit(1);
    }
    json_decref(ev);
    nb_pat_free(p);
}

static void check_bad(const ecase *c)
{
    nb_err err = {0};
    size_t len = strlen(c->pattern);
    nb_pat *p = c->policy ? nb_pat_compile_filter_policy(c->pattern, len, &err)
                          : nb_pat_compile(c->pattern, len, &err);
    if (p || err.status != 400 || !strstr(err.msg, c->want)) {
        fprintf(stderr, "%s: got %s (%d %s), want \"%s\"\n", c->pattern, p ? "a pattern" : err.msg,
                err.status, err.code ? err.code : "-", c->want);
        exit(1);
    }
}

/* Builds {"k":{"k":...[ "x" ]...}} with depth levels of keys. */
static char *nested(int depth)
{
    size_t cap = (size_t)depth * 8 + 16;
    char *s = malloc(cap), *w = s;
    for (int i = 0; i < depth - 1; i++)
        w += sprintf(w, "{\"k\":");
    w += sprintf(w, "{\"k\":[\"x\"]}");
    for (int i = 0; i < depth - 1; i++)
        *w++ = '}';
    *w = 0;
    return s;
}

static void test_limits(void)
{
    nb_err err = {0};
    char *ok = nested(NB_PAT_MAX_DEPTH), *deep = nested(NB_PAT_MAX_DEPTH + 1);
    nb_pat *p = nb_pat_compile(ok, strlen(ok), &err);
    CHECK(p);
    nb_pat_free(p);
    CHECK(!nb_pat_compile(deep, strlen(deep), &err));
    CHECK(err.status == 400 && strcmp(err.code, NB_E_INVALID_VALUE) == 0);
    CHECK(strstr(err.msg, "nested deeper than 10 levels"));
    CHECK(strstr(err.msg, "k.k.k.k.k.k.k.k.k.k.k"));
    free(ok);
    free(deep);

    /* 100 matchers fit, 101 do not; anything-but list values count. */
    char buf[NB_PAT_MAX_BYTES + 64];
    for (int n = 100; n <= 101; n++) {
        char *w = buf + sprintf(buf, "{\"a\":[");
        for (int i = 0; i < n; i++)
            w += sprintf(w, "%s%d", i ? "," : "", i);
        sprintf(w, "]}");
        p = nb_pat_compile(buf, strlen(buf), &err);
        CHECK(n == 100 ? p != NULL : p == NULL);
        nb_pat_free(p);
    }
    CHECK(strstr(err.msg, "more than 100 matchers"));
    const char *ab = "{\"a\":[{\"anything-but\":[1,2,3]}],\"b\":[";
    char *w = buf + sprintf(buf, "%s", ab);
    for (int i = 0; i < 98; i++)
        w += sprintf(w, "%s%d", i ? "," : "", i);
    sprintf(w, "]}");
    CHECK(!nb_pat_compile(buf, strlen(buf), &err)); /* 3 + 98 */
    CHECK(strstr(err.msg, "more than 100"));

    /* size: 8 KiB of text, whitespace included */
    memset(buf, ' ', sizeof buf);
    memcpy(buf, "{\"a\":[1]}", 9);
    p = nb_pat_compile(buf, NB_PAT_MAX_BYTES, &err);
    CHECK(p);
    nb_pat_free(p);
    CHECK(!nb_pat_compile(buf, NB_PAT_MAX_BYTES + 1, &err));
    CHECK(err.status == 400 && strstr(err.msg, "8193 bytes; the limit is 8192"));

    /* the length is honoured: no NUL needed */
    const char *text = "{\"a\":[1]}garbage";
    p = nb_pat_compile(text, 9, &err);
    CHECK(p);
    nb_pat_free(p);
    CHECK(!nb_pat_compile(NULL, 0, &err));
    CHECK(strcmp(err.code, NB_E_INVALID_JSON) == 0);
}

/* The compiled pattern outlives its text, and is shared by threads. */
static nb_pat *shared;
static json_t *shared_yes, *shared_no;

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++)
        if (!nb_pat_match(shared, shared_yes) || nb_pat_match(shared, shared_no)) return (void *)1;
    return NULL;
}

static void test_threads(void)
{
    nb_err err = {0};
    char *text =
        strdup("{\"detail\":{\"state\":[{\"prefix\":\"ship\"}],\"n\":[{\"numeric\":[\">\",1]}]}}");
    shared = nb_pat_compile(text, strlen(text), &err);
    CHECK(shared);
    memset(text, 'x', strlen(text));
    free(text);
    shared_yes = json_loads("{\"detail\":{\"state\":\"shipped\",\"n\":2}}", 0, NULL);
    shared_no = json_loads("{\"detail\":{\"state\":\"shipped\",\"n\":1}}", 0, NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, worker, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        CHECK(pthread_join(t[i], &rc) == 0 && rc == NULL);
    }
    json_decref(shared_yes);
    json_decref(shared_no);
    nb_pat_free(shared);
    nb_pat_free(NULL);
}

int main(void)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++, n++)
        check_match(&cases[i], 0);
    for (size_t i = 0; i < sizeof attr_cases / sizeof attr_cases[0]; i++, n++)
        check_match(&attr_cases[i], 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++, n++)
        check_bad(&bad[i]);
    test_limits();
    test_threads();
    printf("test_pattern: %zu table cases ok\n", n);
    return 0;
}
