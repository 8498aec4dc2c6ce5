/* nb_met: the exposition writer (escaping, sorted stable output, histograms written
 * cumulatively with +Inf, _sum and _count, name rules) and the registry (outcomes, error types,
 * the "_other" bound, gateway status classes, concurrent counting). */
#include "metrics/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include "check.h"

#define LBL(...) ((const char *const[]){__VA_ARGS__, NULL})

static char *page(nb_met_w *w)
{
    nb_buf out;
    nb_buf_init(&out, 1 << 20);
    nb_err err = {0};
    CHECK(nb_met_w_finish(w, &out, &err) == 0);
    nb_met_w_free(w);
    return out.data ? out.data : calloc(1, 1);
}

static void test_escaping_and_order(void)
{
    nb_met_w w;
    nb_met_w_init(&w);
    CHECK(nb_met_w_family(&w, "z_gauge", NB_MET_GAUGE, "last\\one\nline") == 0);
    CHECK(nb_met_w_family(&w, "a_total", NB_MET_COUNTER, "first") == 0);
    CHECK(nb_met_w_family(&w, "a_total", NB_MET_COUNTER, "again: ignored") == 0);
    /* Added out of order: written sorted by family, then by labels. */
    CHECK(nb_met_w_sample(&w, "z_gauge", NULL, 1.5) == 0);
    CHECK(nb_met_w_sample(&w, "a_total", LBL("fn", "b"), 2) == 0);
    CHECK(nb_met_w_sample(&w, "a_total", LBL("fn", "a\\b\"c\nd"), 1) == 0);
    CHECK(nb_met_w_sample(&w, "a_total", LBL("fn", "a"), 12345678901.0) == 0);
    char *p = page(&w);
    CHECK_STR(p, "# HELP a_total first\n"
                 "# TYPE a_total counter\n"
                 "a_total{fn=\"a\"} 12345678901\n"
                 "a_total{fn=\"a\\\\b\\\"c\\nd\"} 1\n"
                 "a_total{fn=\"b\"} 2\n"
                 "# HELP z_gauge last\\\\one\\nline\n"
                 "# TYPE z_gauge gauge\n"
                 "z_gauge 1.5\n");
    free(p);
}

static void test_histogram(void)
{
    nb_met_w w;
    nb_met_w_init(&w);
    CHECK(nb_met_w_family(&w, "d_seconds", NB_MET_HISTOGRAM, "d") == 0);
    const double bounds[] = {0.001, 0.25, 1};
    const uint64_t counts[] = {2, 0, 3, 1}; /* not cumulative; the last is above 1 */
    CHECK(nb_met_w_histogram(&w, "d_seconds", LBL("fn", "x"), bounds, 3, counts, 7.125) == 0);
    const uint64_t none[] = {0, 0, 0, 0};
    CHECK(nb_met_w_histogram(&w, "d_seconds", LBL("fn", "a"), bounds, 3, none, 0) == 0);
    char *p = page(&w);
    CHECK_STR(p, "# HELP d_seconds d\n"
                 "# TYPE d_seconds histogram\n"
                 "d_seconds_bucket{fn=\"a\",le=\"0.001\"} 0\n"
                 "d_seconds_bucket{fn=\"a\",le=\"0.25\"} 0\n"
                 "d_seconds_bucket{fn=\"a\",le=\"1\"} 0\n"
                 "d_seconds_bucket{fn=\"a\",le=\"+Inf\"} 0\n"
                 "d_seconds_sum{fn=\"a\"} 0\n"
                 "d_seconds_count{fn=\"a\"} 0\n"
                 "d_seconds_bucket{fn=\"x\",le=\"0.001\"} 2\n"
                 "d_seconds_bucket{fn=\"x\",le=\"0.25\"} 2\n"
                 "d_seconds_bucket{fn=\"x\",le=\"1\"} 5\n"
                 "d_seconds_bucket{fn=\"x\",le=\"+Inf\"} 6\n"
                 "d_seconds_sum{fn=\"x\"} 7.125\n"
                 "d_seconds_count{fn=\"x\"} 6\n");
    free(p);
}

static void test_rules(void)
{
    nb_met_w w;
    nb_met_w_init(&w);
    CHECK(nb_met_w_family(&w, "requests", NB_MET_COUNTER, "no _total") < 0);
    nb_met_w_free(&w);
    nb_met_w_init(&w);
    CHECK(nb_met_w_family(&w, "bad-name", NB_MET_GAUGE, "x") < 0);
    nb_met_w_free(&w);
    nb_met_w_init(&w);
    CHECK(nb_met_w_family(&w, "g_total", NB_MET_GAUGE, "a gauge named like a counter") < 0);
    nb_met_w_free(&w);
    nb_met_w_init(&w);
    CHECK(nb_met_w_sample(&w, "undeclared", NULL, 1) < 0);
    nb_buf out;
    nb_buf_init(&out, 1024);
    nb_err err = {0};
    CHECK(nb_met_w_finish(&w, &out, &err) < 0); /* a failed call fails the page */
    nb_met_w_free(&w);
    /* A page over its buffer's cap is an error, never a cut page. */
    nb_met_w_init(&w);
    nb_met_w_family(&w, "g", NB_MET_GAUGE, "g");
    for (int i = 0; i < 100; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        nb_met_w_sample(&w, "g", LBL("i", v), i);
    }
    CHECK(nb_met_w_finish(&w, &out, &err) < 0);
    nb_met_w_free(&w);
    nb_buf_free(&out);
}

