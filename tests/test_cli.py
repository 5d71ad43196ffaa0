"""``ckpt inspect``: the human table, JSON, values, directory input, errors and hostile names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import ckpt
from ckpt.cli.main import main

DATA = Path(__file__).parent / "data"
ADAM = DATA / "tf1_adam"
ADAM_NAMES = ["beta1_power", "beta2_power", "conv_layer_1/W_conv_1", "conv_layer_1/W_conv_1/Adam",
              "conv_layer_1/W_conv_1/Adam_1", "conv_layer_1/b_conv_1", "conv_layer_1/b_conv_1/Adam",
              "conv_layer_1/b_conv_1/Adam_1", "global_step", "zeta", "zeta/Adam", "zeta/Adam_1"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> dict[str, list[str]]:
    """name -> the other cells, from the rows between the dashes line and the blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"[- ]+", line)) + 1
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def test_human_table(capsys):
    code, out, err = run(capsys, ADAM / "model.ckpt-3")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"checkpoint: {ADAM / 'model.ckpt-3'}"
    header = next(line for line in out.splitlines() if line.startswith("name"))
    assert header.split() == ["name", "dtype", "shape", "elements", "bytes"]
    rows = table_rows(out)
    assert list(rows) == ADAM_NAMES  # every tensor, sorted by name
    assert rows["conv_layer_1/W_conv_1"] == ["float32", "[2, 2, 1, 2]", "8", "32 B"]
    assert rows["conv_layer_1/b_conv_1/Adam_1"] == ["float32", "[2]", "2", "8 B"]
    assert rows["global_step"] == ["int64", "[]", "1", "8 B"]
    assert rows["zeta"] == ["float32", "[]", "1", "4 B"]
    assert "12 tensors, 36 elements, 148 B" in out.splitlines()


def test_numbers_are_right_aligned(capsys):
    _, out, _ = run(capsys, ADAM)
    lines = [line for line in out.splitlines() if line.startswith(("conv_layer_1/W_conv_1 ", "zeta "))]
    assert len(lines) == 2 and len(lines[0]) == len(lines[1])  # "32 B" and "4 B" end in the same column


def test_json(capsys):
    code, out, err = run(capsys, ADAM, "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["checkpoint"] == str(ADAM / "model.ckpt-3")
    assert [t["name"] for t in doc["tensors"]] == ADAM_NAMES
    w = next(t for t in doc["tensors"] if t["name"] == "conv_layer_1/W_conv_1")
    assert (w["dtype"], w["shape"], w["elements"], w["bytes"]) == ("float32", [2, 2, 1, 2], 8, 32)
    assert doc["total"] == {"tensors": 12, "elements": 36, "bytes": 148}
    assert doc["values"] == {}


def test_json_with_values(capsys):
    code, out, _ = run(capsys, DATA / "tf1_sharded", "--json", "--all")
    assert code == 0
    values = json.loads(out)["values"]
    assert values["dev0/strings"] == ["ab", "", "cde"]
    assert values["part/w"] == np.arange(15.0).reshape(5, 3).tolist()
    assert values["dev1/c"] == 7


def test_tensor_value(capsys):
    code, out, err = run(capsys, DATA / "tf1_saver" / "model.ckpt-30", "--tensor", "alpha", "-t", "global_step")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[lines.index("alpha:") + 1] == "1.7067256"
    assert lines[lines.index("global_step:") + 1] == "30"
    assert "beta:" not in lines


def test_tensor_value_with_precision(capsys):
    code, out, _ = run(capsys, DATA / "tf1_saver" / "model.ckpt-30", "--tensor", "alpha", "--precision", "2")
    assert code == 0
    assert out.splitlines()[-1] == "1.71"


def test_all_values(capsys):
    code, out, _ = run(capsys, ADAM, "--all")
    assert code == 0
    for name in ADAM_NAMES:
        assert f"\n{name}:\n" in out
    step = out.split("\nglobal_step:\n")[1].splitlines()[0]
    assert step == "3"


def test_directory_says_which_checkpoint_and_lists_the_others(capsys):
    code, out, _ = run(capsys, DATA / "tf1_saver")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"checkpoint: {DATA / 'tf1_saver' / 'model.ckpt-30'} (newest in {DATA / 'tf1_saver'})"
    assert lines[1].split() == ["others:", "model.ckpt-20"]
    doc = json.loads(run(capsys, DATA / "tf1_saver", "--json")[1])
    assert doc["checkpoint"].endswith("model.ckpt-30")
    assert [Path(p).name for p in doc["others"]] == ["model.ckpt-20"]


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert lines and lines[0].startswith("Error: "), err
    assert sum(line.startswith("Error:") for line in lines) == 1
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_error_nonexistent_path(capsys, tmp_path):
    code, out, err = run(capsys, tmp_path / "nope" / "model.ckpt")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(tmp_path / "nope" / "model.ckpt"))


def test_error_unknown_tensor(capsys):
    code, out, err = run(capsys, DATA / "tf1_saver", "--tensor", "alpah")
    assert code == 2 and out == ""
    assert_one_error_line(err, "'alpah'", "did you mean 'alpha'")


def test_error_corrupt_checkpoint(capsys, tmp_path):
    (tmp_path / "bad.index").write_bytes(b"\x00" * 100)
    code, out, err = run(capsys, tmp_path / "bad")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(tmp_path / "bad.index"), "not an sstable")


def test_control_characters_in_names_are_escaped(capsys, tmp_path):
    hostile = {"\x1b[31mred": np.float32(1), "bell\x07/tab\tname": np.int32(2), "nl\nname": np.array([b"\x1b]0;x"],
                                                                                                      dtype=object)}
    prefix = ckpt.save(hostile, tmp_path / "ck", sync=False)
    for extra in ([], ["--all"], ["--tensor", "\x1b[31mred"], ["--json", "--all"]):
        code, out, err = run(capsys, prefix, *extra)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out
        if extra[:1] == ["--json"]:
            doc = json.loads(out)
            assert {t["name"] for t in doc["tensors"]} == set(hostile)  # JSON escapes, and decodes back
        else:
            assert "\\x1b[31mred" in out
            assert "nl\\x0aname" in out and "nl\nname" not in out
    # An error about a hostile name is escaped too.
    code, _, err = run(capsys, prefix, "--tensor", "\x1b[1mbold")
    assert code == 2 and "\x1b" not in err


def test_console_script():
    script = Path(sys.executable).parent / "ckpt"
    assert script.exists(), f"console script not installed at {script}"
    result = subprocess.run([str(script), "inspect", str(ADAM), "--json"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["total"]["tensors"] == 12
    assert doc["checkpoint"] == str(ADAM / "model.ckpt-3")
