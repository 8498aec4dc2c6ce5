"""Published versions through the real daemon: what publishes one, what does not, and invoking
an old version.
Run: cd tests/e2e && python3 -m unittest -v test_versions
"""

import json
import os
import shutil
import tempfile
import threading
import time
import unittest

from nimbus_harness import NimbusTestCase, tar_bytes

CODE = """\
import os
import time

calls = 0


def handler(event, context):
    global calls
    calls += 1
    time.sleep(event.get("sleep", 0))
    return {"code": %r, "calls": calls, "version": context.function_version,
            "memory": str(context.memory_limit_in_mb), "env": os.environ.get("COLOR")}
"""


def code(tag):
    return tar_bytes({"app.py": CODE % tag})


class Versions(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def versions(self, name):
        r = self.d.api("GET", f"/v1/functions/{name}/versions")
        self.assertEqual(r.status, 200, r)
        return r.json()["versions"]

    def put(self, name, **cfg):
        r = self.d.put(name, cfg)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def run_version(self, name, version=None, event=None):
        r = self.d.invoke(name, event or {}, version=version)
        res = self.assert_ok(r)
        self.assertEqual(r.headers["x-nimbus-executed-version"], str(res["version"]))
        return res

    def test_changes_publish_and_identical_redeploys_do_not(self):
        sha_a = self.d.upload(code("A"))["sha256"]
        sha_b = self.d.upload(code("B"))["sha256"]
        r = self.d.put("ver", {"runtime": "python3", "handler": "app.handler", "code_sha256": sha_a})
        self.assertEqual(r.status, 201, r)
        fn = r.json()
        self.assertEqual((fn["version"], fn["changed"]), (1, True))
        created = fn["created_at"]
        steps = [
            ({"runtime": "python3", "handler": "app.handler", "code_sha256": sha_a}, 1, False),
            ({}, 1, False),
            ({"memory_mb": 128, "timeout_s": 3}, 1, False),  # the defaults: nothing changes
            ({"memory_mb": 256}, 2, True),
            ({"memory_mb": 256}, 2, False),
            ({"code_sha256": sha_b}, 3, True),
            ({"environment": {"COLOR": "red"}}, 4, True),
            ({"environment": {"COLOR": "red"}}, 4, False),
            ({"description": "blue"}, 5, True),
            ({"timeout_s": 5}, 6, True),
            ({"runtime": "python3.12"}, 7, True),
            ({"environment": {}}, 8, True),
            ({"code_sha256": sha_b, "memory_mb": 256, "description": "blue"}, 8, False),
        ]
        for body, version, changed in steps:
            with self.subTest(body=body):
                r = self.d.put("ver", body)
                self.assertEqual(r.status, 200, r)
                fn = r.json()
                self.assertEqual((fn["version"], fn["changed"]), (version, changed))
                self.assertEqual(fn["created_at"], created)
                self.assertEqual(len(self.versions("ver")), version)
        fn = self.d.api("GET", "/v1/functions/ver").json()
        self.assertEqual({k: fn[k] for k in ("version", "runtime", "memory_mb", "timeout_s", "description",
                                             "environment", "code_sha256")},
                         {"version": 8, "runtime": "python3.12", "memory_mb": 256, "timeout_s": 5,
                          "description": "blue", "environment": {}, "code_sha256": sha_b})
        vs = self.versions("ver")
        self.assertEqual([v["version"] for v in vs], list(range(1, 9)))
        self.assertEqual([v["code_sha256"] for v in vs[:3]], [sha_a, sha_a, sha_b])
        self.assertEqual([v["memory_mb"] for v in vs[:3]], [128, 256, 256])
        for v in vs:
            self.assertTrue({"version", "code_sha256", "runtime", "handler", "memory_mb", "timeout_s",
                             "created_at"} <= set(v), v)

    def test_invoke_old_versions(self):
        self.d.deploy("old", code("A"), "python3", "app.handler")
        self.assertEqual(self.run_version("old")["code"], "A")
        self.d.deploy("old", code("B"))
        self.d.deploy("old", code("B"), memory_mb=512, environment={"COLOR": "green"})
        latest = self.run_version("old")
        self.assertEqual((latest["code"], latest["version"], latest["memory"], latest["env"]),
                         ("B", "3", "512", "green"))
        v1 = self.run_version("old", 1)
        self.assertEqual((v1["code"], v1["version"], v1["memory"], v1["env"]), ("A", "1", "128", None))
        v2 = self.run_version("old", 2)
        self.assertEqual((v2["code"], v2["version"], v2["memory"]), ("B", "2", "128"))
        self.assertEqual(self.run_version("old", 3)["version"], "3")
        # Latest keeps its warm instance between the old-version calls.
        self.assertEqual(self.run_version("old")["calls"], 3)
        # The CLI can pick a version too.
        p = self.d.cli("invoke", "old", "--version", "1")
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(json.loads(p.stdout)["code"], "A")
        p = self.d.cli("versions", "old")
        self.assertEqual(p.returncode, 0, p)
        rows = [line.split() for line in p.stdout.strip().splitlines()]
        self.assertEqual([r[0] for r in rows[1:]], ["1", "2", "3"], p.stdout)
        p = self.d.cli("versions", "old", "--json")
        self.assertEqual([v["version"] for v in json.loads(p.stdout)], [1, 2, 3], p.stdout)

    def test_new_version_replaces_warm_instances_and_lets_inflight_finish(self):
        self.d.deploy("swap", code("A"), "python3", "app.handler")
        self.assertEqual(self.run_version("swap")["calls"], 1)
        self.assertEqual(self.run_version("swap")["calls"], 2)
        box = {}
        th = threading.Thread(target=lambda: box.update(r=self.d.invoke("swap", {"sleep": 1})))
        th.start()
        time.sleep(0.3)
        self.d.deploy("swap", code("B"))
        th.join(10)
        res = self.assert_ok(box["r"])
        self.assertEqual((res["code"], res["version"], res["calls"]), ("A", "1", 3),
                         "the in-flight invocation finishes on the version it started on")
        new = self.run_version("swap")
        self.assertEqual((new["code"], new["version"], new["calls"]), ("B", "2", 1))

    def test_cli_redeploy_of_unchanged_directory(self):
        tmp = tempfile.mkdtemp(prefix="nimbus-ver-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(CODE % "dir")
        args = ("cliver", tmp, "--runtime", "python3", "--handler", "app.handler")
        p = self.d.cli("deploy", *args)
        self.assertEqual((p.returncode, p.stdout.split()[:4]), (0, ["deployed", "cliver", "version", "1"]), p)
        os.utime(os.path.join(tmp, "app.py"), (1, 1))  # mtimes do not make new code
        p = self.d.cli("deploy", *args)
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "cliver unchanged at version 1"), p)
        p = self.d.cli("deploy", "cliver", tmp, "--json")
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual((json.loads(p.stdout)["version"], json.loads(p.stdout)["changed"]), (1, False))
        with open(os.path.join(tmp, "app.py"), "a") as f:
            f.write("# changed\n")
        p = self.d.cli("deploy", "cliver", tmp)
        self.assertEqual((p.returncode, p.stdout.split()[:4]), (0, ["deployed", "cliver", "version", "2"]), p)
        p = self.d.cli("deploy", "cliver", tmp, "--memory", "1024", "--timeout", "10")
        self.assertIn("version 3", p.stdout)
        self.assertIn("1024 MB, 10 s", p.stdout)
        self.assertEqual(len(self.versions("cliver")), 3)

    def test_delete_removes_all_versions(self):
        self.d.deploy("gone", code("A"), "python3", "app.handler")
        self.d.deploy("gone", code("B"))
        self.assertEqual(self.run_version("gone")["code"], "B")
        p = self.d.cli("rm", "gone")
        self.assertEqual(p.returncode, 0, p)
        self.assertNotIn("gone", [f["name"] for f in self.d.functions()])
        for method, path in (("GET", "/v1/functions/gone"), ("GET", "/v1/functions/gone/versions"),
                             ("POST", "/v1/functions/gone/invoke"), ("POST", "/v1/functions/gone/invoke?version=1"),
                             ("DELETE", "/v1/functions/gone")):
            with self.subTest(f"{method} {path}"):
                self.assert_api_error(self.d.api(method, path, b"{}" if method == "POST" else None), 404, "not_found")
        # A new function of the same name starts over at version 1.
        fn = self.d.deploy("gone", code("C"), "python3", "app.handler")
        self.assertEqual((fn["version"], fn["changed"]), (1, True))
        res = self.run_version("gone")
        self.assertEqual((res["code"], res["calls"]), ("C", 1))


if __name__ == "__main__":
    unittest.main()
