"""Escapes from the function sandbox, tried by hostile functions through the real daemon.

A python3 function (fixtures/hostile) and a C function built with the SDK (fixtures/hostile_c,
built into $NIMBUS_BUILD/tests/hostile_c/bootstrap) try what the host must keep from them, each
outcome asserted down to the errno:
- host files at their real paths (/etc/shadow, the daemon's data dir, admin.token): ENOENT;
- processes: /proc lists only init (1) and the runtime (2); a signal to the daemon's pid: ESRCH,
  to init: EPERM, kill(-1): ESRCH; init's environ, mem and root: EACCES;
- network: the daemon's port and another function's Runtime API on 127.0.0.1: ECONNREFUSED;
  the host's address and any other: ENETUNREACH; only lo exists. With "network": "host" the
  daemon's port answers (the control) and another instance's Runtime API refuses the stranger,
  also when the stranger is an instance of a second daemon (the daemons' uids differ);
- system calls (python via ctypes, and C): the mount family, namespaces (unshare, setns,
  clone flags), ptrace, process_vm_readv, keyrings, bpf, perf_event_open, userfaultfd,
  io_uring, kexec, modules, reboot, swapon, clock_settime, sethostname, open_by_handle_at and
  an ASLR-off personality: EPERM; clone3: ENOSYS. A system call through the x32 or the i386
  ABI kills the process (Runtime.ExitError "signal: Bad system call"); a fresh instance serves;
- writes outside /tmp (/, /var/task, /etc, /usr, /var/runtime, /dev, /proc/sys): EROFS; /tmp
  works and has the default 512 MiB;
- identity: every capability set empty, no_new_privs, seccomp filter mode, a sandbox uid and
  gid with its sbx_user passwd entry; hostname = the function's name;
- /proc/kcore absent or empty, /proc/keys, kallsyms and timer_list empty; /dev holds exactly
  null, zero, random, urandom, fd, stdin, stdout, stderr;
- fds 0-3 only, the instance's pipes held by nobody but the instance and the daemon; the
  environment has Lambda's variables and the function's own, nothing of the daemon's (a
  canary variable given to the daemon does not reach it).
Also `nimbus doctor` and `nimbus serve --check` print the isolation table. After every attempt
the hello function answers; at the end no process, mount or cgroup group is left behind.
Needs root (skips otherwise, or when `nimbus doctor` reports a missing layer).
Run: cd tests/e2e && python3 -m unittest -v test_sandbox_escape
"""

import concurrent.futures
import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

from nimbus_harness import (BIN, BUILD, SANDBOX_UIDS, SandboxTestCase, cgroup_dirs, dir_files,
                            fixture, host_processes, sandbox_layers, wait_until)

C_BOOTSTRAP = os.path.join(BUILD, "tests", "hostile_c", "bootstrap")
CANARY = ("NIMBUS_E2E_CANARY", "secret-xyz")
LAMBDA_ENV = {"PATH", "LANG", "TZ", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "_HANDLER",
              "_X_AMZN_TRACE_ID", "PYTHONUNBUFFERED", "NIMBUS_CHANNEL_FD"}
DENIED = ["mount", "umount2", "pivot_root", "chroot", "unshare_user", "unshare_mount", "setns",
          "clone_newuser", "clone_newnet", "ptrace_init", "ptrace_child", "process_vm_readv",
          "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
          "io_uring_setup", "kexec_load", "init_module", "reboot", "swapon", "clock_settime",
          "sethostname", "open_by_handle_at", "personality_no_aslr", "personality_bit31",
          "listmount", "statmount",
          "memfd_secret"]
SIGSYS_EXIT = "Runtime exited with error: signal: Bad system call"


