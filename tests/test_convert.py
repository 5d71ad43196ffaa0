"""``ckpt.convert`` and ``ckpt convert``: every format pair, renaming with restore's rules, filtering, casting,
sharding, all problems reported before writing, verification, progress, and streaming memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ckpt
from ckpt import _convert, formats
from ckpt.cli.main import main

DATA = Path(__file__).parent / "data"

VALUES = {
    "model/fc1/weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "model/fc1/bias": np.array([0.5, -1.0, 2.0], dtype=np.float32),
    "model/emb": np.linspace(0, 1, 8).reshape(2, 4),
    "optimizer/model/fc1/weight/exp_avg": np.full((3, 4), 0.25, dtype=np.float32),
    "step": np.array(12, dtype=np.int64),
    "mask": np.array([True, False]),
}
EXT = {"tensorflow": "tf/model.ckpt", "safetensors": "m.safetensors", "torch": "m.pt", "numpy": "m.npz"}


def read_all(path, **kw) -> dict[str, np.ndarray]:
    with ckpt.Reader(path, **kw) as r:
        return {name: np.array(r[name]) for name in r.keys()}


def assert_values(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert got[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("src_fmt", list(EXT))
@pytest.mark.parametrize("dst_fmt", list(EXT))
def test_every_format_pair_round_trips(tmp_path, src_fmt, dst_fmt):
    src = tmp_path / "src" / EXT[src_fmt]
    formats.get(src_fmt).write(src, VALUES.items(), sync=False)
    dst = tmp_path / "dst" / EXT[dst_fmt]
    result = ckpt.convert(src, dst, sync=False)
    assert result.verified and result.format == dst_fmt and result.source_format == src_fmt
    assert result.tensors == len(VALUES) and result.bytes == sum(v.nbytes for v in VALUES.values())
    assert_values(read_all(dst), VALUES)


def test_tf_golden_checkpoint_to_safetensors_keeps_values(tmp_path):
    result = ckpt.convert(DATA / "tf1_adam", tmp_path / "adam.safetensors")
    assert result.source == DATA / "tf1_adam" / "model.ckpt-3"
    assert_values(read_all(tmp_path / "adam.safetensors"), read_all(DATA / "tf1_adam"))


def test_map_rules_are_restores_rules(tmp_path):
    src = tmp_path / "m.safetensors"
    formats.get("safetensors").write(src, VALUES.items(), sync=False)
    rules = [(r"^model/", "net."), (r"^optimizer/.*", ""), (r"/", ".")]
    result = ckpt.convert(src, tmp_path / "out.pt", map=rules)
    got = read_all(tmp_path / "out.pt")
    assert sorted(got) == ["mask", "net.emb", "net.fc1/bias", "net.fc1/weight", "step"]  # first matching rule only
    assert result.skipped == ("optimizer/model/fc1/weight/exp_avg",)
    assert result.names["net.fc1/weight"] == "model/fc1/weight"
    # A dict selects exactly the names it lists, as ckpt.restore(map={...}) does.
    result = ckpt.convert(src, tmp_path / "sel.npz", map={"model/emb": "embedding"})
    assert list(read_all(tmp_path / "sel.npz")) == ["embedding"] and len(result.skipped) == len(VALUES) - 1


def test_include_exclude_and_dtype_cast_only_floats(tmp_path):
    src = tmp_path / "m.safetensors"
    formats.get("safetensors").write(src, VALUES.items(), sync=False)
    result = ckpt.convert(src, tmp_path / "out" / "bf", dtype="bfloat16", include=["model/*", "step"],
                          exclude="model/emb")
    got = read_all(tmp_path / "out" / "bf")
    assert sorted(got) == ["model/fc1/bias", "model/fc1/weight", "step"]
    assert got["model/fc1/weight"].dtype == ml_dtypes.bfloat16 and got["step"].dtype == np.int64
    np.testing.assert_array_equal(got["model/fc1/weight"].astype(np.float32), VALUES["model/fc1/weight"])
    assert sorted(result.cast) == ["model/fc1/bias", "model/fc1/weight"]
    assert result.bytes == 12 * 2 + 3 * 2 + 8


def test_all_problems_are_listed_before_anything_is_written(tmp_path):
    with pytest.raises(ckpt.UnsupportedError) as info:
        ckpt.convert(DATA / "tf2_checkpoint", tmp_path / "x.safetensors", names="clean",
                     map=[(r"^model/layer/(kernel|bias)$", "same")])
    message = str(info.value)
    assert "nothing was written" in message
    assert "'model/vocab': safetensors has no string type" in message
    assert "'same': the name map gives this name to both 'model/layer/bias' and 'model/layer/kernel'" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ckpt.UnsupportedError, match="does not write them"):
        ckpt.convert(DATA / "tf1_adam", tmp_path / "x.weights.h5")
    with pytest.raises(ckpt.UnsupportedError, match="shard_size applies to safetensors"):
        ckpt.convert(DATA / "tf1_adam", tmp_path / "x.pt", shard_size="1MB")
    with pytest.raises(ckpt.CheckpointError, match="is the source checkpoint"):
        ckpt.convert(DATA / "tf1_adam" / "model.ckpt-3", DATA / "tf1_adam" / "model.ckpt-3")


def test_tf2_raw_names_drop_the_object_graph_outside_tensorflow(tmp_path):
    result = ckpt.convert(DATA / "tf2_checkpoint", tmp_path / "raw.npz", exclude=["*vocab*"])
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in result.skipped
    # ... but a TensorFlow-to-TensorFlow copy with the same names keeps it, so TensorFlow can still restore it.
    ckpt.convert(DATA / "tf2_checkpoint", tmp_path / "copy" / "ckpt-3")
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in ckpt.Reader(tmp_path / "copy" / "ckpt-3").keys()
    assert ckpt.Reader(tmp_path / "copy" / "ckpt-3", names="clean").keys() == \
        ckpt.Reader(DATA / "tf2_checkpoint", names="clean").keys()


def test_verification_catches_a_writer_that_changes_values(tmp_path, monkeypatch):
    module = formats.get("numpy")
    original = module.write

    def sloppy(path, tensors, **kw):
        def altered():
            for name, array in tensors:
                yield name, (np.asarray(array) + 1 if name == "model/emb" else array)
        return original(path, altered(), **kw)

    monkeypatch.setattr(module, "write", sloppy)
    src = tmp_path / "m.safetensors"
    formats.get("safetensors").write(src, VALUES.items(), sync=False)
    with pytest.raises(ckpt.CorruptCheckpointError, match="verification after writing failed:\n  'model/emb': values "
                                                          "differ"):
        ckpt.convert(src, tmp_path / "out.npz")


def test_progress_callback_and_bar(tmp_path, monkeypatch, capsys):
    src = tmp_path / "m.safetensors"
    formats.get("safetensors").write(src, VALUES.items(), sync=False)
    calls = []
    ckpt.convert(src, tmp_path / "a.npz", progress=lambda done, total, name: calls.append((done, total, name)))
    assert [c[2] for c in calls] == sorted(VALUES) and calls[-1][0] == calls[-1][1] == sum(
        v.nbytes for v in VALUES.values())
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    monkeypatch.setattr(_convert, "_PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(_convert, "_PROGRESS_EVERY", 0.0)
    ckpt.convert(src, tmp_path / "b.npz", progress=True)
    err = capsys.readouterr().err
    assert "\r[" in err and "100%" in err
    ckpt.convert(src, tmp_path / "c.npz")  # stderr is not a terminal here: no bar by default
    assert capsys.readouterr().err == ""


def test_peak_memory_stays_near_the_largest_tensor(tmp_path):
    """10 tensors of 20 MB: conversions in both directions (one with a cast) stay under 2 x 20 MB of extra
    NumPy/Python memory, measured with tracemalloc (memory-mapped file pages are not allocations)."""
    size = 20 * 1024 * 1024
    n = size // 4

    def tensors():
        for i in range(10):
            yield f"layer{i}/w", np.full(n, i, dtype=np.float32)

    src = tmp_path / "big.safetensors"
    formats.get("safetensors").write(src, tensors(), sync=False)
    formats.get("torch")  # import torch before measuring: importing it allocates tens of MB of Python objects
    steps = [(src, tmp_path / "tf" / "big", {}), (tmp_path / "tf" / "big", tmp_path / "half.safetensors",
                                                 {"dtype": "float16"}),
             (tmp_path / "tf" / "big", tmp_path / "bf.pt", {"dtype": "bfloat16"}),  # torch.save: cast tensors spill
             (tmp_path / "bf.pt", tmp_path / "back.safetensors", {})]
    for source, dst, kw in steps:
        tracemalloc.start()
        try:
            result = ckpt.convert(source, dst, sync=False, **kw)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.verified and result.tensors == 10
        assert peak < 2 * size, f"{dst.name}: peak {peak / 1e6:.1f} MB"
    with ckpt.Reader(tmp_path / "half.safetensors") as r:
        assert r["layer7/w"].dtype == np.float16 and r["layer7/w"][0] == 7


# ============================================================================================= CLI


def test_cli_convert_human_and_json(tmp_path, capsys):
    code = main(["convert", str(DATA / "tf2_checkpoint"), str(tmp_path / "m.safetensors"), "--names", "clean",
                 "--exclude", "model/vocab", "--map", "^model/=net/", "--dtype", "float16"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{DATA / 'tf2_checkpoint' / 'ckpt-3'} (tensorflow) -> {tmp_path / 'm.safetensors'} (safetensors)"
    assert lines[1] == "16 tensors, 82 B, 7 renamed, 14 cast to float16, 1 skipped, verified"
    assert "net/layer/kernel" in ckpt.Reader(tmp_path / "m.safetensors").keys()
    (tmp_path / "names.json").write_text(json.dumps({"net/layer/kernel": "dense.kernel"}))
    code = main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "k.npz"), "--map",
                 f"@{tmp_path / 'names.json'}", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["names"] == {"dense.kernel": "net/layer/kernel"} and doc["format"] == "numpy" and doc["verified"]
    assert doc["files"] == [str(tmp_path / "k.npz")] and doc["tensors"] == 1


def test_cli_convert_shards(tmp_path, capsys):
    code = main(["convert", str(DATA / "tf1_adam"), str(tmp_path / "hf" / "model.safetensors"), "--shard-size",
                 "64B", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["destination"] == str(tmp_path / "hf" / "model.safetensors.index.json")
    assert len(doc["files"]) > 3
    assert_values(read_all(tmp_path / "hf"), read_all(DATA / "tf1_adam"))


@pytest.mark.parametrize("argv, message", [
    (["--map", "no-equals-sign"], "expected REGEX=REPLACEMENT"),
    (["--map", "([=x"], "invalid regular expression"),
    (["--shard-size", "lots"], "not a size"),
    (["--map", "@/nonexistent/names.json"], "cannot read a JSON name map"),
])
def test_cli_convert_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["convert", str(DATA / "tf1_adam"), str(tmp_path / "x.safetensors"), *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_convert_error_is_one_line(tmp_path, capsys):
    code = main(["convert", str(DATA / "tf2_checkpoint"), str(tmp_path / "x.safetensors")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("Error: cannot convert") and "Traceback" not in err
    assert "--exclude GLOB" in err


def test_parse_size():
    assert _convert.parse_size("5GB") == 5 * 10**9
    assert _convert.parse_size("500MiB") == 500 * 2**20
    assert _convert.parse_size("1.5k") == 1500
    assert _convert.parse_size("1024") == 1024
    with pytest.raises(ValueError):
        _convert.parse_size("-3MB")
