"""Custom runtimes over the Lambda Runtime API through the real daemon.

- AWS's own Node.js Runtime Interface Client (npm `aws-lambda-ric`) as a `provided` bootstrap:
  results, a thrown error, an uncaught exception (the RIC then exits instead of asking for the
  next invocation), an init error. The package is installed once into $NIMBUS_BUILD/npm-cache
  (about 1.5 min: it builds a native addon and needs g++, make, cmake, autoconf, automake,
  libtool) and reused afterwards, also by the sibling build dir (build/build-asan). Skipped only
  when npm itself is missing.
- The Runtime API listener lives inside the instance's network namespace: the host cannot reach
  127.0.0.1:9001.
Run: cd tests/e2e && python3 -m unittest -v test_ric
"""

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
import unittest

from nimbus_harness import BUILD, SRC, File, NimbusTestCase, dir_files, wait_until

NPM = shutil.which("npm")
NODE = shutil.which("node") or "/usr/bin/node"
CACHE = os.path.join(BUILD, "npm-cache")
# What its install scripts need to build the native addon (Debian packages in parentheses).
BUILD_TOOLS = {"autoreconf": "autoconf", "aclocal": "automake", "libtoolize": "libtool",
               "make": "make", "cmake": "cmake", "g++": "g++"}


def ric_paths(cache):
    base = os.path.join(cache, "node_modules", "aws-lambda-ric")
    return os.path.join(base, "bin", "index.mjs"), os.path.join(base, "dist", "rapid-client.node")


def find_installed_ric():
    """A finished install in this build dir's cache, or in a sibling build dir's (build and
    build-asan of one checkout share it, so `make test` installs once)."""
    candidates = [CACHE] + [os.path.join(SRC, d, "npm-cache") for d in ("build", "build-asan")]
    for cache in candidates:
        entry, addon = ric_paths(cache)
        if os.path.exists(entry) and os.path.exists(addon):
            return entry
    return None


RIC_ENTRY = find_installed_ric() or ric_paths(CACHE)[0]

INDEX_JS = """\
let calls = 0;
exports.handler = async (event, context) => {
  calls += 1;
  return {
    ok: true, event, calls,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    remainingMs: context.getRemainingTimeInMillis(),
    api: process.env.AWS_LAMBDA_RUNTIME_API,
  };
};
exports.fails = async () => {
  throw new Error('ric boom');
};
exports.crash = async (event) => {
  calls += 1;
  if (event.crash) {
    setTimeout(() => { throw new Error('uncaught in a timer'); }, 1);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return { calls };
};
exports.logs = async () => {
  console.log('ric says hi');
  return 'logged';
};
"""

BROKEN_INDEX_JS = """\
const missing = require('nimbus-no-such-module');
exports.handler = async () => missing;
"""

# A plain sh + curl runtime that reports what the instance sees.
PROBE_BOOTSTRAP = """\
#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while :; do
    id=$(curl -sS -D - -o /dev/null "$api/invocation/next" | tr -d '\\r' |
         sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
    printf '{"api":"%s","hostname":"%s"}' "$AWS_LAMBDA_RUNTIME_API" "$(cat /proc/sys/kernel/hostname)" |
        curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary @-
done
"""


def ric_bootstrap(handler):
    # The RIC travels inside the function's code, as users deploy it: the sandbox shows the
    # function only its own code, never the build tree.
    return File(f"#!/bin/sh\nexec {NODE} \"$LAMBDA_TASK_ROOT/node_modules/aws-lambda-ric/bin/index.mjs\" "
                f"{handler}\n", 0o755)


def ric_files():
    """The parts of the installed aws-lambda-ric a function needs at run time."""
    base = os.path.dirname(os.path.dirname(RIC_ENTRY))
    out = {"node_modules/aws-lambda-ric/package.json": open(os.path.join(base, "package.json")).read()}
    for sub in ("bin", "dist"):
        for rel, f in dir_files(os.path.join(base, sub)).items():
            out[f"node_modules/aws-lambda-ric/{sub}/{rel}"] = f
    return out


def install_ric():
    """Installs aws-lambda-ric into CACHE unless an install exists. Returns an error text or
    None. A lock keeps two concurrent test runs on one build dir from installing at once."""
    global RIC_ENTRY
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_installed_ric()
        if found:
            RIC_ENTRY = found
            return None
        missing = sorted({pkg for tool, pkg in BUILD_TOOLS.items() if not shutil.which(tool)})
        if missing:
            return ("aws-lambda-ric builds a native addon when installed and needs these Debian "
                    f"packages: apt-get install {' '.join(missing)}")
        pkg = os.path.join(CACHE, "package.json")
        if not os.path.exists(pkg):  # so npm installs here, not in some parent project
            with open(pkg, "w") as f:
                json.dump({"name": "nimbus-e2e-npm-cache", "private": True}, f)
        p = subprocess.run([NPM, "install", "--no-audit", "--no-fund", "aws-lambda-ric"], cwd=CACHE,
                           capture_output=True, text=True, timeout=270)
        RIC_ENTRY, addon = ric_paths(CACHE)
        if p.returncode != 0 or not os.path.exists(RIC_ENTRY) or not os.path.exists(addon):
            return f"npm install aws-lambda-ric failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return None