def host_addresses():
    """The host's address on its default route (if it has one) and a documentation address."""
    out = ["198.51.100.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # no packet: only picks the route and source
            out.insert(0, s.getsockname()[0])
        except OSError:
            pass
    return out


def c_code():
    if not os.access(C_BOOTSTRAP, os.X_OK):
        raise AssertionError(f"build {C_BOOTSTRAP} first (cmake --build build)")
    tmp = tempfile.mkdtemp(prefix="nimbus-hostile-c-")
    try:
        shutil.copy2(C_BOOTSTRAP, os.path.join(tmp, "bootstrap"))
        return dir_files(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fd_holders(target):
    """Pids with an open fd whose /proc link reads target (e.g. "pipe:[123]")."""
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == target:
                    pids.add(int(name))
                    break
            except OSError:
                pass
    return pids


class SandboxEscape(SandboxTestCase):
    @classmethod
    def setUpClass(cls):
        d = cls.start_sandbox_daemon(env=dict([CANARY]))
        d.deploy("hostile", dir_files(fixture("hostile")), "python3", "hostile.handler",
                 environment={"MY_SETTING": "1"})
        cls.c = c_code()
        d.deploy("hostile-c", cls.c, "provided", "function.handler")
        cls._probe = None

    @classmethod
    def tearDownClass(cls):
        cls.assert_nothing_left()

    def hostile(self, event, name="hostile"):
        return self.assert_ok(self.d.invoke(name, event))

    def probe(self):
        """The python function's look around (fixtures/hostile: probe), made once, while the C
        function has a live instance (whose Runtime API listens on 127.0.0.1:9001 in its own
        network namespace)."""
        cls = type(self)
        if cls._probe is None:
            cls.c_who = self.hostile({"op": "whoami"}, "hostile-c")
            d = self.d
            cls._probe = self.hostile({
                "op": "probe", "daemon_pid": d.proc.pid, "daemon_port": d.port, "data": d.data,
                "token": os.path.join(d.data, "admin.token"),
                "code_root": os.path.join(d.data, "code"), "host_ips": host_addresses()})
            cls.track(cls._probe["who"])
        return cls._probe

    # -- nimbus doctor ---------------------------------------------------------------------------

    def test_doctor_and_serve_check_report_every_layer(self):
        for cmd in (("doctor",), ("serve", "--check")):
            with self.subTest(cmd=" ".join(cmd)):
                rc, layers, table, pid = sandbox_layers(*cmd)
                self.assertRegex(table, r"^LAYER\s+STATUS\s+DETAIL\n")
                for layer in ("namespaces", "root", "user", "seccomp"):  # or the class skips
                    self.assertEqual(layers.get(layer), "ok", table)
                self.assertIn(layers.get("cgroups"), ("ok", "missing"), table)
                all_ok = all(status == "ok" for status in layers.values())
                self.assertEqual(rc, 0 if all_ok else 1, table)
                self.assertEqual(layers, self.layers, "doctor and serve --check disagree")
                self.assertEqual(cgroup_dirs(f"nimbus-{pid}"), [], "the probe left its cgroups")

    def test_root_without_a_uid_block_refuses_to_start(self):
        # Every block of sandbox uids taken (here inside a private mount namespace, over a tmpfs
        # /run/nimbus, so no other daemon is disturbed): the daemon must not fall back to
        # running functions as root; it says why and exits 1.
        script = f"""
import fcntl, os, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/nimbus"], check=True)
held = []
for k in range(64):
    fd = os.open(f"/run/nimbus/uids.{{k}}", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.append(fd)
p = subprocess.run([{BIN!r}, "serve", "--listen", "127.0.0.1:0", "--data", sys.argv[1]],
                   capture_output=True, text=True, timeout=30)
print(p.returncode)
print(p.stderr)
"""
        os.makedirs("/run/nimbus", exist_ok=True)
        with tempfile.TemporaryDirectory() as data:
            p = subprocess.run(["unshare", "-m", "--propagation", "private", "/usr/bin/python3",
                                "-c", script, data], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        rc, _, log = p.stdout.partition("\n")
        self.assertEqual(rc, "1", log)
        self.assertIn("no free block of sandbox uids", log)
        self.assertIn("will not run them as root", log)
        self.assert_serving()

    # -- files, processes, network -------------------------------------------------------------

    def test_host_files_are_out_of_reach(self):
        p = self.probe()
        self.assertEqual(p["files"], {"/etc/shadow": "ENOENT",
                                      os.path.join(self.d.data, "admin.token"): "ENOENT"})
        self.assertEqual(p["dirs"], {self.d.data: "ENOENT", os.path.join(self.d.data, "code"):
                                     "ENOENT", "/root": "ENOENT"})
        self.assertEqual(p["passwd_users"], ["root"], "host accounts in the sandbox's passwd")
        self.assertEqual(p["var_task"], ["hostile.py"])
        self.assert_serving()

    def test_host_processes_are_out_of_reach(self):
        p = self.probe()
        self.assertEqual((p["proc_pids"], p["pid"], p["ppid"]), (["1", "2"], 2, 1))
        self.assertNotIn(str(self.d.proc.pid), p["proc_pids"])
        self.assertEqual((p["kill_daemon"], p["kill_init"], p["kill_all"]),
                         ("ESRCH", "EPERM", "ESRCH"))
        # init is a copy of the daemon (its memory, its environment): not for the runtime.
        self.assertEqual((p["init_environ"], p["init_mem"], p["init_root"]),
                         ("EACCES", "EACCES", "EACCES"))
        # Nor its command line, which names the data dir.
        self.assertEqual(p["init_cmdline"], "nimbus-init")
        self.assertTrue(self.d.running())
        self.assert_serving()

    def test_network_is_loopback_only(self):
        p = self.probe()
        self.assertEqual(self.c_who["api"], "127.0.0.1:9001", "the C instance's Runtime API")
        expected = {"daemon": "ECONNREFUSED", "runtime_api": "ECONNREFUSED"}
        expected.update({f"host:{ip}": "ENETUNREACH" for ip in host_addresses()})
        self.assertEqual(p["net"], expected)
        self.assertEqual(p["interfaces"], ["lo"])
        self.assert_serving()

    def test_host_network_keeps_runtime_apis_private(self):
        self.d.deploy("hostnet", dir_files(fixture("hostile")), "python3", "hostile.handler",
                      network="host")
        self.d.deploy("hostnet-c", self.c, "provided", "function.handler", network="host")
        victim = self.hostile({"op": "whoami"}, "hostnet-c")
        host, port = victim["api"].rsplit(":", 1)
        self.assertEqual(host, "127.0.0.1")
        # The control: in the host's network the daemon's port answers, so the ECONNREFUSED of
        # test_network_is_loopback_only comes from the instance's own network namespace.
        self.assertEqual(self.hostile({"op": "connect", "host": "127.0.0.1", "port": self.d.port},
                                      "hostnet"), {"connect": "ok"})
        off = self.d.log_size()
        got = self.hostile({"op": "rapi_hijack", "port": int(port)}, "hostnet")
        self.assertEqual(got["answer"], "", "another instance's Runtime API answered a stranger")
        self.assertIn(got["end"], ("closed", "ECONNRESET"), got)
        self.assertIn("refused a Runtime API connection from another process",
                      self.d.log_text(off))
        self.assertEqual(self.hostile({"op": "whoami"}, "hostnet-c")["boot"], victim["boot"])
        self.assert_serving()

    # -- system calls ----------------------------------------------------------------------------

    def test_system_calls_are_denied(self):
        got = self.hostile({"op": "syscalls"})
        if "arch" in got:
            self.skipTest(f"raw system call numbers are for x86_64, not {got['arch']}")
        expected = dict.fromkeys(DENIED, "EPERM")
        expected.update(clone3="ENOSYS", personality_query="ok", hostname_after="hostile",
                        vsock="EAFNOSUPPORT")
        self.assertEqual(got, expected)
        self.assert_serving()

    def test_c_system_calls_are_denied(self):
        self.assertEqual(self.hostile({"op": "syscalls"}, "hostile-c"),
                         {"mount": "EPERM", "unshare": "EPERM", "ptrace": "EPERM",
                          "keyctl": "EPERM", "bpf": "EPERM", "io_uring_setup": "EPERM",
                          "clone3": "ENOSYS"})
        self.assert_serving()

    def test_c_foreign_abis_kill_the_process(self):
        """x32 (number | 0x40000000) and i386 (int $0x80) system calls: SIGSYS for the runtime,
        Runtime.ExitError for the invocation, a fresh instance for the next one. Two functions,
        run side by side."""
        abis = ["x32"]
        host = subprocess.run([C_BOOTSTRAP, "--host-abi"], capture_output=True, text=True)
        if host.returncode == 0 and re.match(r"i386 getpid (\d+) pid \1$", host.stdout):
            abis.append("i386")  # the kernel has the i386 ABI: int $0x80 reaches the filter
        for abi in abis:
            self.d.deploy(f"abi-{abi}", self.c, "provided", "function.handler")

        def attempt(abi):
            name = f"abi-{abi}"
            before = self.hostile({"op": "whoami"}, name)
            inst, _ = self.track(before)
            r = self.d.invoke(name, {"op": abi})
            after = self.hostile({"op": "whoami"}, name)
            return before, inst, r, after

        with concurrent.futures.ThreadPoolExecutor(len(abis)) as pool:
            results = dict(zip(abis, pool.map(attempt, abis)))
        for abi, (before, inst, r, after) in results.items():
            with self.subTest(abi=abi):
                doc = self.assert_fn_error(r, "Runtime.ExitError", "Unhandled")
                self.assertIn(SIGSYS_EXIT, doc["errorMessage"])
                self.assertNotEqual(after["boot"], before["boot"], "not a fresh instance")
                self.assert_instance_gone(inst)
        if "i386" not in abis:
            self.skipTest(f"no i386 ABI on this kernel ({host.stdout or host.returncode}): "
                          "x32 checked only")
        self.assert_serving()

    # -- files and identity --------------------------------------------------------------------

    def test_writes_outside_tmp_fail_with_erofs(self):
        p = self.probe()
        self.assertEqual(p["writes"], {"/": "EROFS", "/var/task": "EROFS", "/etc": "EROFS",
                                       "/usr": "EROFS", "/var/runtime": "EROFS", "/dev": "EROFS",
                                       "/tmp": "ok"})
        self.assertEqual(p["proc_sys_write"], "EROFS")
        self.assertEqual(p["tmp_size_mb"], 512)
        # Writable mounts: /tmp, /proc itself, the four devices and the /dev/null masks in /proc.
        devices = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"}
        odd = [m for m in p["mounts_rw"] if m not in devices | {"/tmp", "/proc"} and not (
            m.startswith("/proc/") and m.count("/") == 2 and m not in (
                "/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"))]
        self.assertEqual(odd, [], "writable mounts")
        self.assert_serving()

    def test_identity_is_unprivileged(self):
        p = self.probe()
        st, uid = p["status"], p["who"]["uid"]
        self.assertIn(uid, self.uid_block)
        self.assertEqual(st["Uid"].split(), [str(uid)] * 4)
        self.assertEqual(st["Gid"].split(), [str(p["who"]["gid"])] * 4)
        self.assertIn(p["who"]["gid"], self.uid_block)
        self.assertEqual(st["Groups"], "")
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(st[caps], 16), 0, f"{caps}: {st[caps]}")
        self.assertEqual((st["NoNewPrivs"], st["Seccomp"]), ("1", "2"))
        self.assertEqual(p["pw_name"], f"sbx_user{uid}")
        self.assert_serving()

    def test_hostname_proc_and_dev(self):
        p = self.probe()
        self.assertEqual((p["hostname"], p["nodename"]), ("hostile", "hostile"))
        masked = p["proc_masked"]
        self.assertIn(masked["/proc/kcore"], ("ENOENT", ""))
        self.assertIn(masked["/proc/sched_debug"], ("ENOENT", ""))
        self.assertEqual((masked["/proc/keys"], masked["/proc/kallsyms"]), ("", ""))
        self.assertIn(masked["/proc/timer_list"], ("ENOENT", ""))
        self.assertEqual(p["dev"], sorted(["null", "zero", "random", "urandom", "fd", "stdin",
                                           "stdout", "stderr"]))
        self.assert_serving()

    # -- fds and environment -------------------------------------------------------------------

    def test_only_fds_0_to_3_are_inherited(self):
        p = self.probe()
        self.assertEqual(len(p["fds"]), 5, p["fd_links"])  # the fifth is listdir's own
        self.assertEqual(p["fds"][:4], ["0", "1", "2", "3"], p["fd_links"])
        links = p["fd_links"]
        self.assertEqual(links["0"], "/dev/null")
        self.assertRegex(links["1"], r"^pipe:\[\d+\]$")
        self.assertRegex(links["2"], r"^pipe:\[\d+\]$")
        self.assertRegex(links["3"], r"^socket:\[\d+\]$")
        self.assert_serving()

    def test_instance_pipes_are_held_by_the_instance_and_the_daemon_only(self):
        """The runtime's stdout, stderr and channel, seen from the host: no other process (say
        another instance's init, a copy of the daemon) holds them, or the daemon would see no
        end of file when the runtime dies."""
        self.probe()
        who = self.hostile({"op": "whoami"})
        _, procs = self.track(who)
        runtime = [p for p in procs if p["uid"] == who["uid"]]
        self.assertEqual(len(runtime), 1, procs)
        instance = {p["pid"] for p in procs}
        for fd in ("1", "2", "3"):
            target = os.readlink(f"/proc/{runtime[0]['pid']}/fd/{fd}")

            def strangers():  # a child the daemon is just cloning may hold it for a moment
                return fd_holders(target) - instance - {self.d.proc.pid}
            self.assertTrue(wait_until(lambda: not strangers(), 3),
                            f"fd {fd} ({target}) of the runtime is also held by "
                            f"{[p for p in host_processes() if p['pid'] in strangers()]}")
        self.assert_serving()

    def test_two_daemons_never_give_two_instances_one_uid(self):
        """Two daemons on one host: their first instances get different uids. If they shared
        one, what stands on the uid being the instance's own would hold only within a daemon:
        the Runtime API of a host-network instance would take the other daemon's instance for
        its runtime (and answer it: 403 "runtime uses the native channel"; an HTTP runtime
        between two /next calls would hand it the next event), and RLIMIT_NPROC would count
        both instances' processes together."""
        a, b = self.new_daemon(), self.new_daemon()
        a.start()
        b.start()
        a.deploy("victim", self.c, "provided", "function.handler", network="host")
        b.deploy("thief", dir_files(fixture("hostile")), "python3", "hostile.handler",
                 network="host")
        victim = self.assert_ok(a.invoke("victim", {"op": "whoami"}))
        thief = self.assert_ok(b.invoke("thief", {"op": "whoami"}))
        port = int(victim["api"].rsplit(":", 1)[1])
        got = self.assert_ok(b.invoke("thief", {"op": "rapi_hijack", "port": port}))
        self.assertEqual(got["answer"], "", f"uids {victim['uid']} and {thief['uid']}")
        self.assertNotEqual(thief["uid"], victim["uid"])
        self.assertEqual({victim["uid"], thief["uid"]} - set(SANDBOX_UIDS), set())

    def test_environment_holds_nothing_of_the_daemon(self):
        with open(f"/proc/{self.d.proc.pid}/environ", "rb") as f:
            self.assertIn("=".join(CANARY).encode(), f.read().split(b"\0"), "the control")
        env = self.probe()["env"]
        self.assertNotIn(CANARY[0], env)
        self.assertFalse([k for k, v in env.items() if CANARY[1] in v], env)
        self.assertEqual(env["MY_SETTING"], "1")
        self.assertEqual(env["AWS_LAMBDA_FUNCTION_NAME"], "hostile")
        odd = [k for k in env if k not in LAMBDA_ENV and not k.startswith("AWS_")
               and k != "MY_SETTING"]
        self.assertEqual(odd, [], env)
        self.assert_serving()


if __name__ == "__main__":
    unittest.main()
