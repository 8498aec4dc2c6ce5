"""Resource limits of the function sandbox against a hostile python3 function (fixtures/hostile).

- fork bomb: fork fails with EAGAIN once the instance has 1024 processes (pids.max, and
  RLIMIT_NPROC per uid); the children go and the same instance serves on;
- memory: 512 MB touched in a 128 MB function is Runtime.OutOfMemory; the next invocation runs
  on a fresh instance and the old one is gone;
- /tmp: writing until it fails ends in ENOSPC at the 512 MiB of ephemeral_storage_mb (the
  function has 1024 MB: tmpfs pages count as its memory); deleting the file frees the space;
- timeout: a CPU spinner with children, all ignoring SIGTERM, is Sandbox.Timedout and none of
  the instance's processes survives (init, pid 1 of the instance, is SIGKILLed);
- double fork: a grandchild in its own session, reparented to init, dies with the instance
  when the runtime exits; no zombie is left;
- 1 GiB to stdout: throttled (4 MiB/s) and timed out, the daemon answers hello all along, the
  function's log stays under its 8 MiB cap.
The instance a test attacks is tracked by the uid and pid namespace it reports (other daemons
on the host may run instances too). After each test hello answers and no slot cgroup holds
processes of a gone instance; at the end no process, mount or cgroup group is left behind.
Needs root (skips otherwise); the memory test skips when `nimbus doctor` reports no cgroups.
Run: cd tests/e2e && python3 -m unittest -v test_sandbox_limits
"""

import glob
import os
import threading
import time
import unittest

from nimbus_harness import MIB, SandboxTestCase, dir_files, fixture, host_processes, wait_until


