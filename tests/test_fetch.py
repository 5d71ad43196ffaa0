"""``ckpt.fetch`` / ``ckpt fetch`` against a local HTTP server the test starts on 127.0.0.1.

The server (``http.server`` in a thread, bounded socket timeouts, stopped after each test) serves archives the test
builds, honours ``Range``/``If-Range``, can cut a transfer short once, and counts requests and bytes. Hostile
archives (path traversal, absolute paths, symlink and hardlink escapes, device files, a decompression bomb, a lying
header, too many files, a truncated archive) and a wrong checksum each give a clear ckpt error, and nothing is
written outside the cache or left half-extracted inside it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile

import pytest

import ckpt
from ckpt.cli.main import main


class _Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}  # path -> bytes to send before dropping the connection (once)
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start = 0
                rng = self.headers.get("Range")
                if rng and self.headers.get("If-Range", etag) == etag:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", etag)
                self.end_headers()
                data = body[start:]
                cut = server.cut_once.pop(self.path, None)
                if cut is not None:
                    data = data[:cut]
                self.wfile.write(data)
                server.bytes_sent += len(data)
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _tar(members, mode: str = "w:gz") -> bytes:
    """members: (TarInfo fields dict, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _zip(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _inception() -> bytes:
    return _tar([
        ({"name": "classify_image_graph_def.pb"}, b"\x0a\x05graph"),
        ({"name": "labels", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
        ({"name": "labels/imagenet_synset_to_human_label_map.txt"}, b"n01440764\ttench\n"),
        ({"name": "labels/current", "type": tarfile.SYMTYPE, "linkname": "imagenet_synset_to_human_label_map.txt"},
         None),
        ({"name": "run.sh", "mode": 0o755}, b"#!/bin/sh\n"),
        ({"name": "copy.txt", "type": tarfile.LNKTYPE, "linkname": "labels/imagenet_synset_to_human_label_map.txt"},
         None),
    ])


def _listing(root) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


# ================================================================================================ the happy paths


def test_fetch_extracts_caches_and_works_offline(server, cache):
    body = _inception()
    url = server.add("/models/inception-2015-12-05.tgz", body)
    root = ckpt.fetch(url, cache_dir=cache)
    assert (root / "classify_image_graph_def.pb").read_bytes() == b"\x0a\x05graph"
    assert (root / "labels" / "current").read_text() == "n01440764\ttench\n"
    assert os.readlink(root / "labels" / "current") == "imagenet_synset_to_human_label_map.txt"
    assert (root / "copy.txt").read_text() == "n01440764\ttench\n" and not os.path.islink(root / "copy.txt")
    assert os.access(root / "run.sh", os.X_OK) and not os.access(root / "copy.txt", os.X_OK)
    record = json.loads(next(cache.glob("*.json")).read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size"] == len(body)
    assert len(server.requests) == 1

    # Cached: no request at all, with or without the hash, extracted or not.
    sha = hashlib.sha256(body).hexdigest()
    assert ckpt.fetch(url, cache_dir=cache) == root
    assert ckpt.fetch(url, cache_dir=cache, sha256=sha.upper()) == root
    archive = ckpt.fetch(url, cache_dir=cache, extract=False)
    assert archive.read_bytes() == body
    assert len(server.requests) == 1
    # Offline for real: the server is gone.
    server.close()
    assert ckpt.fetch(url, cache_dir=cache, sha256=sha) == root


def test_cache_dir_from_environment_and_a_plain_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CKPT_CACHE", str(tmp_path / "envcache"))
    url = server.add("/frozen/output_graph.pb", b"\x0a\x03abc")
    path = ckpt.fetch(url)
    assert path.parent == tmp_path / "envcache" and path.read_bytes() == b"\x0a\x03abc"


def test_damaged_cache_entry_is_downloaded_again(server, cache):
    url = server.add("/m.pb", b"model-bytes")
    path = ckpt.fetch(url, cache_dir=cache)
    path.write_bytes(b"bit rot")
    assert ckpt.fetch(url, cache_dir=cache).read_bytes() == b"model-bytes"
    assert len(server.requests) == 2


def test_interrupted_download_resumes_with_range_in_the_same_call(server, cache):
    body = os.urandom(300_000)
    url = server.add("/big.bin", body)
    server.cut_once["/big.bin"] = 70_000
    path = ckpt.fetch(url, cache_dir=cache, sha256=hashlib.sha256(body).hexdigest())
    assert path.read_bytes() == body
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=70000-")]
    assert server.bytes_sent == len(body)  # nothing downloaded twice


def test_interrupted_download_resumes_in_the_next_call(server, cache):
    body = os.urandom(200_000)
    url = server.add("/big.bin", body)
    server.cut_once["/big.bin"] = 50_000
    with pytest.raises(ckpt.errors.DownloadError, match="interrupted|closed") as info:
        ckpt.fetch(url, cache_dir=cache, retries=0)
    assert info.value.retryable
    parts = list(cache.glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 50_000
    assert ckpt.fetch(url, cache_dir=cache, retries=0).read_bytes() == body
    assert server.requests[-1] == ("/big.bin", "bytes=50000-") and server.bytes_sent == len(body)
    assert not list(cache.glob("*.part*"))


def test_a_changed_file_is_not_spliced_onto_an_old_part(server, cache):
    url = server.add("/f.bin", b"A" * 100_000)
    server.cut_once["/f.bin"] = 10_000
    with pytest.raises(ckpt.errors.DownloadError):
        ckpt.fetch(url, cache_dir=cache, retries=0)
    server.files["/f.bin"] = b"B" * 100_000  # new ETag: If-Range fails, the server sends it all
    assert ckpt.fetch(url, cache_dir=cache, retries=0).read_bytes() == b"B" * 100_000


def test_cli_prints_the_path(server, cache, capsys):
    url = server.add("/models/inception.tgz", _inception())
    assert main(["fetch", url, "--cache-dir", str(cache), "-q"]) == 0
    out = capsys.readouterr().out.strip()
    assert os.path.isfile(os.path.join(out, "classify_image_graph_def.pb"))
    assert main(["fetch", url, "--cache-dir", str(cache), "--no-extract", "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith("inception.tgz")


def test_progress_line_without_tqdm(server, cache, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    url = server.add("/p.bin", os.urandom(3 << 20))
    ckpt.fetch(url, cache_dir=cache, progress=True)
    err = capsys.readouterr().err
    assert "downloading p.bin" in err and "3.0 MiB / 3.0 MiB (100%)" in err


# ================================================================================================ refusals


def test_wrong_checksum_is_refused_and_not_kept(server, cache, capsys):
    url = server.add("/m.tgz", _inception())
    with pytest.raises(ckpt.errors.ChecksumMismatchError, match="expected 0000") as info:
        ckpt.fetch(url, cache_dir=cache, sha256="0" * 64)
    assert info.value.expected == "0" * 64
    assert _listing(cache) == []
    assert main(["fetch", url, "--cache-dir", str(cache), "--sha256", "0" * 64, "-q"]) == 2  # trouble: exit status 2, as for every command
    assert "SHA-256" in capsys.readouterr().err
    with pytest.raises(ValueError, match="64 hexadecimal"):
        ckpt.fetch(url, cache_dir=cache, sha256="abc")


def test_http_errors_and_other_schemes(server, cache):
    with pytest.raises(ckpt.errors.DownloadError, match="HTTP 404"):
        ckpt.fetch(server.url("/missing.tgz"), cache_dir=cache, retries=0)
    with pytest.raises(ckpt.UnsupportedError, match="http:// and https://"):
        ckpt.fetch("ftp://127.0.0.1/x.tgz", cache_dir=cache)
    with pytest.raises(ckpt.UnsupportedError):  # everywhere else, URLs are still refused
        ckpt.local_path(server.url("/x"))


HOSTILE_TARS = {
    "traversal": ([({"name": "ok.txt"}, b"fine"), ({"name": "../../outside/evil.txt"}, b"pwned")],
                  "../../outside/evil.txt", "outside the archive"),
    "nested-traversal": ([({"name": "a/b/../../../outside/evil.txt"}, b"pwned")],
                         "a/b/../../../outside/evil.txt", "outside the archive"),
    "absolute": ([({"name": "/tmp/ckpt-test-outside/evil.txt"}, b"pwned")], "/tmp/ckpt-test-outside/evil.txt",
                 "absolute path"),
    "symlink-escape": ([({"name": "lnk", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None),
                        ({"name": "lnk/evil.txt"}, b"pwned")], "lnk", "leads outside"),
    "symlink-absolute": ([({"name": "etc", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None)], "etc",
                         "leads outside"),
    "symlink-through-symlink": ([({"name": "d", "type": tarfile.DIRTYPE}, None),
                                 ({"name": "d/up", "type": tarfile.SYMTYPE, "linkname": ".."}, None),
                                 ({"name": "d/up2", "type": tarfile.SYMTYPE, "linkname": "up/.."}, None)],
                                "d/up2", "leads outside"),
    "hardlink-escape": ([({"name": "h", "type": tarfile.LNKTYPE, "linkname": "../../outside/secret"}, None)], "h",
                        "outside the archive"),
    "hardlink-absolute": ([({"name": "h", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, None)], "h",
                          "outside the archive"),
    "device": ([({"name": "null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)], "null",
               "character device"),
    "fifo": ([({"name": "pipe", "type": tarfile.FIFOTYPE}, None)], "pipe", "FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_is_refused_and_nothing_is_written(case, server, cache, tmp_path):
    members, member, message = HOSTILE_TARS[case]
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    before = _listing(tmp_path)
    url = server.add(f"/{case}.tgz", _tar([(dict(f), d) for f, d in members]))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match=message) as info:
        ckpt.fetch(url, cache_dir=cache)
    assert info.value.key == member and "nothing was extracted" in str(info.value)
    assert not os.path.exists("/tmp/ckpt-test-outside")
    assert (tmp_path / "outside" / "secret").read_text() == "secret"
    after = [p for p in _listing(tmp_path) if not p.startswith("cache")]
    assert after == before
    assert not [p for p in _listing(cache) if p.endswith(".d") or ".tmp" in p]  # no half-extracted tree


@pytest.mark.parametrize("members, message", [
    ([("../evil.txt", b"x", 0o100644)], "outside the archive"),
    (["/abs/evil.txt", b"x", 0o100644], None),
    ([("link", b"../../outside", 0o120777)], "symbolic link"),
], ids=["traversal", "absolute", "symlink"])
def test_hostile_zip_is_refused(members, message, server, cache):
    if message is None:
        members, message = [tuple(members)], "absolute path"
    url = server.add("/hostile.zip", _zip(members))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match=message):
        ckpt.fetch(url, cache_dir=cache)
    assert not [p for p in _listing(cache) if p.endswith(".d") or ".tmp" in p]


def test_decompression_bomb_stops_at_the_limit(server, cache):
    zeros = b"\0" * (40 << 20)
    url = server.add("/bomb.tgz", _tar([({"name": "zeros.bin"}, zeros)]))
    assert len(server.files["/bomb.tgz"]) < (1 << 20)
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match="max_bytes"):
        ckpt.fetch(url, cache_dir=cache, max_bytes=8 << 20)
    assert not [p for p in _listing(cache) if p.endswith(".d") or ".tmp" in p]
    url = server.add("/bomb.zip", _zip([("zeros.bin", zeros, 0o100644)]))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match="max_bytes"):
        ckpt.fetch(url, cache_dir=cache, max_bytes=8 << 20)


def test_a_header_that_claims_a_terabyte_is_refused_before_reading(server, cache):
    header = tarfile.TarInfo("huge.bin")
    header.size = 1 << 40
    raw = header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096  # the data is not there at all
    url = server.add("/liar.tar.gz", gzip.compress(raw))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match="declares 1,099,511,627,776 bytes"):
        ckpt.fetch(url, cache_dir=cache)


def test_too_many_files(server, cache):
    url = server.add("/many.tgz", _tar([({"name": f"f{i}"}, b"") for i in range(30)]))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match="max_files=10"):
        ckpt.fetch(url, cache_dir=cache, max_files=10)
    url = server.add("/many.zip", _zip([(f"f{i}", b"", 0o100644) for i in range(30)]))
    with pytest.raises(ckpt.errors.UnsafeArchiveError, match="max_files=10"):
        ckpt.fetch(url, cache_dir=cache, max_files=10)


@pytest.mark.parametrize("name", ["cut.tgz", "cut.zip"])
def test_truncated_archive_is_a_clear_error_and_not_kept(name, server, cache):
    body = _inception() if name.endswith(".tgz") else _zip([("a.txt", os.urandom(5000), 0o100644)])
    url = server.add(f"/{name}", body[: len(body) // 2])
    with pytest.raises(ckpt.CorruptCheckpointError, match="truncated") as info:
        ckpt.fetch(url, cache_dir=cache)
    assert not isinstance(info.value, ckpt.errors.UnsafeArchiveError)
    assert [p for p in _listing(cache) if not p.startswith(".ckpt.lock")] == []


def test_a_download_larger_than_allowed_is_refused_and_not_kept(server, cache):
    url = server.add("/huge.bin", os.urandom(2 << 20))
    with pytest.raises(ckpt.errors.DownloadError, match="max_bytes") as info:
        ckpt.fetch(url, cache_dir=cache, max_download_bytes=1 << 20)
    assert not info.value.retryable
    assert [p for p in _listing(cache) if not p.startswith(".ckpt.lock")] == []
