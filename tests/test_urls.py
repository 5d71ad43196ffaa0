"""Paths with a URL scheme are refused by every entry point, and nothing is written (no local ``s3:`` folder)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import ckpt
from ckpt._paths import local_path, url_scheme
from ckpt.cli.main import main

URLS = ["s3://bucket/run/ckpt", "gs://bucket/ckpt", "hf://user/repo/ckpt", "http://127.0.0.1/ckpt",
        "https://example.invalid/c", "az://container/c", "abfss://x@y/c", "my+scheme.v2://x"]
STATE = {"w": np.arange(4, dtype=np.float32)}


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_untouched(directory, before=()):
    assert sorted(os.listdir(directory)) == sorted(before)
    assert not any(name.endswith(":") for name in os.listdir(directory))


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("entry", [
    lambda u: ckpt.save(STATE, u),
    lambda u: ckpt.save(STATE, u, step=3, blocking=False),
    lambda u: ckpt.save(STATE, pathlib.Path(u)),
    lambda u: ckpt.api.write_checkpoint(STATE, u),
    lambda u: ckpt.load(u),
    lambda u: ckpt.load(u, flat=True, framework="torch"),
    lambda u: ckpt.restore(u, {"w": np.zeros(4, np.float32)}),
    lambda u: ckpt.Reader(u),
    lambda u: ckpt.Manager(u),
    lambda u: ckpt.latest(u),
    lambda u: ckpt.verify(u),
    lambda u: ckpt.diff(u, u),
    lambda u: ckpt.convert(u, "out.safetensors"),
], ids=["save", "save-async", "save-pathlib", "write_checkpoint", "load", "load-flat", "restore", "Reader",
        "Manager", "latest", "verify", "diff", "convert-src"])
def test_api_refuses_urls_and_writes_nothing(empty_cwd, url, entry):
    with pytest.raises(ckpt.UnsupportedError, match="URLs are not supported yet") as info:
        entry(url)
    assert info.value.path is not None
    ckpt.wait()  # nothing was queued either
    _assert_untouched(empty_cwd)


@pytest.mark.parametrize("dst", ["s3://bucket/out.safetensors", "gs://bucket/ckpt"])
def test_convert_to_url_writes_nothing(empty_cwd, dst):
    ckpt.save(STATE, "local/ckpt")
    before = sorted(os.listdir(empty_cwd))
    with pytest.raises(ckpt.UnsupportedError):
        ckpt.convert("local/ckpt", dst)
    _assert_untouched(empty_cwd, before)


@pytest.mark.parametrize("argv", [
    ["inspect", "s3://b/ckpt"], ["verify", "s3://b/ckpt"], ["convert", "s3://b/ckpt", "out.safetensors"],
    ["convert", "local/ckpt", "s3://b/out.safetensors"], ["diff", "local/ckpt", "gs://b/ckpt"],
    ["graph", "hf://u/r/model.pb"], ["graph", "local/model.pb", "--html", "s3://b/g.html"],
    ["graph", "local/model.pb", "--logdir", "s3://b/logs"],
    ["freeze", "--graph", "s3://b/model.meta", "--outputs", "y", "--output", "frozen.pb"],
    ["freeze", "--graph", "local/model.meta", "--checkpoint", "gs://b/ckpt", "--outputs", "y"],
    ["freeze", "--graph", "local/model.meta", "--outputs", "y", "--output", "s3://b/frozen.pb"],
    ["run", "s3://b/model.pb"], ["run", "local/model.pb", "--checkpoint", "s3://b/ckpt"],
    ["run", "local/model.pb", "--output", "s3://b/out.npz"],
], ids=lambda argv: "-".join(a.split(":")[0] for a in argv[:3]))
def test_every_cli_command_refuses_urls(empty_cwd, capsys, argv):
    ckpt.save(STATE, "local/ckpt")
    before, before_local = sorted(os.listdir(empty_cwd)), sorted(os.listdir(empty_cwd / "local"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "URLs are not supported yet" in err and "Traceback" not in err
    _assert_untouched(empty_cwd, before)
    assert sorted(os.listdir(empty_cwd / "local")) == before_local


def test_file_urls_are_local_paths(tmp_path):
    url = (tmp_path / "with space" / "ckpt").as_uri()  # file:///.../with%20space/ckpt
    assert url.startswith("file:///") and "%20" in url
    prefix = ckpt.save(STATE, url)
    assert prefix == str(tmp_path / "with space" / "ckpt")
    assert os.path.exists(tmp_path / "with space" / "ckpt.index")
    np.testing.assert_array_equal(ckpt.load("file://localhost" + str(tmp_path / "with space"))["w"], STATE["w"])
    assert ckpt.latest((tmp_path / "with space").as_uri()) == prefix
    with ckpt.Reader(url) as reader:
        assert reader.prefix == prefix


def test_file_url_of_another_host_is_refused(empty_cwd):
    with pytest.raises(ckpt.UnsupportedError, match="not this machine"):
        ckpt.save(STATE, "file://otherhost/data/ckpt")
    _assert_untouched(empty_cwd)


@pytest.mark.parametrize("path, scheme", [
    ("s3://b/k", "s3"), ("S3://b/k", "s3"), ("model/ckpt", None), ("/abs/ckpt", None), ("ckpt:v1/x", None),
    ("weird:name", None), ("./s3://x", None), (pathlib.Path("s3://b/k"), "s3"), (b"gs://b", "gs"),
])
def test_url_scheme(path, scheme):
    assert url_scheme(path) == scheme


def test_local_paths_pass_unchanged(tmp_path):
    assert local_path("model/ckpt") == "model/ckpt"
    assert local_path(tmp_path) == str(tmp_path)
    assert local_path(b"model/ckpt") == "model/ckpt"