class SandboxLimits(SandboxTestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_sandbox_daemon()
        cls.code = dir_files(fixture("hostile"))

    @classmethod
    def tearDownClass(cls):
        cls.assert_nothing_left()

    def deploy(self, name, **cfg):
        self.d.deploy(name, self.code, "python3", "hostile.handler", **cfg)

    def hostile(self, name, event, timeout=60):
        return self.assert_ok(self.d.invoke(name, event, timeout=timeout))

    def whoami(self, name):
        """The function's (warm) instance: its whoami answer and its tracking record."""
        who = self.hostile(name, {"op": "whoami"})
        inst, procs = self.track(who)
        self.assertEqual(len(procs), 2, f"init and the runtime: {procs}")
        return who, inst

    def in_background(self, fn):
        """Runs fn on a thread; returns a function that joins it and gives fn's result."""
        box = {}
        th = threading.Thread(target=lambda: box.update(res=fn()), daemon=True)
        th.start()

        def join():
            th.join(120)
            self.assertIn("res", box, "the background call did not finish")
            return box["res"]
        return join

    def instance_procs(self, who):
        return [p for p in host_processes() if p["pidns"] == who["pidns"]]

    # ---------------------------------------------------------------------------------------

    def test_fork_bomb_stops_at_the_process_limit(self):
        self.deploy("forker", memory_mb=1024, timeout_s=60)
        who, _ = self.whoami("forker")
        got = self.hostile("forker", {"op": "fork_bomb"})
        self.assertEqual(got["errno"], "EAGAIN", got)
        self.assertLessEqual(got["count"], 1024)
        self.assertGreater(got["count"], 500, "forking stopped far below the limit")
        self.assertEqual(got["procs_after"], [1, 2])
        # The children are gone and the very same instance goes on.
        self.assertEqual(self.hostile("forker", {"op": "whoami"})["boot"], who["boot"])
        self.assertEqual(len(self.instance_procs(who)), 2)
        self.assert_serving()

    def test_memory_over_the_limit_is_out_of_memory(self):
        self.require_cgroups()
        self.deploy("hog", memory_mb=128, timeout_s=30)
        who, inst = self.whoami("hog")
        doc = self.assert_fn_error(self.d.invoke("hog", {"op": "alloc", "mb": 512}),
                                   "Runtime.OutOfMemory", "Unhandled")
        self.assertIn("Runtime exited with error: signal: Killed (out of memory)",
                      doc["errorMessage"])
        self.assertNotEqual(self.hostile("hog", {"op": "whoami"})["boot"], who["boot"],
                            "the next invocation must run on a fresh instance")
        self.assert_instance_gone(inst)
        self.assert_serving()

    def test_filling_tmp_ends_in_enospc(self):
        self.deploy("filler", memory_mb=1024, ephemeral_storage_mb=512, timeout_s=60)
        who, _ = self.whoami("filler")
        got = self.hostile("filler", {"op": "fill_tmp"})
        self.assertEqual(got["errno"], "ENOSPC", got)
        self.assertLessEqual(got["written"], 512 * MIB)
        self.assertGreaterEqual(got["written"], 508 * MIB)
        self.assertEqual(got["after_delete"], "ok", "deleting the file did not free /tmp")
        self.assertEqual(self.hostile("filler", {"op": "whoami"})["boot"], who["boot"])
        self.assert_serving()

    def test_timeout_kills_a_spinner_and_children_ignoring_sigterm(self):
        self.deploy("spinner", timeout_s=1)
        who, inst = self.whoami("spinner")
        join = self.in_background(lambda: self.d.invoke("spinner", {"op": "spin", "children": 3}))
        # The children, if the host sees them before the deadline, are tracked by pid too; the
        # check below finds them by uid anyway.
        def spinning():
            return [p for p in self.instance_procs(who) if p["uid"] == who["uid"]]
        wait_until(lambda: len(spinning()) == 4, 3)
        inst["members"] |= {(p["pid"], p["start"]) for p in spinning()}
        doc = self.assert_fn_error(join(), "Sandbox.Timedout", "Unhandled")
        self.assertIn("Task timed out after 1.00 seconds", doc["errorMessage"])
        lines = [rec["line"] for rec in self.d.logs("spinner") if rec["stream"] == "stdout"]
        self.assertIn(f"spinning uid={who['uid']} children=3", lines)
        self.assert_instance_gone(inst)
        self.assertNotEqual(self.hostile("spinner", {"op": "whoami"})["boot"], who["boot"])
        self.assert_serving()

    def test_double_fork_and_exit_leaves_no_process_and_no_zombie(self):
        self.deploy("orphan", timeout_s=10)
        got = self.hostile("orphan", {"op": "double_fork"})
        # The grandchild: reparented to the instance's init, in a session of its own.
        self.assertEqual(got["grandchild_ppid"], 1)
        self.assertNotEqual(got["grandchild_sid"], got["sid"])
        inst, procs = self.track(got)
        self.assertEqual(sorted((p["uid"], p["state"] == "Z") for p in procs),
                         [(0, False), (got["uid"], False), (got["uid"], False)],
                         f"init, the runtime and the grandchild: {procs}")
        doc = self.assert_fn_error(self.d.invoke("orphan", {"op": "exit"}), "Runtime.ExitError",
                                   "Unhandled")
        self.assertIn("Runtime exited with error: exit status 0", doc["errorMessage"])
        self.assert_instance_gone(inst)
        zombies = lambda: [p for p in host_processes()  # noqa: E731
                           if p["ppid"] == self.d.proc.pid and p["state"] == "Z"]
        self.assertTrue(wait_until(lambda: not zombies(), 10), f"zombies: {zombies()}")
        self.assertNotEqual(self.hostile("orphan", {"op": "whoami"})["boot"], got["boot"])
        self.assert_serving()

    def test_stdout_flood_is_throttled_and_capped(self):
        self.deploy("flood", timeout_s=3)
        who, inst = self.whoami("flood")
        t0 = time.monotonic()
        join = self.in_background(lambda: self.d.invoke("flood", {"op": "flood", "mb": 1024}))
        answered = []
        while time.monotonic() - t0 < 2.5:  # hello, while the flood runs
            t = time.monotonic()
            r = self.d.invoke("hello", {"name": "Flo"}, timeout=20)
            self.assertEqual(self.assert_ok(r)["message"], "Hello, Flo!")
            answered.append(time.monotonic() - t)
            time.sleep(0.1)
        doc = self.assert_fn_error(join(), "Sandbox.Timedout", "Unhandled")
        self.assertIn("Task timed out after 3.00 seconds", doc["errorMessage"])
        self.assertGreaterEqual(len(answered), 3, answered)
        self.assertLess(max(answered), 2.0, f"hello was held up by the flood: {answered}")
        self.assert_instance_gone(inst)
        self.assert_serving()
        logs = glob.glob(os.path.join(self.d.data, "logs", "*", "flood.log*"))
        sizes = {os.path.basename(p): os.path.getsize(p) for p in logs}
        self.assertGreater(sum(sizes.values()), MIB, f"the output never reached the log: {sizes}")
        self.assertLessEqual(sum(sizes.values()), 8 * MIB, f"over the log cap: {sizes}")


if __name__ == "__main__":
    unittest.main()
