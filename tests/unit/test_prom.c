/* nb_prom: sample lines with and without labels, escapes, special values, timestamps; comments
 * and blanks skipped; malformed lines refused. */
#include "cli/prom.h"

#include "check.h"

#include <math.h>

static int parse(const char *line, nb_prom_sample *s)
{
    return nb_prom_parse_line(line, strlen(line), s);
}

int main(void)
{
    nb_prom_sample s;
    CHECK(
        parse("nimbus_invocations_total{namespace=\"default\",function=\"hi\",outcome=\"success\"}"
              " 12",
              &s) == 1);
    CHECK_STR(s.name, "nimbus_invocations_total");
    CHECK(s.nlabels == 3 && s.value == 12);
    CHECK_STR(nb_prom_label(&s, "function"), "hi");
    CHECK(nb_prom_label(&s, "nope") == NULL);

    CHECK(parse("x_bucket{f=\"a\\\"b\\\\c\\nd\", le=\"+Inf\",} 3 1700000000000", &s) == 1);
    CHECK_STR(nb_prom_label(&s, "f"), "a\"b\\c\nd");
    CHECK_STR(nb_prom_label(&s, "le"), "+Inf");
    CHECK(s.value == 3);

    CHECK(parse("process_start_time_seconds 1.7e9", &s) == 1 && s.value == 1.7e9 && !s.nlabels);
    CHECK(parse("g +Inf", &s) == 1 && isinf(s.value) && s.value > 0);
    CHECK(parse("g NaN", &s) == 1 && isnan(s.value));

    CHECK(parse("", &s) == 0);
    CHECK(parse("   ", &s) == 0);
    CHECK(parse("# HELP g a gauge", &s) == 0);
    CHECK(parse("# TYPE g gauge", &s) == 0);

    const char *bad[] = {"1abc 2",      "g",
                         "g{",          "g{a=\"1\"",
                         "g{a=1} 2",    "g{a=\"1\"} x",
                         "g 1 2 3",     "g{a=\"\\x\"} 1",
                         "g{=\"1\"} 1", "g{a=\"1\" b=\"2\"} 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (parse(bad[i], &s) != -1) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(parse(bad[i], &s) == -1);
    }
    /* Over the limits: refused, never truncated. */
    char longname[300];
    memset(longname, 'a', sizeof longname - 3);
    memcpy(longname + sizeof longname - 3, " 1", 3);
    CHECK(parse(longname, &s) == -1);
    CHECK(parse("g{a=\"1\",b=\"1\",c=\"1\",d=\"1\",e=\"1\",f=\"1\",g=\"1\",h=\"1\",i=\"1\"} 1",
                &s) == -1);
    printf("ok\n");
    return 0;
}
