"""The CLI's rough edges (issue 14, item 3): one section per edge, each run the way a user meets it.

Most tests call ``ckpt.cli.main.main`` in this process (fast); those about what a shell sees (exit status, usage
text, no traceback) run ``python -m ckpt.cli.main`` in a subprocess.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt.cli import _output
from ckpt.cli.main import main

DATA = Path(__file__).parent / "data"
SRC = Path(ckpt.__file__).resolve().parents[1]
STATE = {"model/dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
         "model/dense/bias": np.ones(4, np.float64), "step": np.array(7, np.int64)}


def cli(*argv, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``ckpt ARGV`` in a fresh interpreter, with this checkout's ckpt first on the path."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "ckpt.cli.main", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=full, timeout=300)


def call(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def big_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal(4096).astype(np.float32), "b": rng.standard_normal((64, 64)).astype(np.float32)}


# ------------------------------------------------------------------------- verify: every format Reader opens


@pytest.fixture
def files(tmp_path):
    """The same tensors in every format ckpt reads, written by the real libraries where there is one."""
    import h5py
    import torch
    from safetensors.numpy import save_file

    state = big_state()
    out = {"safetensors": tmp_path / "model.safetensors", "numpy": tmp_path / "model.npz",
           "torch": tmp_path / "model.pt", "keras": tmp_path / "model.weights.h5", "tensorflow": tmp_path / "tf"}
    save_file(state, str(out["safetensors"]))
    np.savez(out["numpy"], **state)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, out["torch"])
    with h5py.File(out["keras"], "w") as f:
        for k, v in state.items():
            f.create_dataset(f"layers/dense/vars/{k}", data=v)
    ckpt.save(state, out["tensorflow"] / "ckpt-1")
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "numpy", "torch", "keras", "tensorflow"])
def test_verify_accepts_every_format(files, fmt, capsys):
    code, out, err = call(capsys, "verify", files[fmt])
    assert (code, err) == (0, "")
    assert out.startswith("OK: ") and "2 tensor(s)" in out and "32.0 KiB" in out
    if fmt != "tensorflow":
        assert f"({fmt})" in out
    code, out, _ = call(capsys, "verify", files[fmt], "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["format"] == fmt and report["tensors"] == 2
    assert report["checked"] == importlib.import_module("ckpt._verify").CHECKS[fmt]


def test_verify_sharded_safetensors_directory(files, tmp_path, capsys):
    ckpt.convert(files["numpy"], tmp_path / "hf" / "model.safetensors", shard_size=16 << 10)
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) == 2
    code, out, _ = call(capsys, "verify", tmp_path / "hf", "--json")
    assert code == 0 and json.loads(out)["format"] == "safetensors" and json.loads(out)["tensors"] == 2


def _zip_member_data(path: Path, member_suffix: str) -> int:
    """Offset of the middle of a stored zip member's data."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    raw = path.read_bytes()
    name_len, extra_len = np.frombuffer(raw[info.header_offset + 26:info.header_offset + 30], "<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2


@pytest.mark.parametrize("fmt", ["numpy", "torch", "tensorflow", "safetensors"])
def test_verify_finds_damage(files, fmt, capsys):
    path = files[fmt]
    if fmt == "numpy":
        flip(path, _zip_member_data(path, "b.npy"))  # the zip CRC-32 of member b no longer matches
    elif fmt == "torch":
        flip(path, _zip_member_data(path, "data/1"))
    elif fmt == "tensorflow":
        data = next((path).glob("ckpt-1.data-*"))
        flip(data, data.stat().st_size // 2)  # CRC32C
    else:  # safetensors has no checksum: cut the file short
        raw = path.read_bytes()
        path.write_bytes(raw[:-1000])
    code, out, err = call(capsys, "verify", path)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert len(lines) >= 2 and "problem(s)" in lines[-1]
    assert any(re.search(r"crc|checksum|needs bytes", line, re.I) for line in lines[:-1]), out


def test_verify_of_something_else_is_trouble(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint")
    code, out, err = call(capsys, "verify", tmp_path / "notes.txt")
    assert code == 2 and out == "" and err.startswith("Error: ")


# ------------------------------------------------------------------ numeric options: a usage error, exit 2


@pytest.mark.parametrize("argv, option", [
    (["inspect", "{tf}", "--precision", "-3"], "--precision"),
    (["inspect", "{tf}", "--precision", "three"], "--precision"),
    (["inspect", "{tf}", "--summary", "--depth", "0"], "--depth"),
    (["diff", "{tf}", "{tf}", "--atol", "-1"], "--atol"),
    (["diff", "{tf}", "{tf}", "--rtol", "nan"], "--rtol"),
])
def test_bad_numbers_are_usage_errors(tmp_path, argv, option):
    ckpt.save(STATE, tmp_path / "ckpt-1")
    proc = cli(*[a.format(tf=tmp_path / "ckpt-1") for a in argv])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"usage: ckpt {argv[0]}")
    assert f"argument {option}" in proc.stderr


def test_good_numbers_still_work(tmp_path, capsys):
    ckpt.save(STATE, tmp_path / "ckpt-1")
    code, out, _ = call(capsys, "inspect", tmp_path / "ckpt-1", "-t", "model/dense/bias", "--precision", "0")
    assert code == 0 and "[1. 1. 1. 1.]" in out
    assert call(capsys, "diff", tmp_path / "ckpt-1", tmp_path / "ckpt-1", "--atol", "1e-6")[0] == 0


# --------------------------------------------------------------------- graph on a checkpoint names the format


@pytest.mark.parametrize("fmt, name", [("torch", "a PyTorch checkpoint"), ("safetensors", "a safetensors checkpoint"),
                                       ("numpy", "a NumPy .npz checkpoint"), ("keras", "a Keras/HDF5 weights file")])
def test_graph_of_a_checkpoint_says_what_it_is(files, fmt, name, capsys):
    path = files[fmt]
    code, out, err = call(capsys, "graph", path)
    assert code == 2 and out == ""
    assert f"Error: {path} is {name}, not a graph; use `ckpt inspect {path}`" in err
    assert "damaged" not in err and "truncated" not in err
    # freeze and run read a graph too
    assert call(capsys, "freeze", "--graph", path, "--outputs", "y", "-o", files["tensorflow"] / "f.pb")[0] == 2


def test_a_damaged_graph_is_still_called_damaged(tmp_path, capsys):
    (tmp_path / "bad.pb").write_bytes(b"\x0a\xff\xff\xff\xff")
    code, _, err = call(capsys, "graph", tmp_path / "bad.pb")
    assert code == 2 and "not a graph" not in err and "damaged" in err


# ------------------------------------------------------------------------ exit status: 0 / 1 differs / 2 trouble


def test_diff_exit_status_follows_gnu_diff(tmp_path):
    ckpt.save(STATE, tmp_path / "a")
    ckpt.save({**STATE, "step": np.array(8, np.int64)}, tmp_path / "b")
    assert cli("diff", tmp_path / "a", tmp_path / "a").returncode == 0
    differs = cli("diff", tmp_path / "a", tmp_path / "b")
    assert differs.returncode == 1 and "differ:" in differs.stdout and differs.stderr == ""
    missing = cli("diff", tmp_path / "a", tmp_path / "nope")
    assert missing.returncode == 2 and missing.stdout == "" and missing.stderr.startswith("Error: no checkpoint")


def test_trouble_is_2_for_every_command(tmp_path, capsys):
    nope = tmp_path / "nope"
    for argv in (["inspect", nope], ["verify", nope], ["convert", nope, tmp_path / "x.npz"], ["diff", nope, nope],
                 ["graph", nope], ["freeze", "--graph", nope, "--outputs", "y", "-o", tmp_path / "f.pb"],
                 ["summary", nope]):
        code, out, err = call(capsys, *argv)
        assert code == 2 and err.startswith("Error: "), (argv, code, err)


def test_exit_status_is_documented_in_help():
    top = cli("--help")
    assert top.returncode == 0 and "exit status" in top.stdout and "2  trouble" in top.stdout
    for command in ("inspect", "verify", "convert", "diff", "graph", "freeze", "run", "summary"):
        text = cli(command, "--help").stdout
        assert re.search(r"exit status", text, re.I), command


# ------------------------------------------------------------------------------------ convert: --force, suffixes


def test_convert_refuses_to_overwrite_without_force(tmp_path, capsys):
    ckpt.save(STATE, tmp_path / "src")
    for dst in (tmp_path / "out.safetensors", tmp_path / "out.npz", tmp_path / "tfout"):
        assert call(capsys, "convert", tmp_path / "src", dst)[0] == 0
        before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        code, out, err = call(capsys, "convert", tmp_path / "src", dst, "--dtype", "float16")
        assert code == 2 and out == "" and "already exists" in err and "--force" in err
        assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing touched
        assert call(capsys, "convert", tmp_path / "src", dst, "--dtype", "float16", "--force")[0] == 0
        with ckpt.Reader(dst) as r:
            assert r["model/dense/kernel"].dtype == np.float16


def test_convert_refuses_over_hugging_face_shards(tmp_path, capsys):
    ckpt.save(big_state(), tmp_path / "src")
    dst = tmp_path / "hf" / "model.safetensors"
    assert call(capsys, "convert", tmp_path / "src", dst, "--shard-size", "16KiB")[0] == 0
    code, _, err = call(capsys, "convert", tmp_path / "src", dst)  # a single file would sit beside the shards
    assert code == 2 and "model.safetensors.index.json already exists" in err


def test_convert_refuses_unknown_suffixes(tmp_path, capsys):
    ckpt.save(STATE, tmp_path / "src")
    code, out, err = call(capsys, "convert", tmp_path / "src", tmp_path / "model.weights")
    assert code == 2 and out == ""
    assert "unknown destination suffix '.weights'" in err
    for known in (".safetensors", ".pt", ".bin", ".npz", "TensorFlow prefix"):
        assert known in err
    assert not list(tmp_path.glob("model.weights*"))
    # the TensorFlow route: a bare prefix, TF1's model.ckpt / model.ckpt-N, or saying so
    for dst in ("bare", "model.ckpt", "model.ckpt-30"):
        assert call(capsys, "convert", tmp_path / "src", tmp_path / dst)[0] == 0
        assert (tmp_path / f"{dst}.index").exists()
    assert call(capsys, "convert", tmp_path / "src", tmp_path / "model.weights", "--to", "tensorflow")[0] == 0
    with ckpt.Reader(tmp_path / "model.weights") as r:
        assert r.format == "tensorflow" and set(r.keys()) == set(STATE)


# ---------------------------------------------------------------------- unknown options: the sub-command's usage


def test_unknown_option_prints_the_subcommands_usage(tmp_path):
    proc = cli("inspect", tmp_path, "--bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: ckpt inspect ")
    assert "ckpt inspect: error: unrecognized arguments: --bogus" in proc.stderr
    proc = cli("convert", "a", "b", "c")
    assert proc.stderr.startswith("usage: ckpt convert ") and "unrecognized arguments: c" in proc.stderr


# ------------------------------------------------------------------------------ the pickled .pt refusal is short


def test_pickled_pt_refusal_is_short_and_its_advice_works(tmp_path):
    import torch

    model = torch.nn.Linear(3, 2)
    torch.save(model, tmp_path / "model.pt")  # a whole module: a pickle that weights_only refuses
    proc = cli("inspect", "model.pt", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    message = proc.stderr.splitlines()[:-1]  # the last line is the CKPT_DEBUG hint
    assert len(message) == 3 and all(len(line) <= 140 for line in message), message
    assert "refusing to unpickle" in message[0] and "torch.nn.modules.linear.Linear" in message[0]
    advice = message[2].strip()
    assert advice.startswith("python -c ")
    argv = shlex.split(advice)
    argv[0] = sys.executable
    subprocess.run(argv, cwd=tmp_path, check=True, timeout=120)  # the command it suggests converts the file
    proc = cli("inspect", "model.weights.pt", "--json", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and sorted(t["name"] for t in doc["tensors"]) == ["bias", "weight"]
    with ckpt.Reader(tmp_path / "model.weights.pt") as r:
        np.testing.assert_array_equal(r["weight"], model.weight.detach().numpy())


# ------------------------------------------------------------------------- wide rows fit the terminal's width


LONG = "model/" + "very_long_scope_name/" * 6 + "kernel"


def test_wide_rows_are_shortened_to_the_terminal(tmp_path, capsys, monkeypatch):
    ckpt.save({LONG: np.zeros(3, np.float32), "b": np.zeros(2, np.float32)}, tmp_path / "ckpt-1")
    monkeypatch.setenv("COLUMNS", "70")
    code, out, _ = call(capsys, "inspect", tmp_path / "ckpt-1")
    rows = [line for line in out.splitlines() if line.startswith("model/")]
    assert code == 0 and len(rows) == 1 and len(rows[0]) <= 70
    name = rows[0].split("  ")[0]
    assert "..." in name and name.startswith("model/very_") and name.endswith("/kernel")
    assert all(len(line) <= 70 for line in out.splitlines()[2:6])
    code, out, _ = call(capsys, "inspect", tmp_path / "ckpt-1", "--wide")
    assert LONG in out
    code, out, _ = call(capsys, "inspect", tmp_path / "ckpt-1", "--json")
    assert LONG in [t["name"] for t in json.loads(out)["tensors"]]
    monkeypatch.delenv("COLUMNS")
    code, out, _ = call(capsys, "inspect", tmp_path / "ckpt-1")  # a pipe or a file: everything in full
    assert LONG in out


def test_shorten_keeps_both_ends():
    assert _output.shorten("abcdefghij", 7) == "ab...ij"
    assert _output.shorten("abc", 7) == "abc"
    assert len(_output.shorten(LONG, 30)) == 30


# ---------------------------------------------------------------------------------------------- freeze --json


def test_freeze_json(tmp_path, capsys):
    shutil.copytree(DATA / "tf1_saver", tmp_path / "m")
    meta = tmp_path / "m" / "model.ckpt-30.meta"
    code, out, err = call(capsys, "freeze", "--graph", meta, "--outputs", "y", "-o", tmp_path / "f.pb", "--json")
    doc = json.loads(out)
    assert code == 0 and err == ""
    assert doc["output"] == str(tmp_path / "f.pb") and doc["bytes"] == (tmp_path / "f.pb").stat().st_size
    assert len(doc["variables"]) == 2 and doc["outputs"] == ["y"] and doc["operations"] < doc["operations_before"]
    assert doc["operations"] == len(ckpt.graph.load(tmp_path / "f.pb"))
    code, out, err = call(capsys, "freeze", "--graph", meta, "--json")  # no --outputs: the candidates, as JSON
    doc = json.loads(out)
    assert code == 2 and err == "" and "y" in [op["name"] for op in doc["predictions"] + doc["outputs"]]


# --------------------------------------------------------------------------------------------- progress bars


@pytest.fixture
def terminal(monkeypatch, capsys):
    """stderr looks like a terminal, and bars are drawn at once (no delay): what a long run shows."""
    monkeypatch.setattr(_output, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(_output, "PROGRESS_DELAY", 0.0)
    monkeypatch.delenv("CKPT_NO_PROGRESS", raising=False)


@pytest.fixture(params=["tqdm", "plain"])
def bar_kind(request, monkeypatch):
    if request.param == "plain":
        monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` raises ImportError
    return request.param


@pytest.mark.parametrize("command", ["convert", "verify", "diff"])
def test_progress_bar_on_a_terminal(tmp_path, capsys, terminal, bar_kind, command, monkeypatch):
    ckpt.save(big_state(), tmp_path / "src")
    argv = {"convert": ["convert", tmp_path / "src", tmp_path / "out.safetensors"],
            "verify": ["verify", tmp_path / "src"], "diff": ["diff", tmp_path / "src", tmp_path / "src"]}[command]
    code, out, err = call(capsys, *argv)
    assert code == 0 and command in err
    if bar_kind == "plain":  # tqdm redraws at most every 0.1 s, so only the plain bar surely shows the end
        assert "[####################] 100%" in err
    assert command not in out.replace(str(tmp_path), "")  # the bar never goes to stdout
    for off in (["--quiet"], ["-q"], ["--json"]):
        if command == "convert":
            os.unlink(tmp_path / "out.safetensors")
        code, out, err = call(capsys, *argv, *off)
        assert code == 0 and err == "", off
    monkeypatch.setenv("CKPT_NO_PROGRESS", "1")
    if command == "convert":
        os.unlink(tmp_path / "out.safetensors")
    assert call(capsys, *argv)[2] == ""


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_output, "PROGRESS_DELAY", 0.0)
    ckpt.save(big_state(), tmp_path / "src")
    code, _, err = call(capsys, "verify", tmp_path / "src")
    assert code == 0 and err == ""


def test_progress_reaches_the_total(tmp_path):
    """The library callbacks behind the bars count every byte once (``done`` ends at ``total``)."""
    ckpt.save(big_state(), tmp_path / "src")
    for run in (lambda cb: ckpt.verify(tmp_path / "src", progress=cb),
                lambda cb: ckpt.diff(tmp_path / "src", tmp_path / "src", progress=cb),
                lambda cb: ckpt.convert(tmp_path / "src", tmp_path / "o.npz", progress=cb)):
        calls = []
        result = run(lambda done, total, name: calls.append((done, total, name)))
        done = [c[0] for c in calls]
        assert done == sorted(done) and all(d <= total for d, total, _ in calls)
        assert {"a", "b"} <= {c[2] for c in calls}
        assert done[-1] == getattr(result, "bytes", 32 << 10) >= 32 << 10


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_real_pseudo_terminal(tmp_path):
    """stderr on a real (pseudo-)terminal, stdout piped: the bar goes to the terminal, stdout stays clean."""
    ckpt.save(big_state(), tmp_path / "src")
    code = ("import sys; import ckpt.cli._output as o; o.PROGRESS_DELAY = 0.0; from ckpt.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("CKPT_NO_PROGRESS", None)
    try:
        proc = subprocess.run([sys.executable, "-c", code, "verify", str(tmp_path / "src")], stdout=subprocess.PIPE,
                              stderr=slave, text=True, env=env, timeout=300)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0 and proc.stdout.startswith("OK: ")
    assert "verify" in terminal and "\r" in terminal
    assert "verify" not in proc.stdout


def test_os_errors_are_trouble_and_a_closed_pipe_is_not(tmp_path, capsys):
    ckpt.save({"w": np.arange(200_000.0)}, tmp_path / "src")
    (tmp_path / "afile").write_text("")
    code, out, err = call(capsys, "convert", tmp_path / "src", tmp_path / "afile" / "x.npz")
    assert code == 2 and out == "" and err.startswith("Error: ") and "Traceback" not in err
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ckpt.cli.main", "inspect", str(tmp_path / "src"), "--all",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `ckpt inspect ... | head -0`: the reader is gone before the output is written
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and b"Traceback" not in err
