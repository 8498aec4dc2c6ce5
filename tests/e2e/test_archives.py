"""Code archives through the real daemon: unsafe or oversized archives are refused with
invalid_archive and leave nothing behind; safe ones (symlinks inside the bundle, zip and tar)
deploy and run.
Run: cd tests/e2e && python3 -m unittest -v test_archives
"""

import gzip
import io
import os
import tarfile
import unittest
import uuid
import zipfile

from nimbus_harness import (MIB, NimbusTestCase, hardlink, sha256, symlink, tar_bytes,
                            tar_info, zip_bytes)

APP = "def handler(event, context):\n    return {'ok': True, 'mod': __name__}\n"


class Zeros(io.RawIOBase):
    """A file of n zero bytes, read in chunks (never held in memory)."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def tar_gz_of_zeros(sizes):
    """tar.gz with one file of zeros per size, compressed as it is produced."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as t:
            t.addfile(tar_info("app.py", size=len(APP)), io.BytesIO(APP.encode()))
            for i, size in enumerate(sizes):
                t.addfile(tar_info(f"zeros{i}", size=size), io.BufferedReader(Zeros(size), 1 << 20))
    return raw.getvalue()


def zip_of_zeros(sizes):
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("app.py", APP)
        chunk = bytes(1 << 20)
        for i, size in enumerate(sizes):
            zi = zipfile.ZipInfo(f"zeros{i}", (2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            with z.open(zi, "w", force_zip64=True) as f:
                left = size
                while left:
                    n = min(left, len(chunk))
                    f.write(chunk[:n])
                    left -= n
    return raw.getvalue()


def zip_raw_names(entries):
    """A zip whose member names are written as given (zipfile would not clean them anyway)."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            zi.create_system = 3
            zi.external_attr = (0o100644) << 16
            z.writestr(zi, data)
    return raw.getvalue()


def zip_symlink(name, target, extra=()):
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("app.py", APP)
        zi = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
        zi.create_system = 3
        zi.external_attr = (0o120777) << 16
        z.writestr(zi, target)
        for n, d in extra:
            z.writestr(n, d)
    return raw.getvalue()


class Archives(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.d.deploy("base", {"app.py": APP}, "python3", "app.handler")
        cls.outside = os.path.join(cls.d.tmp, "outside-" + uuid.uuid4().hex)

    def state(self):
        data = self.d.data
        return (sorted(os.listdir(os.path.join(data, "code"))),
                sorted(os.listdir(os.path.join(data, "blobs"))),
                self.d.functions())

    def assert_refused(self, archive, needle=None):
        before = self.state()
        r = self.d.api("POST", "/v1/code", archive)
        msg = self.assert_api_error(r, 400, "invalid_archive")
        if needle:
            self.assertIn(needle, msg)
        # Nothing stored, no temp dir left, nothing written next to the code store.
        self.assertEqual(self.state(), before)
        # And the sha of the refused bytes cannot be used.
        r = self.d.put("refused", {"runtime": "python3", "handler": "app.handler", "code_sha256": sha256(archive)})
        self.assert_api_error(r, 404, "not_found")
        return msg

    def assert_accepted(self, archive):
        r = self.d.api("POST", "/v1/code", archive)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    # -- corrupt -------------------------------------------------------------------------------

    def test_corrupt_archives(self):
        good_tgz = tar_bytes({"app.py": APP})
        good_zip = zip_bytes({"app.py": APP})
        cases = {
            "random": os.urandom(4096),
            "text": b"hello, I am not an archive\n" * 10,
            "truncated tar.gz": good_tgz[: len(good_tgz) // 2],
            "truncated zip": good_zip[: len(good_zip) // 2],
            "zip of garbage members": good_zip[:40] + os.urandom(60) + good_zip[100:],
            "gzip of garbage": gzip.compress(os.urandom(3000)),
            "bad gzip body": good_tgz[:10] + b"\x00" * 200,
            "flipped tar.gz": good_tgz[:40] + bytes(b ^ 0xFF for b in good_tgz[40:80]) + good_tgz[80:],
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused(data)
        self.assert_refused(b"")

    # -- paths ---------------------------------------------------------------------------------

    def test_dot_dot_and_absolute_paths(self):
        rel_out = os.path.relpath(self.outside, os.path.join(self.d.data, "code", "x"))
        cases = {
            "tar ../": tar_bytes({"app.py": APP, "../evil.py": "x"}),
            "tar a/../../": tar_bytes({"app.py": APP, "a/../../evil.py": "x"}),
            "tar deep ../": tar_bytes({"app.py": APP, rel_out: "x"}),
            "tar absolute": tar_bytes({"app.py": APP, self.outside: "x"}),
            "zip ../": zip_raw_names([("app.py", APP), ("../evil.py", "x")]),
            "zip deep ../": zip_raw_names([("app.py", APP), (rel_out, "x")]),
            "zip absolute": zip_raw_names([("app.py", APP), (self.outside, "x")]),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused(data)
                self.assertFalse(os.path.exists(self.outside))
                self.assertFalse(os.path.exists(os.path.join(self.d.data, "code", "evil.py")))
                self.assertFalse(os.path.exists(os.path.join(self.d.data, "evil.py")))

    def test_links_out_of_the_bundle(self):
        cases = {
            "tar symlink /etc/passwd": tar_bytes({"app.py": APP}, [symlink("passwd", "/etc/passwd")]),
            "tar symlink ../../x": tar_bytes({"app.py": APP}, [symlink("x", "../../x")]),
            "tar symlink sub/../..": tar_bytes({"app.py": APP}, [symlink("sub/x", "../../etc")]),
            "tar symlink to /": tar_bytes({"app.py": APP}, [symlink("root", "/")]),
            "tar symlink to ..": tar_bytes({"app.py": APP}, [symlink("up", "..")]),
            "tar hardlink": tar_bytes({"app.py": APP}, [hardlink("copy.py", "app.py")]),
            "tar hardlink out": tar_bytes({"app.py": APP}, [hardlink("passwd", "/etc/passwd")]),
            "tar write through symlink": tar_bytes(
                {"app.py": APP}, [symlink("dir", "sub"), tar_info("sub", tarfile.DIRTYPE, 0o755),
                                  tar_info("dir/evil.py", size=0)]),
            "tar fifo": tar_bytes({"app.py": APP}, [tar_info("fifo", tarfile.FIFOTYPE)]),
            "tar char device": tar_bytes({"app.py": APP}, [tar_info("null", tarfile.CHRTYPE)]),
            "tar block device": tar_bytes({"app.py": APP}, [tar_info("sda", tarfile.BLKTYPE)]),
            "zip symlink /etc/passwd": zip_symlink("passwd", "/etc/passwd"),
            "zip symlink ../x": zip_symlink("x", "../x"),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assert_refused(data)

    def test_symlink_chain_out_of_the_bundle(self):
        # Each link alone stays inside, but "d/l" is the bundle root, so "esc" resolves to the
        # parent of the bundle: resolving links, it leaves the bundle.
        data = tar_bytes({"app.py": APP}, [tar_info("d", tarfile.DIRTYPE, 0o755), symlink("d/l", ".."),
                                             symlink("esc", "d/l/../x")])
        self.assert_refused(data)
        # The same with a link to "." repeated: r/r/r is the root, three ".." climb out.
        data = tar_bytes({"app.py": APP}, [symlink("r", "."), symlink("esc", "r/r/r/../../../x")])
        self.assert_refused(data)

    def test_duplicate_entries(self):
        data = tar_bytes({"app.py": APP}, [tar_info("app.py", size=0)])
        self.assert_refused(data, "duplicate")

    # -- size and count ------------------------------------------------------------------------

    def test_zip_bomb(self):
        data = zip_of_zeros([300 * MIB])
        self.assertLess(len(data), 2 * MIB)
        self.assert_refused(data, "more than")

    def test_unpacked_cap_across_files(self):
        data = tar_gz_of_zeros([130 * MIB, 130 * MIB])
        self.assertLess(len(data), 4 * MIB)
        self.assert_refused(data, "268435456")

    def test_too_many_entries(self):
        # Spread over directories: creating 20000 files in one directory is slow on some disks.
        files = {f"d{i % 200}/f{i}": b"" for i in range(20000)}
        files["app.py"] = APP
        self.assert_refused(zip_bytes(files, zipfile.ZIP_STORED), "20000")

    def test_entry_limit_is_inclusive(self):
        files = {f"d{i % 200}/f{i}": b"" for i in range(19999)}
        files["app.py"] = APP
        data = zip_bytes(files, zipfile.ZIP_STORED)
        blob = self.assert_accepted(data)
        self.assertEqual(blob["files"], 20000)
        self.d.deploy("many", data, "python3", "app.handler")
        self.assertEqual(self.assert_ok(self.d.invoke("many"))["ok"], True)
        self.assertEqual(self.d.api("DELETE", "/v1/functions/many").status, 200)

    # -- accepted ------------------------------------------------------------------------------

    def test_symlinks_inside_the_bundle_work(self):
        data = tar_bytes({"src/real.py": APP, "lib/v1/data.txt": "data"},
                         [symlink("app.py", "src/real.py"), symlink("lib/current", "v1"),
                          symlink("src/up", "../lib")])
        blob = self.assert_accepted(data)
        self.assertEqual(len(blob["sha256"]), 64)
        self.d.deploy("linked", data, "python3", "app.handler")
        self.assertEqual(self.assert_ok(self.d.invoke("linked"))["ok"], True)
        self.assertEqual(self.d.api("DELETE", "/v1/functions/linked").status, 200)

    def test_same_bytes_twice(self):
        data = zip_bytes({"app.py": APP, "pkg/__init__.py": "", "pkg/mod.py": APP})
        first = self.d.api("POST", "/v1/code", data)
        self.assertEqual(first.status, 201, first)
        again = self.d.api("POST", "/v1/code", data)
        self.assertEqual(again.status, 200, again)
        self.assertEqual(first.json(), again.json())
        doc = first.json()
        self.assertEqual(doc["sha256"], sha256(data))
        self.assertEqual(doc["size"], len(data))
        self.assertEqual(doc["files"], 3)
        self.assertEqual(doc["unpacked_size"], 2 * len(APP))
        self.d.deploy("zipped", data, "python3", "pkg.mod.handler")
        self.assertEqual(self.assert_ok(self.d.invoke("zipped")), {"ok": True, "mod": "pkg.mod"})
        self.assertEqual(self.d.api("DELETE", "/v1/functions/zipped").status, 200)

    def test_plain_tar_and_zip_with_directories(self):
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as z:
            z.writestr("pkg/", "")
            z.writestr("pkg/mod.py", APP)
        for name, data in (("plain-tar", tar_bytes({"pkg/mod.py": APP}, gz=False)),
                           ("zip-dirs", raw.getvalue()),
                           ("zlib-tar", tar_bytes({"pkg/mod.py": APP}))):
            with self.subTest(name):
                self.d.deploy(name, data, "python3", "pkg/mod.handler")
                self.assertEqual(self.assert_ok(self.d.invoke(name))["ok"], True)
                self.assertEqual(self.d.api("DELETE", f"/v1/functions/{name}").status, 200)


    def test_large_bundle_shows_upload_progress(self):
        import tempfile
        with tempfile.TemporaryDirectory() as src:
            with open(os.path.join(src, "app.py"), "w") as f:
                f.write(APP)
            with open(os.path.join(src, "blob.bin"), "wb") as f:
                f.write(os.urandom(3 * MIB))  # incompressible: the upload is ~3 MB
            p = self.d.cli("deploy", "progress", src, "--runtime", "python3", "--handler",
                           "app.handler", env={"NIMBUS_PROGRESS": "1"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("uploading", p.stderr)
        self.assertRegex(p.stderr, r"of [0-9.]+ MB \(100%\)\n")
        self.assertEqual(self.d.invoke("progress", {}).status, 200)


if __name__ == "__main__":
    unittest.main()
