/* nb_logs: record format, UTF-8 repair, cap and rotation, read with since/limit, followers. */
#include "base/util.h"
#include "logs/logs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "check.h"

static nb_log_line mk(const char *text, size_t len)
{
    nb_log_line l = {"default", "fn", 3, "i-1", "rid-1", "stdout", text, len};
    return l;
}

static void test_format(void)
{
    nb_buf b;
    nb_buf_init(&b, 1 << 20);
    const char text[] = "a\"b\\c\n\t\x01 \xc3\xa9 \xff\xfe \xed\xa0\x80 end";
    nb_log_line l = mk(text, sizeof text - 1);
    nb_logs_format(&b, &l, 1234);
    CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
    json_error_t je;
    json_t *o = json_loadb(b.data, b.len, 0, &je);
    CHECK(o);
    CHECK(json_integer_value(json_object_get(o, "ts")) == 1234);
    CHECK(json_integer_value(json_object_get(o, "version")) == 3);
    CHECK(strcmp(json_string_value(json_object_get(o, "request_id")), "rid-1") == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "instance")), "i-1") == 0);
    const char *line = json_string_value(json_object_get(o, "line"));
    /* valid UTF-8 kept, invalid bytes and encoded surrogates become '?' */
    CHECK(strcmp(line, "a\"b\\c\n\t\x01 \xc3\xa9 ?? ??? end") == 0);
    json_decref(o);
    nb_buf_free(&b);
}

static int follower_calls;
static void on_record(void *ud, const char *rec, size_t len)
{
    (void)ud;
    CHECK(len > 0 && rec[len - 1] == '\n');
    /* Records arrive in batches of whole records, on the follower's loop. */
    for (size_t i = 0; i < len; i++)
        if (rec[i] == '\n') follower_calls++;
}

static void never(uv_timer_t *t)
{
    (void)t;
}

static void test_store_and_cap(void)
{
    char dir[] = "/tmp/nb-logs-XXXXXX";
    CHECK(mkdtemp(dir));
    nb_logs *l = nb_logs_new(dir, 64 << 10); /* 64 KiB cap per function */
    uv_loop_t loop;
    uv_loop_init(&loop);
    nb_logs_attach(l, &loop);
    uv_timer_t alive; /* the delivery handle does not keep a loop running by itself */
    uv_timer_init(&loop, &alive);
    uv_timer_start(&alive, never, 60000, 0);
    nb_logs_sub *sub = nb_logs_subscribe(l, "default", "fn", on_record, NULL);
    char text[200];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(text, sizeof text, "line %d", i);
        nb_log_line line = mk(text, (size_t)n);
        nb_logs_append(l, &line);
    }
    for (int i = 0; i < 100 && follower_calls < 2000; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(follower_calls == 2000);
    nb_logs_unsubscribe(l, sub);
    nb_logs_detach(l);
    uv_close((uv_handle_t *)&alive, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    nb_logs_flush(l);
    char path[512];
    struct stat a, b;
    snprintf(path, sizeof path, "%s/default/fn.log", dir);
    CHECK(stat(path, &a) == 0);
    snprintf(path, sizeof path, "%s/default/fn.log.1", dir);
    CHECK(stat(path, &b) == 0);
    CHECK(a.st_size + b.st_size <= 64 << 10);

    nb_buf out;
    nb_buf_init(&out, 1 << 20);
    nb_err err = {0};
    CHECK(nb_logs_read(l, "default", "fn", 0, 5, &out, &err) == 0);
    /* the newest five, oldest first */
    CHECK(strstr(out.data, "line 1995") && strstr(out.data, "line 1999") &&
          !strstr(out.data, "line 1994"));
    CHECK(strstr(out.data, "line 1995") < strstr(out.data, "line 1999"));
    nb_buf_reset(&out);
    CHECK(nb_logs_read(l, "default", "fn", nb_now_ms() + 60000, 100, &out, &err) == 0);
    CHECK(out.len == 0); /* nothing after a future since */
    nb_logs_remove(l, "default", "fn");
    nb_buf_reset(&out);
    CHECK(nb_logs_read(l, "default", "fn", 0, 100, &out, &err) == 0);
    CHECK(out.len == 0);
    nb_buf_free(&out);
    nb_logs_free(l);
    nb_rm_rf(dir);
}

int main(void)
{
    test_format();
    test_store_and_cap();
    printf("test_logs: ok\n");
    return 0;
}
