"""Services end to end: functions grouped with --service, shown by `nimbus service` with the
routes, schedules and queue subscriptions that invoke them, and deleted together, leaving other
functions, queues and APIs alone."""
import json
import os
import unittest

from nimbus_harness import NimbusTestCase

HELLO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python-hello")


class Services(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def deploy(self, name, *flags):
        p = self.d.cli("deploy", name, HELLO, "--runtime", "python3", "--handler", "app.handler",
                       *flags)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_group_show_and_delete(self):
        d = self.d
        self.deploy("checkout", "--service", "shop")
        self.deploy("notify", "--service", "shop")
        self.deploy("other")
        # Moving a function in later is a setting, not a deploy.
        self.deploy("audit")
        p = d.cli("config", "audit", "--service", "shop")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("service=shop", p.stdout)
        self.assertEqual(d.api("GET", "/v1/functions/audit").json()["version"], 1)

        self.assertEqual(d.api("PUT", "/v1/apis/shop", {"base_path": "/shop"}).status, 201)
        r = d.api("POST", "/v1/apis/shop/routes",
                  {"method": "GET", "path": "/pay", "function": "checkout"})
        self.assertEqual(r.status, 201, r)
        r = d.api("POST", "/v1/apis/shop/routes",
                  {"method": "GET", "path": "/other", "function": "other"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(d.gw("GET", "/shop/pay").status, 200)
        self.assertEqual(d.api("PUT", "/v1/schedules/nightly",
                               {"expression": "rate(1 hour)", "function": "notify"}).status, 201)
        self.assertEqual(d.api("PUT", "/v1/schedules/keep",
                               {"expression": "rate(1 hour)", "function": "other"}).status, 201)
        self.assertEqual(d.api("PUT", "/v1/queues/orders", {}).status, 201)
        self.assertIn(d.api("PUT", "/v1/queues/orders/subscriptions/audit", {}).status, (200, 201))
        self.assertEqual(d.api("POST", "/v1/topics", {"name": "news"}).status, 201)
        r = d.api("POST", "/v1/topics/news/subscriptions", {"target": "function:notify"})
        self.assertEqual(r.status, 201, r)
        r = d.api("POST", "/v1/topics/news/subscriptions", {"target": "function:other"})
        self.assertEqual(r.status, 201, r)
        r = d.api("POST", "/v1/rules", {"name": "paid", "match": {"type": ["order.paid"]},
                                        "target": "function:checkout"})
        self.assertEqual(r.status, 201, r)

        p = d.gcli("service", "ls")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("shop", p.stdout)
        self.assertIn("checkout", p.stdout)
        self.assertNotIn("other", p.stdout)

        p = d.gcli("service", "get", "shop", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        svc = json.loads(p.stdout)
        self.assertEqual(sorted(f["name"] for f in svc["functions"]), ["audit", "checkout", "notify"])
        self.assertEqual([(r["method"], r["path"]) for r in svc["routes"]], [("GET", "/pay")])
        self.assertEqual([s["name"] for s in svc["schedules"]], ["nightly"])
        self.assertEqual([(s["queue"], s["function"]) for s in svc["subscriptions"]],
                         [("orders", "audit")])
        self.assertEqual([(s["topic"], s["target"]) for s in svc["topic_subscriptions"]],
                         [("news", "function:notify")])
        self.assertEqual([r["name"] for r in svc["rules"]], ["paid"])
        p = d.gcli("service", "get", "shop")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("route", p.stdout)
        self.assertIn("/pay", p.stdout)
        self.assertIn("nightly", p.stdout)

        p = d.gcli("service", "rm", "shop")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("3 functions, 1 routes, 1 schedules, 1 subscriptions, 1 topic subscriptions, "
                      "1 rules", p.stdout)
        names = {f["name"] for f in d.functions()}
        self.assertNotIn("checkout", names)
        self.assertNotIn("audit", names)
        self.assertIn("other", names)
        self.assertEqual(d.api("GET", "/v1/schedules/nightly").status, 404)
        self.assertEqual(d.api("GET", "/v1/schedules/keep").status, 200)
        self.assertEqual(d.api("GET", "/v1/queues/orders").status, 200)
        self.assertEqual(d.gw("GET", "/shop/pay").status, 404)
        self.assertEqual(d.gw("GET", "/shop/other").status, 200)
        self.assertEqual(d.api("GET", "/v1/services/shop").status, 404)
        self.assertEqual(d.api("GET", "/v1/rules/paid").status, 404)
        subs = d.api("GET", "/v1/topics/news/subscriptions").json()["subscriptions"]
        self.assertEqual([s["target"] for s in subs], ["function:other"])

    def test_bad_input(self):
        d = self.d
        self.assert_api_error(d.api("GET", "/v1/services/nothing"), 404, "not_found")
        self.assert_api_error(d.api("DELETE", "/v1/services/nothing"), 404, "not_found")
        self.deploy("lonely")
        self.assert_api_error(d.api("PUT", "/v1/functions/lonely/scaling",
                                    {"service": "no/slash"}), 400, "invalid_value")
        self.assertIsNone(d.api("GET", "/v1/functions/lonely").json()["service"])
        p = d.gcli("service", "rm", "nothing")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("not found", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    unittest.main()
