"""The API gateway end to end: routes and their precedence, the payload 2.0 event a Python and a
Node function receive, response mapping, every credential type, usage plans and throttles across
two event loops, sharing, CORS, usage and response logs, protocol hygiene and HTTP/2, through
the admin API and the CLI of a real daemon on its own gateway listener."""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse

from nimbus_harness import BIN, NimbusTestCase, File

ECHO_PY = {"app.py": File(b"""
import json
def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps(event)}
""")}

ECHO_NODE = {"index.mjs": File(b"""
export const handler = async (event) => ({
  statusCode: 200, headers: {"content-type": "application/json"}, body: JSON.stringify(event),
});
""")}

SHAPES_PY = {"app.py": File(b"""
import base64, json, time
def handler(event, context):
    kind = (event.get("queryStringParameters") or {}).get("kind", "")
    if kind == "sleep":
        time.sleep(2.2)
        return {"statusCode": 200, "body": "slept"}
    if kind == "cookies":
        return {"statusCode": 201, "headers": {"X-Custom": "yes"},
                "multiValueHeaders": {"x-multi": ["a", "b"]},
                "cookies": ["a=1; Path=/", "b=2; Max-Age=60"], "body": "made"}
    if kind == "binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if kind == "echo-binary":
        body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else b""
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(body).decode(), "isBase64Encoded": True}
    if kind == "plain":
        return {"hello": "world"}
    if kind == "string":
        return "just text"
    if kind == "raise":
        raise ValueError("boom")
    return {"statusCode": 200, "body": "x" * 100}
""")}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_hs256(claims, secret, kid=None):
    header = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=True).stdout


def der_to_raw(der):
    """ECDSA DER signature -> JOSE r||s (32 bytes each)."""
    assert der[0] == 0x30
    i = 2
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def jwt_openssl(alg, claims, keyfile, kid=None):
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = openssl("dgst", "-sha256", "-sign", keyfile, input=signing.encode())
    if alg == "ES256":
        sig = der_to_raw(sig)
    return signing + "." + b64url(sig)


