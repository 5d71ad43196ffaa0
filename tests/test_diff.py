"""``ckpt.diff`` and ``ckpt diff``: names only on one side, dtype/shape changes, value differences with tolerances,
sorted by size of change, across formats, with exit status 0 only when equal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt import formats
from ckpt.cli.main import main

DATA = Path(__file__).parent / "data"

BASE = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float64), "c": np.array(3, np.int64),
        "d": np.zeros(2, np.float32), "nan": np.array([np.nan, 1.0], np.float32)}


def write(path, values, fmt="safetensors"):
    formats.get(fmt).write(path, values.items(), sync=False)
    return path


def test_identical_across_formats(tmp_path):
    a = write(tmp_path / "a.safetensors", BASE)
    b = write(tmp_path / "tf" / "b", BASE, "tensorflow")
    result = ckpt.diff(a, b)
    assert result.equal and not result.only_a and not result.only_b and not result.changed
    assert all(t.equal and t.max_abs == 0 for t in result.tensors)  # NaN equals NaN in the same place


def test_differences_are_found_and_sorted_by_size(tmp_path):
    changed = dict(BASE)
    changed["a"] = BASE["a"] + np.array([[0, 0, 0], [0, 0, 0.5]], np.float32)
    changed["b"] = BASE["b"] + 1e-9
    changed["d"] = np.zeros(3, np.float32)  # shape change
    changed["c"] = np.array(3, np.int32)  # dtype change
    del changed["nan"]
    changed["new"] = np.ones(1, np.float32)
    a = write(tmp_path / "a.safetensors", BASE)
    b = write(tmp_path / "b.npz", changed, "numpy")
    result = ckpt.diff(a, b)
    assert not result.equal
    assert result.only_a == ["nan"] and result.only_b == ["new"]
    order = [t.name for t in result.tensors]
    assert order[:2] == ["c", "d"] or order[:2] == ["d", "c"]  # structural changes first
    assert order[2:] == ["a", "b"]  # then by the norm of the change
    ta = next(t for t in result.tensors if t.name == "a")
    assert ta.max_abs == pytest.approx(0.5) and ta.max_rel == pytest.approx(0.5 / 5.5) and ta.mismatched == 1
    assert ta.norm == pytest.approx(0.5)
    tc = next(t for t in result.tensors if t.name == "c")
    assert tc.dtype_changed and tc.close and not tc.equal
    # Tolerances: b's 1e-9 change is within atol, a's 0.5 is not.
    tol = ckpt.diff(a, b, atol=1e-6)
    assert {t.name for t in tol.changed} == {"a", "c", "d"}


def test_cli_diff_tf_checkpoint_against_its_conversion(tmp_path, capsys):
    ckpt.convert(DATA / "tf2_checkpoint", tmp_path / "m.safetensors", exclude=["*vocab*"])
    code = main(["diff", str(DATA / "tf2_checkpoint"), str(tmp_path / "m.safetensors"), "--include", "model/layer*"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-1].startswith("all equal: ")
    ckpt.convert(DATA / "tf2_checkpoint", tmp_path / "clean.safetensors", names="clean", exclude=["model/vocab"])
    code = main(["diff", str(DATA / "tf2_checkpoint"), str(tmp_path / "clean.safetensors"), "--names", "clean"])
    out, _ = capsys.readouterr()
    assert code == 1  # the string variable could not go to safetensors
    assert "only in a (1):\n  - model/vocab" in out
    code = main(["diff", str(DATA / "tf2_checkpoint"), str(tmp_path / "clean.safetensors"), "--names", "clean",
                 "--include", "model/l*", "--include", "optimizer/*", "--include", "save_counter"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.splitlines()[-1] == "all equal: 13 tensors"


def test_cli_diff_human_json_and_exit_status(tmp_path, capsys):
    a = write(tmp_path / "a.safetensors", BASE)
    changed = dict(BASE, a=BASE["a"] * 1.001)
    b = write(tmp_path / "b.safetensors", changed)
    code = main(["diff", str(a), str(b)])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    rows = [line.split() for line in out.splitlines() if line.startswith("a ")]
    assert rows == [["a", "5", "differ", "0.005", "0.000999", "0.00742"]]
    assert out.splitlines()[-1] == "differ: 0 only in a, 0 only in b, 1 of 5 common tensors changed"
    code = main(["diff", str(a), str(b), "--rtol", "1e-2"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.splitlines()[-1] == "all equal within atol=0, rtol=0.01: 5 tensors"
    code = main(["diff", str(a), str(b), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["equal"] is False
    assert doc["tensors"][0]["name"] == "a" and doc["tensors"][0]["mismatched"] == 5
    assert doc["tensors"][0]["max_abs"] == pytest.approx(0.005, rel=1e-3)


def test_cli_diff_missing_file_is_an_error(tmp_path, capsys):
    code = main(["diff", str(tmp_path / "nope.safetensors"), str(tmp_path / "nope2")])
    assert code == 2 and capsys.readouterr().err.startswith("Error: ")
