"""The format layer: detection by content, safetensors (against the reference library, hostile headers, Hugging
Face shards), PyTorch files through ``torch.load(weights_only=True)`` only, NumPy ``.npz``, Keras ``.weights.h5``,
``ckpt.Reader`` on every format, and the clean names of TensorFlow 2 object graphs (no TensorFlow needed here)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ckpt
from ckpt import formats
from ckpt.formats import safetensors as st

DATA = Path(__file__).parent / "data"

SAMPLE = {
    "emb/table": np.arange(12, dtype=np.float32).reshape(3, 4),
    "w64": np.linspace(-1, 1, 6).reshape(2, 3),
    "half": np.array([1.5, -2.25], dtype=np.float16),
    "bf": np.array([0.5, 3.0, -1.0], dtype=ml_dtypes.bfloat16),
    "step": np.array(7, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "bytes": np.arange(5, dtype=np.uint8),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "i16": np.array([-3, 4], dtype=np.int16),
}


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        assert a.tobytes() == b.tobytes()


# ============================================================================================= detection


def test_detect_by_content_not_name(tmp_path):
    st.write(tmp_path / "model.bin", SAMPLE.items())  # safetensors under a PyTorch name
    with open(tmp_path / "arrays.dat", "wb") as f:  # (given a path, np.savez would append .npz)
        np.savez(f, a=np.ones(2), b=np.zeros(3))
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "weights.safetensors")  # a torch zip under a safetensors name
    ckpt.save({"x": np.ones(2, np.float32)}, tmp_path / "tf" / "model.ckpt", sync=False)
    (tmp_path / "junk.pt").write_bytes(b"hello, not a checkpoint at all")
    assert formats.detect(tmp_path / "model.bin") == "safetensors"
    assert formats.detect(tmp_path / "arrays.dat") == "numpy"
    assert formats.detect(tmp_path / "weights.safetensors") == "torch"
    assert formats.detect(tmp_path / "tf" / "model.ckpt") == "tensorflow"
    assert formats.detect(tmp_path / "tf" / "model.ckpt.index") == "tensorflow"
    assert formats.detect(tmp_path / "tf") == "tensorflow"
    with pytest.raises(ckpt.UnsupportedError, match="matches no supported checkpoint format"):
        formats.detect(tmp_path / "junk.pt")
    with ckpt.Reader(tmp_path / "model.bin") as r:
        assert r.format == "safetensors" and r.keys() == sorted(SAMPLE)
    with ckpt.Reader(tmp_path / "arrays.dat") as r:
        assert r.format == "numpy" and r.keys() == ["a", "b"]
    with ckpt.Reader(tmp_path / "weights.safetensors") as r:
        assert r.format == "torch" and r.keys() == ["w"]


def test_destination_format_from_suffix():
    d = formats.destination_format
    assert [d("m.safetensors"), d("m.pt"), d("m.bin"), d("m.pth"), d("m.npz"), d("out/model.ckpt"), d("x")] == \
        ["safetensors", "torch", "torch", "torch", "numpy", "tensorflow", "tensorflow"]
    assert d("m.bin", "safetensors") == "safetensors"
    with pytest.raises(ckpt.UnsupportedError, match="unknown format"):
        d("m", "onnx")


def test_importing_formats_imports_no_framework():
    code = ("import sys, ckpt, ckpt.formats, ckpt.formats.safetensors, ckpt.formats.numpy, ckpt.formats.tensorflow\n"
            "import numpy as np\n"
            "ckpt.formats.safetensors.write(sys.argv[1], [('a', np.ones(2))], sync=False)\n"
            "ckpt.Reader(sys.argv[1])['a']\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'h5py') if m in sys.modules))")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", code, os.path.join(d, "a.safetensors")], capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ============================================================================================= safetensors


def test_safetensors_bytes_equal_the_reference_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in SAMPLE.items() if k != "bf"}  # safetensors.numpy cannot take ml_dtypes arrays
    tensors["ünïcode name"] = np.ones(2, np.float64)
    tensors["transposed"] = np.arange(6.0, dtype=np.float32).reshape(2, 3).T
    safetensors_numpy.save_file({k: np.ascontiguousarray(v) if v.ndim else v for k, v in tensors.items()},
                                str(tmp_path / "ref.safetensors"), metadata={"format": "np"})
    # (one metadata key: the reference keeps metadata in a hash map, so the order of several keys varies)
    st.write(tmp_path / "ours.safetensors", tensors.items(), metadata={"format": "np"}, sync=False)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    # ... and data offsets are aligned to each dtype's size, as the reference lays them out.
    entries, _, start, _ = st.read_header(tmp_path / "ours.safetensors")
    assert start % 8 == 0 and all(e.begin % e.dtype.itemsize == 0 for e in entries.values())


def test_safetensors_round_trip_and_reference_reader(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "m.safetensors"
    st.write(path, SAMPLE.items(), metadata={"step": 7, "note": "hi"}, sync=False)
    with ckpt.Reader(path) as r:
        assert r.keys() == sorted(SAMPLE)
        assert r.metadata == {"step": "7", "note": "hi"}
        for name, value in SAMPLE.items():
            got = r[name]
            assert_same(got, value)
            assert not got.flags.writeable  # a view of the memory-mapped file
        assert r.info("emb/table").offset % 4 == 0
    loaded = safetensors_torch.load_file(str(path))
    from ckpt.adapters.torch import to_numpy

    for name, value in SAMPLE.items():
        assert_same(to_numpy(loaded[name]), value)


def test_safetensors_files_of_the_reference_library_read(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    import torch

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int32), "c": torch.randn(2, dtype=torch.bfloat16)}
    safetensors_torch.save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    with ckpt.Reader(tmp_path / "ref.safetensors") as r:
        assert r.metadata == {"format": "pt"}
        from ckpt.adapters.torch import to_numpy

        for name, t in tensors.items():
            assert_same(r[name], to_numpy(t))


def _file(header: bytes | dict, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


HOSTILE = {
    "huge header length": (_file(b"{}", length=1 << 62), "exceeds the 100000000-byte limit"),
    "header past the end": (_file(b'{"a": 1}', length=1000), "runs past the end"),
    "not json": (_file(b"{not json at all}"), "not valid JSON"),
    "not an object": (_file(b"[1, 2]"), "does not start with '{'"),
    "not utf-8": (_file(b'{"\xff": 1}'), "not valid JSON"),
    "too small": (b"\x01\x00", "too small"),
    "offsets outside the file": (_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
                                 "needs bytes 0..16"),
    "overlapping": (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
                    "overlaps the previous tensor"),
    "gap": (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "leaves a gap"),
    "wrong size": (_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
                   "needs 12 bytes but its data_offsets span 8"),
    "overflowing shape": (_file({"a": {"dtype": "F64", "shape": [1 << 40, 1 << 40, 1 << 40], "data_offsets": [0, 8]}},
                                b"\0" * 8), "data_offsets span 8"),
    "negative dim": (_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "invalid shape"),
    "reversed offsets": (_file({"a": {"dtype": "U8", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8),
                         "begin must be <= end"),
    "unknown dtype": (_file({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
                      "unknown dtype 'F99'"),
    "duplicate names": (_file(b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                              b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"\0\0"),
                        "duplicate key"),
    "metadata not strings": (_file({"__metadata__": {"a": 1}}), "__metadata__ must map strings"),
    "trailing bytes": (_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0\0\0"),
                       "cover 1 bytes of data but the file holds 3"),
    "deep json": (_file(b"{" + b'"a":[' * 100000 + b"]" * 100000 + b"}"), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_safetensors_headers_raise_without_big_allocation(tmp_path, case):
    data, message = HOSTILE[case]
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ckpt.CorruptCheckpointError) as info:
            ckpt.Reader(path, format="safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert peak < 64 * 1024 * 1024, peak


def test_smallest_legal_safetensors_files_parse(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(_file(b"{}      "))
    assert ckpt.Reader(tmp_path / "empty.safetensors").keys() == []
    (tmp_path / "one.safetensors").write_bytes(
        _file({"a": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}, "e": {"dtype": "F32", "shape": [0],
               "data_offsets": [1, 1]}}, b"\x07"))
    with ckpt.Reader(tmp_path / "one.safetensors") as r:
        assert r["a"] == 7 and r["e"].shape == (0,)


def test_safetensors_fuzz_smoke(tmp_path):
    rng = np.random.default_rng(0)
    st.write(tmp_path / "good.safetensors", SAMPLE.items(), sync=False)
    good = (tmp_path / "good.safetensors").read_bytes()
    path = tmp_path / "fuzz.safetensors"
    for _ in range(200):
        data = bytearray(good)
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[: rng.integers(0, len(data))]
        path.write_bytes(bytes(data))
        try:
            with ckpt.Reader(path, format="safetensors") as r:
                for name in r.keys():
                    r[name]
        except ckpt.CheckpointError:
            pass


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path):
    with pytest.raises(ckpt.errors.DTypeNotSupportedError, match="safetensors has no string type"):
        st.write(tmp_path / "s.safetensors", [("ok", np.ones(2)), ("s", np.array([b"a"], dtype=object))])
    with pytest.raises(ckpt.errors.DTypeNotSupportedError, match="reserved"):
        st.write(tmp_path / "s.safetensors", [("__metadata__", np.ones(2))])
    assert sorted(os.listdir(tmp_path)) == []  # nothing left behind, not even staging files


def test_sharded_safetensors_follow_hugging_face_conventions(tmp_path):
    tensors = {f"layer{i}/w": np.full((250,), i, dtype=np.float32) for i in range(7)}  # 1000 bytes each
    tensors["big"] = np.zeros(1000, dtype=np.float32)  # larger than a shard: gets one of its own
    files = st.write(tmp_path / "model.safetensors", tensors.items(), shard_size=2500, sync=False)
    names = [f.name for f in files]
    assert names[-1] == "model.safetensors.index.json"
    assert names[:-1] == [f"model-{i:05d}-of-00005.safetensors" for i in range(1, 6)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    # The index semantics Hugging Face loaders rely on, exactly:
    assert set(index) == {"metadata", "weight_map"}
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    for name, filename in index["weight_map"].items():
        assert (tmp_path / filename).is_file()
        with st.open(tmp_path / filename) as shard:
            assert name in shard.keys()
    for filename in set(index["weight_map"].values()):
        size = sum(tensors[n].nbytes for n, f in index["weight_map"].items() if f == filename)
        assert size <= 2500 or filename == index["weight_map"]["big"]
    # ckpt reads it back from the index, the directory, or the base name.
    for where in (tmp_path / "model.safetensors.index.json", tmp_path, tmp_path / "model.safetensors"):
        with ckpt.Reader(where) as r:
            assert r.keys() == sorted(tensors)
            assert_same(r["layer3/w"], tensors["layer3/w"])
            assert r.info("big").shard == index["weight_map"]["big"]


def test_sharded_safetensors_load_with_huggingface_hub(tmp_path):
    serialization = pytest.importorskip("huggingface_hub.serialization")
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    result = ckpt.convert(tmp_path / "net.pt", tmp_path / "hf" / "model.safetensors", shard_size="3KB")
    assert result.destination.name == "model.safetensors.index.json" and len(result.files) > 2
    fresh = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    report = serialization.load_torch_model(fresh, tmp_path / "hf", strict=True)
    assert not report.missing_keys and not report.unexpected_keys
    for name, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value)


def test_sharded_index_problems_are_reported(tmp_path):
    st.write(tmp_path / "model.safetensors", [("a", np.ones(4)), ("b", np.ones(4))], shard_size=40, sync=False)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    bad = dict(index, weight_map={"a": "../escape.safetensors"})
    index_path.write_text(json.dumps(bad))
    with pytest.raises(ckpt.CorruptCheckpointError, match="relative"):
        ckpt.Reader(index_path)
    bad = dict(index, weight_map={"a": index["weight_map"]["b"]})  # a is not in b's file
    index_path.write_text(json.dumps(bad))
    with pytest.raises(ckpt.CorruptCheckpointError, match="does not hold it"):
        ckpt.Reader(index_path)
    os.unlink(tmp_path / index["weight_map"]["b"])
    index_path.write_text(json.dumps(index))
    with pytest.raises(ckpt.CorruptCheckpointError, match="missing"):
        ckpt.Reader(index_path)


# ============================================================================================= PyTorch


def test_torch_files_read_through_weights_only(tmp_path):
    import torch

    state = {"fc.weight": torch.randn(3, 2), "fc.bias": torch.zeros(3, dtype=torch.bfloat16),
             "nested": {"steps": torch.tensor(5), "lr": 0.1, "name": "adam"}}
    torch.save(state, tmp_path / "m.pt")
    with ckpt.Reader(tmp_path / "m.pt") as r:
        assert r.format == "torch"
        assert r.keys() == ["fc.bias", "fc.weight", "nested/lr", "nested/steps"]
        assert r.source.skipped == ["nested/name"]
        assert r.info("fc.bias").dtype == "bfloat16"
        np.testing.assert_array_equal(r["fc.weight"], state["fc.weight"].numpy())
        assert r["nested/lr"] == 0.1


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["torch.save", "plain pickle"])
def test_pickle_that_would_run_code_is_refused(tmp_path, kind, capsys):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if kind == "torch.save":
        torch.save({"w": torch.zeros(2), "payload": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": _Evil(marker)}, protocol=2))
    with pytest.raises(ckpt.UnsupportedError) as info:
        ckpt.Reader(path)
    message = str(info.value)
    assert str(path) in message and "would run code" in message and "weights_only" in message
    assert not marker.exists()
    from ckpt.cli.main import main

    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "refusing to unpickle it" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_torch_writer_output_loads_with_weights_only(tmp_path):
    import torch

    path = tmp_path / "out.pt"
    formats.get("torch").write(path, SAMPLE.items(), sync=False)
    loaded = torch.load(path, weights_only=True)
    assert type(loaded) is dict and sorted(loaded) == sorted(SAMPLE)
    from ckpt.adapters.torch import to_numpy

    for name, value in SAMPLE.items():
        assert_same(to_numpy(loaded[name]), value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]  # the spill file is gone


# ============================================================================================= NumPy .npz


def test_npz_read_write_and_object_arrays_refused(tmp_path):
    values = {k: v for k, v in SAMPLE.items() if k != "bf"}
    formats.get("numpy").write(tmp_path / "a.npz", values.items(), sync=False)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        for name, value in values.items():
            assert_same(npz[name], value)
    with ckpt.Reader(tmp_path / "a.npz") as r:
        assert r.keys() == sorted(values) and r.info("emb/table").shape == (3, 4)
        assert_same(r["w64"], values["w64"])
    np.savez(tmp_path / "obj.npz", ok=np.ones(2), bad=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ckpt.UnsupportedError, match="allow_pickle=False"):
        ckpt.Reader(tmp_path / "obj.npz")
    with pytest.raises(ckpt.errors.DTypeNotSupportedError, match="cannot store bfloat16"):
        formats.get("numpy").write(tmp_path / "b.npz", [("bf", SAMPLE["bf"])])
    assert not (tmp_path / "b.npz").exists()


def test_corrupt_npz_member_is_a_ckpt_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY garbage")
    with pytest.raises(ckpt.CorruptCheckpointError, match="not a valid .npy"):
        ckpt.Reader(tmp_path / "x.npz", format="numpy")


# ============================================================================================= Keras .weights.h5


def test_keras_weights_h5_raw_and_clean_names(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.weights.h5"
    kernel, bias = np.arange(8, dtype=np.float32).reshape(2, 4), np.ones(4, np.float32)
    with h5py.File(path, "w") as f:  # the layout Keras 3's save_weights writes
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "hidden"
        g.create_dataset("0", data=kernel)
        g.create_dataset("1", data=bias)
        o = f.create_group("optimizer/vars")
        o.attrs["name"] = "adam"
        o.create_dataset("0", data=np.int64(3))
    assert formats.detect(path) == "keras"
    with ckpt.Reader(path) as r:
        assert r.keys() == ["layers/dense/vars/0", "layers/dense/vars/1", "optimizer/vars/0"]
    with ckpt.Reader(path, names="clean") as r:
        assert r.keys() == ["layers/hidden/0", "layers/hidden/1", "optimizer/0"]
        assert_same(r["layers/hidden/0"], kernel)
        assert r.raw_name("layers/hidden/1") == "layers/dense/vars/1"


# ============================================================================================= TF2 clean names


TF2_CLEAN = ["model/alpha", "model/config/scale/x", "model/layer/bias", "model/layer/kernel", "model/layers/0/bias",
             "model/layers/0/kernel", "model/steps", "model/vocab", "optimizer/beta1_power", "optimizer/beta2_power",
             "optimizer/model/alpha/m", "optimizer/model/alpha/v", "optimizer/model/layer/bias/m",
             "optimizer/model/layer/bias/v", "optimizer/model/layer/kernel/m", "optimizer/model/layer/kernel/v",
             "save_counter"]


def test_tf2_object_graph_gives_clean_names():
    with ckpt.Reader(DATA / "tf2_checkpoint", names="clean") as clean, ckpt.Reader(DATA / "tf2_checkpoint") as raw:
        assert clean.keys() == TF2_CLEAN
        assert "_CHECKPOINTABLE_OBJECT_GRAPH" in raw.keys()  # raw stays the default and unchanged
        assert clean.raw_name("optimizer/model/layer/kernel/m") == \
            "model/layer/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
        assert clean.raw_name("model/config/scale/x") == "model/config/scale.Sx/.ATTRIBUTES/VARIABLE_VALUE"
        for name in clean.keys():
            assert_same(clean[name], raw[clean.raw_name(name)])
        assert "model/layer/kernel" in clean and "model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE" not in clean
        assert clean.entry("model/layer/kernel").name == "model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def test_clean_names_without_object_graph_are_the_raw_names():
    with ckpt.Reader(DATA / "tf1_adam", names="clean") as clean, ckpt.Reader(DATA / "tf1_adam") as raw:
        assert clean.keys() == raw.keys()
    with pytest.raises(ValueError, match="names must be one of"):
        ckpt.Reader(DATA / "tf1_adam", names="pretty")


def test_clean_name_collisions_keep_raw_keys():
    from ckpt.tf.object_graph import clean_names
    from ckpt.tf.protos import trackable_object_graph_pb2 as pb

    graph = pb.TrackableObjectGraph()
    root, a, b = graph.nodes.add(), graph.nodes.add(), graph.nodes.add()
    root.children.add(node_id=1, local_name="x/y")
    root.children.add(node_id=2, local_name="x")
    b.children.add(node_id=3, local_name="y")
    c = graph.nodes.add()
    a.attributes.add(name="VARIABLE_VALUE", checkpoint_key="x.Sy/.ATTRIBUTES/VARIABLE_VALUE")
    c.attributes.add(name="VARIABLE_VALUE", checkpoint_key="x/y/.ATTRIBUTES/VARIABLE_VALUE")
    mapping = clean_names(graph.SerializeToString())
    assert mapping == {}  # both would be "x/y": both stay raw
    with pytest.raises(ckpt.CorruptCheckpointError, match="malformed _CHECKPOINTABLE_OBJECT_GRAPH"):
        clean_names(b"\xff\xff\xff")


def test_restore_by_clean_names_into_numpy(tmp_path):
    state = {"kernel": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    ckpt.restore(DATA / "tf2_checkpoint", state, names="clean",
                 map=[(r"^model/layer/(kernel|bias)$", r"\1"), (r".*", "")])
    with ckpt.Reader(DATA / "tf2_checkpoint") as raw:
        assert_same(state["kernel"], raw["model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE"])


def test_reader_interface_is_the_same_on_every_format(tmp_path):
    values = {"a/w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(3, dtype=np.int64)}
    paths = {"tensorflow": tmp_path / "tf" / "m", "safetensors": tmp_path / "m.safetensors",
             "torch": tmp_path / "m.pt", "numpy": tmp_path / "m.npz"}
    for fmt, path in paths.items():
        formats.get(fmt).write(path, values.items(), sync=False)
        with ckpt.Reader(path) as r:
            assert isinstance(r, ckpt.Reader) and r.format == fmt
            assert r.keys() == ["a/w", "b"] and len(r) == 2 and "a/w" in r and "zz" not in r
            assert r.shapes() == {"a/w": (2, 3), "b": ()}
            assert r.dtypes() == {"a/w": np.dtype(np.float32), "b": np.dtype(np.int64)}
            assert r.info("a/w").nbytes == 24 and r.info("a/w").dtype == "float32"
            assert_same(r["a/w"], values["a/w"])
            assert r.get("zz", 5) == 5
            assert isinstance(r.path, Path)
            with pytest.raises(ckpt.CheckpointNotFoundError, match="did you mean 'a/w'"):
                r["a/x"]


# ============================================================================================= ckpt inspect


def test_inspect_every_format_with_scopes(tmp_path, capsys):
    from ckpt.cli.main import main

    values = {"model/enc/w": np.zeros((4, 4), np.float32), "model/enc/b": np.zeros(4, np.float32),
              "model/dec/w": np.zeros((4, 2), np.float16), "optimizer/model/enc/w/m": np.zeros((4, 4), np.float32),
              "step": np.array(1, np.int64)}
    for fmt, path in {"safetensors": tmp_path / "m.safetensors", "torch": tmp_path / "m.pt",
                      "numpy": tmp_path / "m.npz", "tensorflow": tmp_path / "tf" / "m"}.items():
        formats.get(fmt).write(path, values.items(), sync=False)
        assert main(["inspect", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["format"] == fmt and doc["total"] == {"tensors": 5, "elements": 45, "bytes": 168}
        assert doc["scopes"] == [
            {"scope": "model", "tensors": 3, "parameters": 28, "bytes": 96, "dtypes": ["float16", "float32"]},
            {"scope": "optimizer", "tensors": 1, "parameters": 16, "bytes": 64, "dtypes": ["float32"]},
            {"scope": "step", "tensors": 1, "parameters": 1, "bytes": 8, "dtypes": ["int64"]}]
        assert main(["inspect", str(path), "--summary", "--depth", "2"]) == 0
        out = capsys.readouterr().out
        first = out.splitlines()[0]
        assert first == f"checkpoint: {path}" + ("" if fmt == "tensorflow" else f" ({fmt})")
        rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[3:] if line.strip()}
        assert rows["model/enc"] == ["2", "20", "80"] and rows["model/dec"] == ["1", "8", "16"]
        assert rows["optimizer/model"] == ["1", "16", "64"]
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--tensor", "model/enc/b"]) == 0
    assert "model/enc/b:\n[0. 0. 0. 0.]" in capsys.readouterr().out


def test_inspect_clean_names(capsys):
    from ckpt.cli.main import main

    assert main(["inspect", str(DATA / "tf2_checkpoint"), "--names", "clean", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in doc["tensors"]] == TF2_CLEAN
    assert [s["scope"] for s in doc["scopes"]] == ["optimizer", "model", "save_counter"]