class Gateway(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        # Two loops: the limits must hold over both, not per loop.
        # A short request timeout, so a slow client's 408 comes quickly.
        cls.d = cls.start_daemon(args=["--loops", "2"], env={"NIMBUS_REQUEST_TIMEOUT_MS": "1500"})
        d = cls.d
        d.deploy("echo", ECHO_PY, "python3", "app.handler")
        d.deploy("echonode", ECHO_NODE, "nodejs", "index.handler")
        d.deploy("shapes", SHAPES_PY, "python3", "app.handler")

    # -- helpers ---------------------------------------------------------------------------

    def api_create(self, name, **body):
        r = self.d.api("PUT", f"/v1/apis/{name}", body)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def route(self, api, method, path, fn, **kw):
        r = self.d.api("POST", f"/v1/apis/{api}/routes",
                       {"method": method, "path": path, "function": fn, **kw})
        self.assertEqual(r.status, 201, r)
        return r.json()

    def key(self, name, plan=None, ns=None):
        body = {"name": name}
        if plan:
            body["plan"] = plan
        prefix = f"/v1/namespaces/{ns}" if ns else "/v1"
        r = self.d.api("POST", f"{prefix}/keys", body)
        self.assertEqual(r.status, 201, r)
        return r.json()["key"]

    def event(self, r):
        self.assertEqual(r.status, 200, r)
        return r.json()

    # -- routes ----------------------------------------------------------------------------

    def test_route_precedence_params_greedy_and_method(self):
        d = self.d
        self.api_create("prec", base_path="/prec")
        self.route("prec", "GET", "/items/special", "echo")
        self.route("prec", "GET", "/items/{id}", "echo")
        self.route("prec", "ANY", "/items/{id}", "echo")
        self.route("prec", "GET", "/files/{path+}", "echo")
        self.route("prec", "POST", "/orders", "echo")
        table = [
            ("GET", "/prec/items/special", "GET /items/special", None),
            ("GET", "/prec/items/42", "GET /items/{id}", {"id": "42"}),
            ("DELETE", "/prec/items/42", "ANY /items/{id}", {"id": "42"}),
            ("GET", "/prec/items/a%20b", "GET /items/{id}", {"id": "a b"}),
            ("GET", "/prec/files/a/b/c.txt", "GET /files/{path+}", {"path": "a/b/c.txt"}),
        ]
        for method, path, key, params in table:
            ev = self.event(d.gw(method, path))
            self.assertEqual(ev["routeKey"], key, (method, path))
            self.assertEqual(ev.get("pathParameters"), params, (method, path))
        # A path no route has: 404; a path some route has, with another method: 405 + Allow.
        r = d.gw("GET", "/prec/nothing")
        self.assert_gw_error(r, 404, "not_found")
        r = d.gw("GET", "/prec/orders")
        self.assert_gw_error(r, 405, "method_not_allowed")
        self.assertIn("POST", r.headers["allow"])
        self.assert_gw_error(d.gw("GET", "/nowhere"), 404, "not_found")
        # A route of the same shape is a conflict, whatever its parameter is called.
        r = d.api("POST", "/v1/apis/prec/routes",
                  {"method": "GET", "path": "/items/{other}", "function": "echo"})
        self.assert_api_error(r, 409, "conflict")
        for bad in ({"method": "GET", "path": "items", "function": "echo"},
                    {"method": "GET", "path": "/a/{p+}/b", "function": "echo"},
                    {"method": "G T", "path": "/a", "function": "echo"},
                    {"method": "GET", "path": "/a", "function": "bad name"},
                    {"method": "GET", "path": "/a", "function": "echo", "auth": "magic"},
                    {"method": "GET", "path": "/a", "function": "echo", "timeout_ms": 1}):
            r = d.api("POST", "/v1/apis/prec/routes", bad)
            self.assertEqual(r.status, 400, (bad, r))
        # Routes take effect and go away without a restart.
        rid = self.route("prec", "GET", "/fresh", "echo")["id"]
        self.assertEqual(d.gw("GET", "/prec/fresh").status, 200)
        self.assertEqual(d.api("DELETE", f"/v1/apis/prec/routes/{rid}").status, 200)
        self.assert_gw_error(d.gw("GET", "/prec/fresh"), 404, "not_found")

    def assert_gw_error(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.json()["error"]["code"], code, r)

    # -- the event and the response ----------------------------------------------------------

    def check_event(self, fn):
        d = self.d
        self.api_create(f"ev{fn}", base_path=f"/ev{fn}")
        self.route(f"ev{fn}", "ANY", "/users/{id}", fn)
        before = int(time.time() * 1000)
        r = d.gw("POST", f"/ev{fn}/users/7?a=1&a=2&b=x%20y&c", b'{"k":"v"}',
                 headers={"Content-Type": "application/json", "X-Multi": "one",
                          "Cookie": "c1=a; c2=b", "User-Agent": "gw-test/1"})
        ev = self.event(r)
        self.assertEqual(ev["version"], "2.0")
        self.assertEqual(ev["routeKey"], "ANY /users/{id}")
        self.assertEqual(ev["rawPath"], f"/ev{fn}/users/7")
        self.assertEqual(ev["rawQueryString"], "a=1&a=2&b=x%20y&c")
        self.assertEqual(ev["queryStringParameters"], {"a": "1,2", "b": "x y", "c": ""})
        self.assertEqual(ev["pathParameters"], {"id": "7"})
        self.assertEqual(ev["cookies"], ["c1=a", "c2=b"])
        self.assertNotIn("cookie", ev["headers"])
        self.assertEqual(ev["headers"]["x-multi"], "one")
        self.assertEqual(ev["headers"]["content-type"], "application/json")
        self.assertEqual(ev["headers"]["user-agent"], "gw-test/1")
        self.assertTrue(all(k == k.lower() for k in ev["headers"]))
        ctx = ev["requestContext"]
        self.assertEqual(ctx["http"], {"method": "POST", "path": f"/ev{fn}/users/7",
                                       "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                                       "userAgent": "gw-test/1"})
        self.assertEqual(ctx["requestId"], r.headers["x-nimbus-request-id"])
        self.assertEqual(ctx["routeKey"], "ANY /users/{id}")
        self.assertEqual(ctx["stage"], "$default")
        self.assertGreaterEqual(ctx["timeEpoch"], before - 5)
        self.assertLessEqual(ctx["timeEpoch"], int(time.time() * 1000) + 5)
        time.strptime(ctx["time"], "%d/%b/%Y:%H:%M:%S +0000")
        self.assertNotIn("authorizer", ctx)
        self.assertEqual(ev["body"], '{"k":"v"}')
        self.assertIs(ev["isBase64Encoded"], False)
        # A binary body arrives base64-encoded; no query: no queryStringParameters.
        ev = self.event(d.gw("PUT", f"/ev{fn}/users/8", bytes(range(256)),
                             headers={"Content-Type": "application/octet-stream"}))
        self.assertIs(ev["isBase64Encoded"], True)
        self.assertEqual(base64.b64decode(ev["body"]), bytes(range(256)))
        self.assertNotIn("queryStringParameters", ev)
        self.assertEqual(ev["rawQueryString"], "")
        self.assertNotIn("cookies", ev)

    def test_event_python(self):
        self.check_event("echo")

    def test_event_node(self):
        self.check_event("echonode")

    def test_response_mapping(self):
        d = self.d
        self.api_create("shapes", base_path="/shapes")
        self.route("shapes", "ANY", "/{proxy+}", "shapes")
        conn = __import__("http.client").client.HTTPConnection(d.host, d.gw_port, timeout=30)
        conn.request("GET", "/shapes/x?kind=cookies")
        r = conn.getresponse()
        body = r.read()
        self.assertEqual((r.status, body), (201, b"made"))
        self.assertEqual(r.getheader("x-custom"), "yes")
        self.assertEqual(sorted(r.headers.get_all("set-cookie")), ["a=1; Path=/", "b=2; Max-Age=60"])
        self.assertEqual(sorted(v.strip() for h in r.headers.get_all("x-multi") for v in h.split(",")),
                         ["a", "b"])
        self.assertEqual(r.getheader("content-type"), "application/json")
        conn.close()
        r = d.gw("GET", "/shapes/x?kind=binary")
        self.assertEqual((r.status, r.body), (200, bytes(range(256))))
        self.assertEqual(r.headers["content-type"], "application/octet-stream")
        payload = os.urandom(5000)
        r = d.gw("POST", "/shapes/x?kind=echo-binary", payload,
                 headers={"Content-Type": "application/octet-stream"})
        self.assertEqual((r.status, r.body), (200, payload))
        r = d.gw("GET", "/shapes/x?kind=plain")
        self.assertEqual((r.status, r.json()), (200, {"hello": "world"}))
        self.assertEqual(r.headers["content-type"], "application/json")
        r = d.gw("GET", "/shapes/x?kind=string")
        self.assertEqual((r.status, r.body), (200, b'"just text"'))
        r = d.gw("GET", "/shapes/x?kind=raise")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.json()["message"], "Internal Server Error")
        self.assertEqual(r.json()["error"], {"code": "function_error",
                                             "message": "Internal Server Error"})
        self.assertNotIn(b"boom", r.body)  # the function's error stays in its logs

    # -- credentials -----------------------------------------------------------------------

    def test_api_keys(self):
        d = self.d
        self.api_create("keyed", base_path="/keyed")
        self.route("keyed", "GET", "/k", "echo", auth="key")
        k = self.key("kalice")
        self.assertTrue(k.startswith("nbk_"))
        listed = d.api("GET", "/v1/keys/kalice").json()
        self.assertNotIn("key", listed)
        self.assertNotIn("hash", listed)
        r = d.gw("GET", "/keyed/k")
        self.assert_gw_error(r, 401, "missing_credentials")
        self.assertIn("www-authenticate", r.headers)
        self.assert_gw_error(d.gw("GET", "/keyed/k", headers={"x-api-key": k + "x"}), 401,
                             "invalid_api_key")
        ev = self.event(d.gw("GET", "/keyed/k", headers={"x-api-key": k}))
        self.assertEqual(ev["requestContext"]["authorizer"],
                         {"apiKey": {"id": "kalice", "namespace": "default"}})
        # Disabled: 403 at once; enabled again: works.
        self.assertEqual(d.api("PATCH", "/v1/keys/kalice", {"enabled": False}).status, 200)
        self.assert_gw_error(d.gw("GET", "/keyed/k", headers={"x-api-key": k}), 403,
                             "credentials_disabled")
        self.assertEqual(d.api("PATCH", "/v1/keys/kalice", {"enabled": True}).status, 200)
        self.assertEqual(d.gw("GET", "/keyed/k", headers={"x-api-key": k}).status, 200)
        # Rotated: the old key stops working at once, the new one works.
        r = d.api("POST", "/v1/keys/kalice/rotate")
        self.assertEqual(r.status, 200, r)
        k2 = r.json()["key"]
        self.assertNotEqual(k, k2)
        self.assert_gw_error(d.gw("GET", "/keyed/k", headers={"x-api-key": k}), 401,
                             "invalid_api_key")
        self.assertEqual(d.gw("GET", "/keyed/k", headers={"x-api-key": k2}).status, 200)
        # Deleted: gone.
        self.assertEqual(d.api("DELETE", "/v1/keys/kalice").status, 200)
        self.assert_gw_error(d.gw("GET", "/keyed/k", headers={"x-api-key": k2}), 401,
                             "invalid_api_key")

    def test_clients_basic_and_token_endpoint(self):
        d = self.d
        self.api_create("clients", base_path="/clients")
        self.route("clients", "GET", "/c", "echo", auth="client")
        self.route("clients", "GET", "/admin", "echo", auth="client", scopes="admin")
        r = d.api("POST", "/v1/clients", {"name": "billing", "scopes": "read write"})
        self.assertEqual(r.status, 201, r)
        cid, secret = r.json()["client_id"], r.json()["client_secret"]
        basic = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
        wrong = "Basic " + base64.b64encode(f"{cid}:nope".encode()).decode()
        self.assert_gw_error(d.gw("GET", "/clients/c"), 401, "missing_credentials")
        self.assert_gw_error(d.gw("GET", "/clients/c", headers={"Authorization": wrong}), 401,
                             "invalid_client")
        ev = self.event(d.gw("GET", "/clients/c", headers={"Authorization": basic}))
        self.assertEqual(ev["requestContext"]["authorizer"]["client"]["id"], cid)
        # Missing scope: authenticated but not allowed.
        r = d.gw("GET", "/clients/admin", headers={"Authorization": basic})
        self.assert_gw_error(r, 403, "insufficient_scope")
        # OAuth2 client credentials: a short-lived bearer token.
        form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
        r = d.gw("POST", "/oauth2/token", form,
                 headers={"Authorization": basic,
                          "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200, r)
        tok = r.json()
        self.assertEqual((tok["token_type"], tok["expires_in"]), ("Bearer", 3600))
        bearer = {"Authorization": "Bearer " + tok["access_token"]}
        ev = self.event(d.gw("GET", "/clients/c", headers=bearer))
        self.assertEqual(ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], cid)
        self.assertEqual(sorted(ev["requestContext"]["authorizer"]["jwt"]["scopes"]),
                         ["read", "write"])
        # A token asked for fewer scopes than the client has carries only those.
        narrow = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "read"}).encode()
        r = d.gw("POST", "/oauth2/token", narrow,
                 headers={"Authorization": basic,
                          "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200, r)
        self.route("clients", "GET", "/w", "echo", auth="client", scopes="write")
        self.assert_gw_error(d.gw("GET", "/clients/w",
                                  headers={"Authorization": "Bearer " + r.json()["access_token"]}),
                             403, "insufficient_scope")
        self.assertEqual(d.gw("GET", "/clients/w", headers=bearer).status, 200)
        r = d.gw("POST", "/oauth2/token", form,
                 headers={"Authorization": wrong,
                          "Content-Type": "application/x-www-form-urlencoded"})
        self.assert_gw_error(r, 401, "invalid_client")
        r = d.gw("POST", "/oauth2/token", b"grant_type=password",
                 headers={"Authorization": basic,
                          "Content-Type": "application/x-www-form-urlencoded"})
        self.assert_gw_error(r, 400, "unsupported_grant_type")
        # Rotating the secret revokes the old secret and the tokens issued with it.
        r = d.api("POST", "/v1/clients/billing/rotate")
        self.assertEqual(r.status, 200, r)
        self.assert_gw_error(d.gw("GET", "/clients/c", headers=bearer), 401, "invalid_token")
        self.assert_gw_error(d.gw("GET", "/clients/c", headers={"Authorization": basic}), 401,
                             "invalid_client")
        basic2 = "Basic " + base64.b64encode(f"{cid}:{r.json()['client_secret']}".encode()).decode()
        self.assertEqual(d.gw("GET", "/clients/c", headers={"Authorization": basic2}).status, 200)

    def test_jwt_authorizer_hs256(self):
        d = self.d
        secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
        self.api_create("jwths", base_path="/jwths",
                        jwt={"issuer": "https://issuer.example", "audiences": ["shop"],
                             "algorithms": ["HS256"], "keys": [{"kid": "k1", "secret": secret}]})
        self.route("jwths", "GET", "/open", "echo", auth="jwt")
        self.route("jwths", "GET", "/orders", "echo", auth="jwt", scopes="orders:read")
        now = int(time.time())
        good = {"iss": "https://issuer.example", "aud": "shop", "sub": "user-1", "exp": now + 300,
                "scope": "orders:read profile"}

        def call(path, claims, key=secret, kid="k1"):
            return d.gw("GET", path, headers={"Authorization": "Bearer " + jwt_hs256(claims, key, kid)})

        shown = json.dumps(d.api("GET", "/v1/apis/jwths").json())
        self.assertNotIn(secret, shown)  # an authorizer's HMAC secret is never shown back
        ev = self.event(call("/jwths/orders", good))
        az = ev["requestContext"]["authorizer"]["jwt"]
        self.assertEqual(az["claims"]["sub"], "user-1")
        self.assertEqual(sorted(az["scopes"]), ["orders:read", "profile"])
        self.assert_gw_error(d.gw("GET", "/jwths/open"), 401, "missing_credentials")
        r = call("/jwths/open", {**good, "exp": now - 3600})
        self.assert_gw_error(r, 401, "invalid_token")
        self.assertIn('error="invalid_token"', r.headers["www-authenticate"])
        self.assert_gw_error(call("/jwths/open", {**good, "aud": "other"}), 401, "invalid_token")
        self.assert_gw_error(call("/jwths/open", {**good, "iss": "https://evil.example"}), 401,
                             "invalid_token")
        self.assert_gw_error(call("/jwths/open", good, key="wrong-key-wrong-key-wrong-key!!"), 401,
                             "invalid_token")
        r = call("/jwths/orders", {**good, "scope": "profile"})
        self.assert_gw_error(r, 403, "insufficient_scope")
        self.assertIn("insufficient_scope", r.headers["www-authenticate"])

    def test_jwt_authorizer_rs256_pem_and_es256_jwks(self):
        d = self.d
        tmp = tempfile.mkdtemp(prefix="nimbus-jwt-")
        rsa, ec = os.path.join(tmp, "rsa.pem"), os.path.join(tmp, "ec.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ec)
        rsa_pub = openssl("pkey", "-in", rsa, "-pubout").decode()
        ec_der = openssl("pkey", "-in", ec, "-pubout", "-outform", "DER")
        point = ec_der[-65:]
        self.assertEqual(point[0], 4)
        jwks = os.path.join(tmp, "jwks.json")
        with open(jwks, "w") as f:
            json.dump({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
                                 "x": b64url(point[1:33]), "y": b64url(point[33:])}]}, f)
        os.chmod(tmp, 0o755)
        os.chmod(jwks, 0o644)
        now = int(time.time())
        claims = {"iss": "idp", "aud": ["x", "api"], "sub": "u2", "exp": now + 300}
        self.api_create("jwtrs", base_path="/jwtrs",
                        jwt={"issuer": "idp", "audiences": ["api"], "algorithms": ["RS256"],
                             "keys": [{"pem": rsa_pub}]})
        self.route("jwtrs", "GET", "/x", "echo", auth="jwt")
        tok = jwt_openssl("RS256", claims, rsa)
        ev = self.event(d.gw("GET", "/jwtrs/x", headers={"Authorization": "Bearer " + tok}))
        self.assertEqual(ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "u2")
        # An algorithm the API does not allow is refused even with a good signature.
        tok = jwt_openssl("ES256", claims, ec, kid="ec1")
        self.assert_gw_error(d.gw("GET", "/jwtrs/x", headers={"Authorization": "Bearer " + tok}),
                             401, "invalid_token")
        self.api_create("jwtes", base_path="/jwtes",
                        jwt={"issuer": "idp", "audiences": ["api"], "algorithms": ["ES256"],
                             "jwks_file": jwks})
        self.route("jwtes", "GET", "/x", "echo", auth="jwt")
        ev = self.event(d.gw("GET", "/jwtes/x", headers={"Authorization": "Bearer " + tok}))
        self.assertEqual(ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "u2")
        r = d.api("PUT", "/v1/apis/jwtbad", {"base_path": "/jwtbad",
                                             "jwt": {"algorithms": ["RS256"],
                                                     "jwks_file": "/nonexistent.json"}})
        self.assertEqual(r.status, 400, r)

    # -- limits ----------------------------------------------------------------------------

    def fresh_conn_calls(self, path, n, headers=None):
        """n requests, each on a new connection (so both loops serve them)."""
        return [self.d.gw("GET", path, headers=headers) for _ in range(n)]

    def test_usage_plan_rate_and_quota(self):
        d = self.d
        self.assertEqual(d.api("PUT", "/v1/plans/tiny", {"rate": 0.01, "burst": 3}).status, 201)
        self.assertEqual(d.api("PUT", "/v1/plans/quota5",
                               {"quota": {"limit": 5, "period": "day"}}).status, 201)
        self.api_create("limited", base_path="/limited")
        self.route("limited", "GET", "/x", "echo", auth="key")
        kr, kq = self.key("rater", plan="tiny"), self.key("quoter", plan="quota5")
        res = self.fresh_conn_calls("/limited/x", 6, {"x-api-key": kr})
        self.assertEqual([r.status for r in res], [200] * 3 + [429] * 3, res)
        self.assertEqual(res[3].json()["error"]["code"], "rate_limited")
        self.assertGreaterEqual(int(res[3].headers["retry-after"]), 1)
        res = self.fresh_conn_calls("/limited/x", 8, {"x-api-key": kq})
        self.assertEqual([r.status for r in res], [200] * 5 + [429] * 3, res)
        self.assertEqual(res[5].json()["error"]["code"], "quota_exceeded")
        # A plan in use cannot be deleted (it would lift the limits silently).
        self.assert_api_error(d.api("DELETE", "/v1/plans/quota5"), 409, "conflict")

    def test_api_and_route_throttles(self):
        d = self.d
        self.api_create("thr", base_path="/thr", throttle={"rate": 0.01, "burst": 4})
        self.route("thr", "GET", "/a", "echo")
        self.route("thr", "GET", "/b", "echo", throttle={"rate": 0.01, "burst": 2})
        res = self.fresh_conn_calls("/thr/b", 3)
        self.assertEqual([r.status for r in res], [200, 200, 429], res)
        self.assertEqual(res[2].json()["error"]["code"], "route_throttled")
        res = self.fresh_conn_calls("/thr/a", 3)
        self.assertEqual([r.status for r in res], [200, 200, 429], res)
        self.assertEqual(res[2].json()["error"]["code"], "api_throttled")

    # -- sharing ---------------------------------------------------------------------------

    def test_sharing_with_another_namespace(self):
        d = self.d
        self.api_create("shared", base_path="/shared")
        self.route("shared", "GET", "/x", "echo", auth="key")
        pk = self.key("partner", ns="other")
        listed = lambda: [a["name"] for a in d.gw("GET", "/_nimbus/apis",
                                                   headers={"x-api-key": pk}).json()["apis"]]
        self.assertNotIn("shared", listed())
        self.assert_gw_error(d.gw("GET", "/shared/x", headers={"x-api-key": pk}), 403, "not_shared")
        r = d.api("POST", "/v1/apis/shared/shares", {"consumer": "other/partner"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(d.gw("GET", "/shared/x", headers={"x-api-key": pk}).status, 200)
        self.assertEqual(listed(), ["shared"])
        r = d.api("DELETE", "/v1/apis/shared/shares/" + urllib.parse.quote("other/partner", safe=""))
        self.assertEqual(r.status, 200, r)
        self.assert_gw_error(d.gw("GET", "/shared/x", headers={"x-api-key": pk}), 403, "not_shared")
        self.assertNotIn("shared", listed())

    # -- CORS ------------------------------------------------------------------------------

    def test_cors(self):
        d = self.d
        self.api_create("corsy", base_path="/corsy",
                        cors={"origins": ["https://a.example", "https://*.b.example"],
                              "methods": ["GET", "POST"], "headers": ["content-type", "x-api-key"],
                              "expose_headers": ["x-trace"], "credentials": True, "max_age": 600})
        self.route("corsy", "ANY", "/x", "echo")
        inv = lambda: d.api("GET", "/v1/functions/echo").json()["stats"]["invocations"]
        before = inv()
        r = d.gw("OPTIONS", "/corsy/x", headers={"Origin": "https://a.example",
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers["access-control-allow-origin"], "https://a.example")
        self.assertIn("POST", r.headers["access-control-allow-methods"])
        self.assertEqual(r.headers["access-control-allow-headers"], "content-type")
        self.assertEqual(r.headers["access-control-max-age"], "600")
        self.assertEqual(r.headers["access-control-allow-credentials"], "true")
        r = d.gw("OPTIONS", "/corsy/x", headers={"Origin": "https://deep.sub.b.example",
                                                 "Access-Control-Request-Method": "GET"})
        self.assertEqual(r.headers.get("access-control-allow-origin"), "https://deep.sub.b.example")
        for origin, method in (("https://evil.example", "GET"), ("https://a.example", "DELETE"),
                               ("https://b.example", "GET")):
            r = d.gw("OPTIONS", "/corsy/x", headers={"Origin": origin,
                                                     "Access-Control-Request-Method": method})
            self.assertNotIn("access-control-allow-origin", r.headers, (origin, method))
        self.assertEqual(inv(), before)  # preflights never reach the function
        r = d.gw("GET", "/corsy/x", headers={"Origin": "https://a.example"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["access-control-allow-origin"], "https://a.example")
        self.assertEqual(r.headers["access-control-expose-headers"], "x-trace")
        self.assertIn("Origin", r.headers["vary"])
        r = d.gw("GET", "/corsy/x", headers={"Origin": "https://evil.example"})
        self.assertEqual(r.status, 200)
        self.assertNotIn("access-control-allow-origin", r.headers)
        r = d.api("PUT", "/v1/apis/corsbad", {"cors": {"origins": ["*"], "credentials": True}})
        self.assertEqual(r.status, 400, r)

    # -- usage and response logs -------------------------------------------------------------

    def test_usage_counts_and_response_logs(self):
        d = self.d
        self.api_create("metered", base_path="/metered")
        self.route("metered", "GET", "/a", "shapes", log_body={"max_bytes": 10, "sample": 1})
        self.route("metered", "GET", "/b", "echo", auth="key")
        k = self.key("meter")
        for _ in range(7):
            self.assertEqual(d.gw("GET", "/metered/a").status, 200)
        for _ in range(3):
            self.assertEqual(d.gw("GET", "/metered/b", headers={"x-api-key": k}).status, 200)
        for _ in range(2):
            self.assertEqual(d.gw("GET", "/metered/b").status, 401)
        self.assertEqual(d.gw("GET", "/metered/zzz").status, 404)
        r = d.api("GET", "/v1/apis/metered/usage?by=route&since=1h")
        self.assertEqual(r.status, 200, r)
        rows = {row["route"]: row["requests"] for row in r.json()["usage"]}
        self.assertEqual(rows.get("GET /a"), 7, rows)
        self.assertEqual(rows.get("GET /b"), 5, rows)
        self.assertEqual(sum(rows.values()), 13, rows)
        rows = {row["status"]: row["requests"] for row in
                d.api("GET", "/v1/apis/metered/usage?by=status").json()["usage"]}
        self.assertEqual(rows, {200: 10, 401: 2, 404: 1})
        rows = {row["key"]: row["requests"] for row in
                d.api("GET", "/v1/apis/metered/usage?by=key").json()["usage"]}
        self.assertEqual(rows.get("default/meter"), 3, rows)
        recs = d.api("GET", "/v1/apis/metered/logs?status=4xx").json()["records"]
        self.assertEqual(sorted(x["status"] for x in recs), [401, 401, 404])
        recs = d.api("GET", "/v1/apis/metered/logs?limit=100").json()["records"]
        logged = [x for x in recs if x["route"] == "GET /a"]
        self.assertEqual(len(logged), 7)
        self.assertTrue(all(x["body"] == "x" * 10 for x in logged), logged[:1])
        self.assertTrue(all(x["bytes_out"] == 100 for x in logged))
        self.assertTrue(all("body" not in x for x in recs if x["route"] == "GET /b"))
        self.assertEqual(d.api("GET", "/v1/apis/metered/usage?by=nope").status, 400)
        self.assertEqual(d.api("GET", "/v1/apis/metered/logs?status=9xx").status, 400)

    # -- hostile input ---------------------------------------------------------------------

    def test_hostile_input_is_refused_cleanly(self):
        d = self.d
        self.api_create("hostile", base_path="/hostile")
        self.route("hostile", "GET", "/c", "echo", auth="client")
        # Bytes that are not UTF-8 in the path: a JSON 404, on both listeners, and no crash.
        for port in (d.gw_port, d.port):
            out = self.raw_to(port, b"GET /\xff\xfe/x HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertTrue(out.startswith(b"HTTP/1.1 404"), out[:200])
            json.loads(out.split(b"\r\n\r\n", 1)[1])
        # Basic credentials that decode to nothing.
        for bad in ("Basic ====", "Basic =", "Basic YQ", "Basic !!!!", "Basic " + "A" * 4000):
            self.assert_gw_error(d.gw("GET", "/hostile/c", headers={"Authorization": bad}), 401,
                                 "invalid_client")
        self.assertTrue(d.running())
        # Another namespace may not take a path under (or over) this API's base path.
        r = d.api("PUT", "/v1/namespaces/other/apis/squat", {"base_path": "/hostile/c"})
        self.assert_api_error(r, 409, "conflict")
        r = d.api("PUT", "/v1/namespaces/other/apis/squat", {"base_path": "/"})
        self.assert_api_error(r, 409, "conflict")
        self.assertEqual(d.api("PUT", "/v1/apis/reserved", {"base_path": "/oauth2"}).status, 400)
        # A key whose name says "clients" is still a key.
        self.key("clients-old")
        self.assertEqual(d.api("DELETE", "/v1/keys/clients-old").status, 200)
        self.assertEqual(d.api("GET", "/v1/keys/clients-old").status, 404)

    def raw_to(self, port, data):
        s = socket.create_connection((self.d.host, port), timeout=5)
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and out.rstrip(b"\n").endswith(b"}"):
                    break  # one whole JSON answer: the connection may stay open
        except socket.timeout:
            pass
        s.close()
        return out

    # -- protocol hygiene --------------------------------------------------------------------

    def raw(self, data, read_timeout=5):
        s = socket.create_connection((self.d.host, self.d.gw_port), timeout=read_timeout)
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        s.close()
        return out

    def test_protocol_hygiene(self):
        d = self.d
        self.api_create("hyg", base_path="/hyg")
        self.route("hyg", "POST", "/x", "echo")
        # Content-Length and Transfer-Encoding together: 400 and the connection closed.
        out = self.raw(b"POST /hyg/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hyg/x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:200])
        self.assertEqual(out.count(b"HTTP/1.1 "), 1, out)
        # A request head over 64 KiB: 400 and closed.
        out = self.raw(b"GET /hyg/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:200])
        # Slow clients: a head or a body that stops arriving gets 408, and the connection ends.
        for partial in (b"GET /hyg/x HTTP/1.1\r\nHost: a\r\n",
                        b"POST /hyg/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123"):
            t0 = time.monotonic()
            out = self.raw(partial, read_timeout=10)
            self.assertTrue(out.startswith(b"HTTP/1.1 408"), out[:200])
            self.assertIn(b'"request_timeout"', out)
            self.assertLess(time.monotonic() - t0, 8)
        # A function slower than the request timeout is not a slow client.
        self.route("hyg", "POST", "/slow", "shapes", timeout_ms=10000)
        r = d.gw("POST", "/hyg/slow?kind=sleep", b"{}")
        self.assertEqual((r.status, r.body), (200, b"slept"))
        # Over the body cap: 413.
        r = d.gw("POST", "/hyg/x", b"x" * (6 * 1024 * 1024 + 10))
        self.assertEqual(r.status, 413, r)
        # HTTP/2 on the same port (prior knowledge, as gRPC-style clients do).
        p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                            "%{http_version} %{http_code}", "-X", "POST", "-d", "{}",
                            f"http://{d.host}:{d.gw_port}/hyg/x"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.stdout, "2 200", p)

    # -- CLI -------------------------------------------------------------------------------

    def test_cli(self):
        d = self.d
        p = d.gcli("api", "create", "cliapi", "--base-path", "/cli", "--cors-origins",
                   "https://a.example")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("plan", "create", "cliplan", "--rate", "100", "--burst", "10", "--quota",
                   "1000/day")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("route", "add", "cliapi", "GET", "/items/{id}", "echo", "--auth", "key")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("key", "create", "clikey", "--plan", "cliplan")
        self.assertEqual(p.returncode, 0, p.stderr)
        key = next(w for w in p.stdout.split() if w.startswith("nbk_"))
        ev = self.event(d.gw("GET", "/cli/items/9", headers={"x-api-key": key}))
        self.assertEqual(ev["pathParameters"], {"id": "9"})
        p = d.gcli("api", "usage", "cliapi", "--by", "key", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)[0]["requests"], 1, p.stdout)
        p = d.gcli("api", "logs", "cliapi", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("/cli/items/9", p.stdout)
        # Following the access log: a record for a request made after it started.
        follow = subprocess.Popen([BIN, "--data", d.data, "api", "logs", "cliapi", "--follow",
                                   "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            self.assertEqual(d.gw("GET", "/cli/items/followed", headers={"x-api-key": key}).status,
                             200)
            seen = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                line = follow.stdout.readline()
                if not line:
                    break
                seen.append(json.loads(line))
                if any(x["path"] == "/cli/items/followed" for x in seen):
                    break
            self.assertTrue(any(x["path"] == "/cli/items/followed" for x in seen), seen)
        finally:
            follow.kill()
            follow.communicate()
        p = d.gcli("route", "add", "cliapi", "GET", "/items/{x}", "echo")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("conflict", p.stderr)
        p = d.gcli("plan", "create", "bad", "--quota", "10/week")
        self.assertEqual(p.returncode, 2, p)


if __name__ == "__main__":
    unittest.main()
