/* Unit tests of src/gateway/gw_admin.c: what the admin API accepts for the gateway's objects,
 * what it refuses (400 with the field named), and what it stores (hashes, never secrets). */
#include "gateway/gw.h"

#include "auth/secret.h"

#include <string.h>

#include "check.h"

static json_t *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    CHECK(j);
    return j;
}

static json_t *api(const char *text, nb_err *err)
{
    json_t *in = parse(text);
    json_t *out = nb_gw_admin_api("shop", in, NULL, err);
    json_decref(in);
    return out;
}

static void refused_api(const char *text, const char *needle)
{
    nb_err err = {0};
    json_t *o = api(text, &err);
    if (o || err.status != 400 || !strstr(err.msg, needle)) {
        fprintf(stderr, "accepted or wrong error for %s: %d %s\n", text, err.status, err.msg);
        exit(1);
    }
}

static void test_api(void)
{
    nb_err err = {0};
    json_t *o = api("{}", &err);
    CHECK(o);
    CHECK_STR(json_string_value(json_object_get(o, "base_path")), "/shop");
    json_decref(o);
    o = api("{\"base_path\":\"/a/b-c\",\"throttle\":{\"rate\":2.5},"
            "\"cors\":{\"origins\":[\"https://a.example\",\"https://*.b.example\"]}}",
            &err);
    CHECK(o);
    /* Defaults filled: one second of rate as burst, CORS methods. */
    CHECK(json_integer_value(json_object_get(json_object_get(o, "throttle"), "burst")) == 3);
    CHECK(json_array_size(json_object_get(json_object_get(o, "cors"), "methods")) == 6);
    json_decref(o);
    refused_api("{\"base_path\":\"shop\"}", "base_path");
    refused_api("{\"base_path\":\"/shop/\"}", "base_path");
    refused_api("{\"base_path\":\"/a//b\"}", "base_path");
    refused_api("{\"base_path\":\"/a/../b\"}", "base_path");
    refused_api("{\"base_path\":\"/a b\"}", "base_path");
    refused_api("{\"cors\":{\"origins\":[\"*\"],\"credentials\":true}}", "credentials");
    refused_api("{\"cors\":{\"origins\":[]}}", "cors.origins");
    refused_api("{\"cors\":{\"origins\":[\"a.example\"]}}", "cors.origins");
    refused_api("{\"cors\":{\"origins\":[\"https://a.*.example\"]}}", "cors.origins");
    refused_api("{\"cors\":{\"origins\":[\"*\"],\"max_age\":99999}}", "max_age");
    refused_api("{\"throttle\":{\"rate\":0}}", "throttle");
    refused_api("{\"throttle\":{\"rate\":1,\"burst\":0}}", "throttle");
    refused_api(
        "{\"jwt\":{\"algorithms\":[\"none\"],\"keys\":[{\"secret\":\"0123456789abcdef0\"}]}}",
        "jwt.algorithms");
    refused_api("{\"jwt\":{\"algorithms\":[\"HS256\"]}}", "jwt");
    refused_api("{\"jwt\":{\"jwks_file\":\"relative.json\"}}", "jwks_file");
    refused_api("{\"plan\":\"bad name\"}", "plan");
    /* Unknown fields are refused by name, with their own code. */
    json_t *in = parse("{\"colour\":\"red\"}");
    CHECK(!nb_gw_admin_api("shop", in, NULL, &err));
    CHECK_STR(err.code, NB_E_UNKNOWN_FIELD);
    json_decref(in);
    /* An update keeps what it does not name. */
    json_t *cur = parse("{\"base_path\":\"/keep\",\"plan\":\"p\"}");
    in = parse("{\"throttle\":null}");
    o = nb_gw_admin_api("shop", in, cur, &err);
    CHECK(o);
    CHECK_STR(json_string_value(json_object_get(o, "base_path")), "/keep");
    CHECK_STR(json_string_value(json_object_get(o, "plan")), "p");
    json_decref(o);
    json_decref(in);
    json_decref(cur);
}