static void test_error_types(void)
{
    CHECK_STR(nb_met_error_type(NB_OUTCOME_HANDLED, "MyError"), "Handled");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNHANDLED, "ValueError"), "Unhandled");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNHANDLED, "Runtime.ExitError"), "Runtime.ExitError");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNHANDLED, "Sandbox.Timedout"), "Sandbox.Timedout");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNHANDLED, "Runtime.OutOfMemory"),
              "Runtime.OutOfMemory");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNHANDLED, "Runtime.ImportModuleError"), "other");
    CHECK_STR(nb_met_error_type(NB_OUTCOME_UNDELIVERED, "Sandbox.Failure"), "other");
}

static nb_fn_version ver_a = {.ns = "default", .name = "a"};

static void *count_many(void *m)
{
    nb_inv inv = {.ver = &ver_a, .outcome = NB_OUTCOME_OK, .started_us = 0, .ended_us = 2000};
    for (int i = 0; i < 10000; i++)
        nb_met_invocation(m, &inv, 1, -1);
    return NULL;
}

static void test_registry(void)
{
    nb_met *m = nb_met_new();
    nb_met_invocation(NULL, NULL, 0, 0); /* off: nothing */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, count_many, m);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    nb_inv cold = {.ver = &ver_a, .outcome = NB_OUTCOME_UNHANDLED, .ended_us = 1500000};
    snprintf(cold.error_type, sizeof cold.error_type, "Sandbox.Timedout");
    nb_met_invocation(m, &cold, 1, 3000);
    nb_inv thr = {.ver = &ver_a, .outcome = NB_OUTCOME_UNHANDLED, .throttled = 1};
    nb_met_invocation(m, &thr, 0, -1);
    /* Past NB_MET_MAX_LABELLED functions, the rest share "_other". */
    for (int i = 0; i < NB_MET_MAX_LABELLED + 10; i++) {
        nb_fn_version v = {.ns = "default"};
        snprintf(v.name, sizeof v.name, "f%d", i);
        nb_inv inv = {.ver = &v, .outcome = NB_OUTCOME_OK};
        nb_met_invocation(m, &inv, 0, -1);
    }
    nb_met_gateway(m, "default", "shop", 200);
    nb_met_gateway(m, "default", "shop", 204);
    nb_met_gateway(m, "default", "shop", 499);
    nb_met_gateway(m, "", "", 404);
    nb_buf out;
    nb_buf_init(&out, NB_MET_MAX_PAGE);
    nb_err err = {0};
    CHECK(nb_met_render(m, &out, &err) == 0);
    const char *p = out.data;
    CHECK(strstr(p, "nimbus_invocations_total{namespace=\"default\",function=\"a\",outcome="
                    "\"success\"} 40000\n"));
    CHECK(strstr(p, "nimbus_invocations_total{namespace=\"default\",function=\"a\",outcome="
                    "\"timeout\"} 1\n"));
    CHECK(strstr(p, "nimbus_invocations_total{namespace=\"default\",function=\"a\",outcome="
                    "\"throttled\"} 1\n"));
    CHECK(strstr(p, "nimbus_throttles_total{namespace=\"default\",function=\"a\"} 1\n"));
    CHECK(strstr(p, "nimbus_errors_total{namespace=\"default\",function=\"a\",type="
                    "\"Sandbox.Timedout\"} 1\n"));
    CHECK(strstr(p, "nimbus_cold_starts_total{namespace=\"default\",function=\"a\"} 1\n"));
    /* 2 ms lands in the 2.5 ms bucket; 1.5 s in the 2.5 s one. */
    CHECK(strstr(p, "nimbus_invocation_duration_seconds_bucket{namespace=\"default\",function="
                    "\"a\",le=\"0.001\"} 0\n"));
    CHECK(strstr(p, "nimbus_invocation_duration_seconds_bucket{namespace=\"default\",function="
                    "\"a\",le=\"0.0025\"} 40000\n"));
    CHECK(strstr(p, "nimbus_invocation_duration_seconds_bucket{namespace=\"default\",function="
                    "\"a\",le=\"2.5\"} 40001\n"));
    CHECK(strstr(p, "nimbus_invocation_duration_seconds_sum{namespace=\"default\",function="
                    "\"a\"} 81.5\n"));
    CHECK(strstr(p, "nimbus_init_duration_seconds_bucket{namespace=\"default\",function="
                    "\"a\",le=\"0.005\"} 1\n"));
    CHECK(strstr(p, "nimbus_invocations_total{namespace=\"_other\",function=\"_other\",outcome="
                    "\"success\"} 11\n"));
    CHECK(strstr(p, "nimbus_gateway_requests_total{namespace=\"default\",api=\"shop\","
                    "status_class=\"2xx\"} 2\n"));
    CHECK(strstr(p, "nimbus_gateway_requests_total{namespace=\"default\",api=\"shop\","
                    "status_class=\"4xx\"} 1\n"));
    CHECK(strstr(p, "nimbus_gateway_requests_total{namespace=\"_none\",api=\"_none\","
                    "status_class=\"4xx\"} 1\n"));
    CHECK(strstr(p, "\nprocess_open_fds "));
    CHECK(strstr(p, "\nprocess_resident_memory_bytes "));
    CHECK(strstr(p, "\nprocess_start_time_seconds "));
    CHECK(strstr(p, "# TYPE nimbus_instances gauge\n"));
    /* Stable: the same state renders the same bytes (process figures aside). */
    nb_buf again;
    nb_buf_init(&again, NB_MET_MAX_PAGE);
    CHECK(nb_met_render(m, &again, &err) == 0);
    size_t cut = (size_t)(strstr(p, "# HELP process_") - p);
    CHECK(strncmp(p, again.data, cut) == 0);
    nb_buf_free(&again);
    nb_buf_free(&out);
    nb_met_free(m);
}

int main(void)
{
    test_escaping_and_order();
    test_histogram();
    test_rules();
    test_error_types();
    test_registry();
    printf("ok\n");
    return 0;
}
