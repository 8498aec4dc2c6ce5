/* nb_con: which request paths name which of the console's embedded files (exact names only,
 * the index at /console/, the redirect at /console, query strings ignored, traversal never
 * matching), and the table itself (content types, quoted ETags). */
#include "console/console.h"

#include "check.h"

static nb_con_kind kind(const char *path, const nb_con_file **f)
{
    return nb_con_lookup(path, strlen(path), f);
}

static void test_not_ours(void)
{
    const nb_con_file *f;
    CHECK(kind("/v1/functions", &f) == NB_CON_NONE && !f);
    CHECK(kind("/consoles", &f) == NB_CON_NONE);
    CHECK(kind("/consolex/app.js", &f) == NB_CON_NONE);
    CHECK(kind("/", &f) == NB_CON_NONE);
    CHECK(kind("", &f) == NB_CON_NONE);
    CHECK(kind("/Console/", &f) == NB_CON_NONE);
}

static void test_redirect(void)
{
    const nb_con_file *f;
    CHECK(kind("/console", &f) == NB_CON_REDIRECT && !f);
    CHECK(kind("/console?x=1", &f) == NB_CON_REDIRECT);
}

static void test_files(void)
{
    const nb_con_file *f;
    if (!nb_con_enabled()) {
        /* Built with -DNIMBUS_CONSOLE=OFF: nothing is found, everything is still the console's. */
        CHECK(kind("/console/", &f) == NB_CON_MISSING && !f);
        CHECK(kind("/console/app.js", &f) == NB_CON_MISSING);
        return;
    }
    CHECK(kind("/console/", &f) == NB_CON_FILE);
    CHECK_STR(f->path, "index.html");
    CHECK(strncmp(f->ctype, "text/html", 9) == 0);
    CHECK(f->len > 0 && memmem(f->data, f->len, "app.js", 6));
    const nb_con_file *idx = f;
    CHECK(kind("/console/index.html", &f) == NB_CON_FILE && f == idx);
    CHECK(kind("/console/?token=x", &f) == NB_CON_FILE && f == idx);
    CHECK(kind("/console/#/functions", &f) == NB_CON_FILE && f == idx);

    CHECK(kind("/console/app.js", &f) == NB_CON_FILE);
    CHECK(strncmp(f->ctype, "text/javascript", 15) == 0);
    CHECK(f->len > 1000);
    const nb_con_file *js = f;
    CHECK(kind("/console/app.js?v=2", &f) == NB_CON_FILE && f == js);
    CHECK(kind("/console/app.css", &f) == NB_CON_FILE);
    CHECK(strncmp(f->ctype, "text/css", 8) == 0);
    /* ETags: quoted, and different for different contents. */
    CHECK(f->etag[0] == '"' && f->etag[strlen(f->etag) - 1] == '"' && strlen(f->etag) == 26);
    CHECK(strcmp(f->etag, js->etag) != 0);
}

static void test_unknown_and_traversal(void)
{
    const nb_con_file *f;
    const char *bad[] = {"/console/nope.js",
                         "/console/app.js/",
                         "/console//app.js",
                         "/console/../x",
                         "/console/../console/app.js",
                         "/console/./app.js",
                         "/console/%2e%2e/admin.token",
                         "/console/app%2ejs",
                         "/console/APP.JS",
                         "/console/app.j",
                         "/console/app.jsx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(kind(bad[i], &f) == NB_CON_MISSING);
        CHECK(!f);
    }
    /* The length given is what counts, not a NUL. */
    CHECK(nb_con_lookup("/console/app.jsXYZ", 15, &f) ==
          (nb_con_enabled() ? NB_CON_FILE : NB_CON_MISSING));
}

int main(void)
{
    test_not_ours();
    test_redirect();
    test_files();
    test_unknown_and_traversal();
    printf("test_console: ok\n");
    return 0;
}