static void test_route(void)
{
    nb_err err = {0};
    json_t *in = parse("{\"method\":\"get\",\"path\":\"/items/{id}\",\"function\":\"fn\"}");
    json_t *o = nb_gw_admin_route(in, &err);
    CHECK(o);
    CHECK_STR(json_string_value(json_object_get(o, "method")), "GET");
    CHECK_STR(json_string_value(json_object_get(o, "auth")), "none");
    CHECK(json_integer_value(json_object_get(o, "timeout_ms")) == 30000);
    json_decref(o);
    json_decref(in);
    static const char *const bad[] = {
        "{\"path\":\"/x\",\"function\":\"fn\"}",
        "{\"method\":\"GET\",\"path\":\"x\",\"function\":\"fn\"}",
        "{\"method\":\"GET\",\"path\":\"/{p+}/x\",\"function\":\"fn\"}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"f n\"}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"auth\":\"magic\"}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"timeout_ms\":10}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"log_body\":{\"max_bytes\":0}}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"log_body\":{\"max_bytes\":9,"
        "\"sample\":2}}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"scopes\":7}",
        "{\"method\":\"GET\",\"path\":\"/x\",\"function\":\"fn\",\"extra\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        in = parse(bad[i]);
        err.status = 0;
        o = nb_gw_admin_route(in, &err);
        if (o || err.status != 400) {
            fprintf(stderr, "route accepted: %s\n", bad[i]);
            exit(1);
        }
        json_decref(in);
    }
}

static void test_plan(void)
{
    nb_err err = {0};
    json_t *in = parse("{\"rate\":10,\"quota\":{\"limit\":100,\"period\":\"month\"}}");
    json_t *o = nb_gw_admin_plan(in, NULL, &err);
    CHECK(o);
    CHECK(json_integer_value(json_object_get(o, "burst")) == 10);
    json_decref(o);
    json_decref(in);
    static const char *const bad[] = {
        "{}",
        "{\"burst\":3}",
        "{\"rate\":-1}",
        "{\"quota\":{\"limit\":0,\"period\":\"day\"}}",
        "{\"quota\":{\"limit\":5,\"period\":\"week\"}}",
        "{\"quota\":5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        in = parse(bad[i]);
        err.status = 0;
        o = nb_gw_admin_plan(in, NULL, &err);
        if (o || err.status != 400) {
            fprintf(stderr, "plan accepted: %s\n", bad[i]);
            exit(1);
        }
        json_decref(in);
    }
}

static void test_credentials(void)
{
    nb_err err = {0};
    char secret[128];
    json_t *in = parse("{\"name\":\"alice\",\"plan\":\"basic\"}");
    json_t *key = nb_gw_admin_key(in, NULL, secret, sizeof secret, &err);
    json_decref(in);
    CHECK(key);
    CHECK(strncmp(secret, "nbk_", 4) == 0 && strlen(secret) > 40);
    /* Stored: the SHA-256 of the key, never the key. */
    char h[NB_SECRET_HASH_HEX];
    nb_secret_hash(secret, strlen(secret), h);
    CHECK_STR(json_string_value(json_object_get(key, "hash")), h);
    char *text = json_dumps(key, 0);
    CHECK(!strstr(text, secret + 4));
    free(text);
    json_t *view = nb_gw_admin_view("key", "alice", key, 0, 0);
    CHECK(!json_object_get(view, "hash"));
    json_decref(view);
    /* An update without rotate keeps the hash and shows no secret. */
    in = parse("{\"enabled\":false}");
    json_t *upd = nb_gw_admin_key(in, key, secret, sizeof secret, &err);
    json_decref(in);
    CHECK(upd && secret[0] == 0);
    CHECK_STR(json_string_value(json_object_get(upd, "hash")), h);
    CHECK(json_is_false(json_object_get(upd, "enabled")));
    json_decref(upd);
    in = parse("{\"enabled\":\"no\"}");
    CHECK(!nb_gw_admin_key(in, key, secret, sizeof secret, &err) && err.status == 400);
    json_decref(in);
    json_decref(key);
    /* Clients: an id, a secret shown once, and a generation each rotation bumps. */
    in = parse("{\"name\":\"billing\",\"scopes\":\"read\"}");
    json_t *cl = nb_gw_admin_client(in, NULL, secret, sizeof secret, &err);
    json_decref(in);
    CHECK(cl && strncmp(secret, "nbs_", 4) == 0);
    CHECK(strncmp(json_string_value(json_object_get(cl, "client_id")), "nbc_", 4) == 0);
    CHECK(json_integer_value(json_object_get(cl, "gen")) == 1);
    char first[128];
    snprintf(first, sizeof first, "%s", secret);
    in = parse("{\"rotate\":true}");
    json_t *rot = nb_gw_admin_client(in, cl, secret, sizeof secret, &err);
    json_decref(in);
    CHECK(rot && secret[0] && strcmp(secret, first) != 0);
    CHECK(json_integer_value(json_object_get(rot, "gen")) == 2);
    CHECK_STR(json_string_value(json_object_get(rot, "client_id")),
              json_string_value(json_object_get(cl, "client_id")));
    json_decref(rot);
    json_decref(cl);
}

int main(void)
{
    test_api();
    test_route();
    test_plan();
    test_credentials();
    printf("test_gw_admin: ok\n");
    return 0;
}