@unittest.skipIf(NPM is None, "npm is not installed: cannot fetch aws-lambda-ric")
class AwsLambdaRic(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        err = install_ric()
        if err:
            raise AssertionError(err)
        cls.d = cls.start_daemon()
        code = {"index.js": INDEX_JS, "bootstrap": ric_bootstrap("index.handler"), **ric_files()}
        cls.d.deploy("ric", code, "provided.al2023", "index.handler", timeout_s=5)

    def test_success_result_and_warm_reuse(self):
        r = self.d.invoke("ric", {"a": 1})
        res = self.assert_ok(r)
        self.assertEqual((res["ok"], res["event"], res["functionName"]), (True, {"a": 1}, "ric"))
        self.assertEqual(res["requestId"], r.headers["x-nimbus-request-id"])
        self.assertTrue(0 < res["remainingMs"] <= 5000, res)
        self.assertEqual(res["api"], "127.0.0.1:9001")
        calls = res["calls"]
        res2 = self.assert_ok(self.d.invoke("ric", [1, 2]))
        self.assertEqual((res2["event"], res2["calls"]), ([1, 2], calls + 1))
        p = self.d.cli("invoke", "ric", '{"via": "cli"}')
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(json.loads(p.stdout)["event"], {"via": "cli"})

    def test_thrown_error(self):
        code = {"index.js": INDEX_JS, "bootstrap": ric_bootstrap("index.fails"), **ric_files()}
        self.d.deploy("ric-fails", code, "provided", "index.fails")
        doc = self.assert_fn_error(self.d.invoke("ric-fails"), "Error")
        self.assertEqual(doc["errorMessage"], "ric boom")
        self.assertIsInstance(doc.get("trace", doc.get("stackTrace")), list, doc)
        # The runtime keeps serving after a handled error.
        self.assert_fn_error(self.d.invoke("ric-fails"), "Error")
        p = self.d.cli("invoke", "ric-fails")
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(json.loads(p.stdout)["errorType"], "Error")

    def test_uncaught_exception_then_next_call_on_a_fresh_instance(self):
        # The RIC reports the crash through /error and exits instead of calling /next; the next
        # invocation, sent at once, must wait for a new instance rather than fail.
        code = {"index.js": INDEX_JS, "bootstrap": ric_bootstrap("index.crash"), **ric_files()}
        self.d.deploy("ric-crash", code, "provided", "index.crash")
        for _ in range(3):
            self.assertEqual(self.assert_ok(self.d.invoke("ric-crash"))["calls"], 1)
            self.assertEqual(self.assert_ok(self.d.invoke("ric-crash"))["calls"], 2)
            doc = self.assert_fn_error(self.d.invoke("ric-crash", {"crash": True}), "Error")
            self.assertEqual(doc["errorMessage"], "uncaught in a timer")

    def test_init_error(self):
        code = {"index.js": BROKEN_INDEX_JS, "bootstrap": ric_bootstrap("index.handler"), **ric_files()}
        self.d.deploy("ric-broken", code, "provided", "index.handler")
        t = time.monotonic()
        doc = self.assert_fn_error(self.d.invoke("ric-broken"), "Runtime.ImportModuleError")
        self.assertIn("nimbus-no-such-module", doc["errorMessage"])
        self.assertLess(time.monotonic() - t, 8)
        self.assert_fn_error(self.d.invoke("ric-broken"), "Runtime.ImportModuleError")

    def test_logs_from_the_ric(self):
        code = {"index.js": INDEX_JS, "bootstrap": ric_bootstrap("index.logs"), **ric_files()}
        self.d.deploy("ric-logs", code, "provided", "index.logs")
        r = self.d.invoke("ric-logs")
        self.assertEqual(self.assert_ok(r), "logged")
        rid = r.headers["x-nimbus-request-id"]
        found = wait_until(lambda: [x for x in self.d.logs("ric-logs")
                                    if x.get("request_id") == rid and "ric says hi" in x["line"]], timeout=3)
        self.assertTrue(found, self.d.logs("ric-logs"))


class RuntimeApiIsolation(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def test_host_cannot_reach_the_instance_runtime_api(self):
        self.d.deploy("probe", {"bootstrap": File(PROBE_BOOTSTRAP, 0o755)}, "provided", "x")
        res = self.assert_ok(self.d.invoke("probe"))
        self.assertEqual(res, {"api": "127.0.0.1:9001", "hostname": "probe"})
        # The instance is alive and parked in GET /next on its 127.0.0.1:9001 right now...
        self.assertEqual(self.assert_ok(self.d.invoke("probe"))["api"], "127.0.0.1:9001")
        # ...which exists only in its network namespace.
        try:
            s = socket.create_connection(("127.0.0.1", 9001), timeout=2)
        except OSError:
            pass  # refused: nothing listens there in the host's namespace
        else:
            s.close()
            self.fail("the host reached 127.0.0.1:9001, where the instance's Runtime API listens")
        self.assertIn("sandbox=full", self.d.log_text())


if __name__ == "__main__":
    unittest.main()
