"""Compatibility with the real TensorFlow, in both directions and down to the byte.

* ours -> TF: checkpoints written by ``ckpt`` are read by ``tf.train.load_checkpoint``, restored by TF1's ``Saver``
  and found by ``tf.train.latest_checkpoint``, bit for bit.
* TF -> ours: checkpoints written by TF1's ``Saver`` (ref variables, Adam slots, sharded over two devices,
  partitioned variables), TF2's ``tf.train.Checkpoint`` and the raw ``SaveV2`` op, plus the golden files in
  ``tests/data``, read by ``ckpt.Reader`` exactly as TensorFlow reads them.
* Byte identity: for what TF1's Saver writes (sorted names, packed data, one shard) ckpt writes the very same
  ``.index`` and ``.data-00000-of-00001`` files.

TF1 graphs run in their own ``tf.Graph`` and ``Session``; eager mode stays on for the rest of the test run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402
import shutil  # noqa: E402

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402
from ckpt.tf.bundle import BundleWriter  # noqa: E402
from ckpt.tf.table import TableReader  # noqa: E402
from ckpt.reader import METADATA_KEY  # noqa: E402

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.tf

DATA = pathlib.Path(__file__).parent / "data"

# Every numeric dtype ckpt infers from NumPy, and that TensorFlow can hold.
POD_DTYPES = [
    np.float16, np.float32, np.float64, ml_dtypes.bfloat16,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.bool_, np.complex64, np.complex128,
    ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
]
SHAPES = {"scalar": (), "empty": (0, 3), "vector": (7,), "multi": (2, 3, 4)}

# Strings TF must see exactly: empty, non-ASCII, NUL and 0xff bytes, and one long enough for a 2-byte varint length.
SPECIAL_STRINGS = ["", "héllo wörld ✓", b"\x00", b"\xff\x00\xff", b"a\x00b", "x" * 300, b"\xc3\x28"]


# ================================================================================================== helpers


def _dtype_id(dtype) -> str:
    return np.dtype(dtype).name


def random_array(dtype, shape, rng: np.random.Generator) -> np.ndarray:
    """Random *bit patterns* of ``dtype`` (NaNs with payloads, subnormals, -0 ...), so any re-encoding shows."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=count * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def string_array(values, shape=None) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out.reshape(shape if shape is not None else (len(values),))


def as_stored(value) -> np.ndarray:
    """What a value saved by ckpt must read back as in TensorFlow: str becomes UTF-8 bytes."""
    array = np.asarray(value, dtype=object) if isinstance(value, (str, bytes)) else np.asarray(value)
    if array.dtype.kind in "OSU":
        flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
        return string_array(flat, array.shape)
    return array


def assert_bit_identical(ours, theirs, name: str = "") -> None:
    """Same dtype, same shape, same bits (NaN payloads and bfloat16 included); strings as exact bytes."""
    if isinstance(theirs, bytes):  # TF returns string scalars as bare bytes
        theirs = np.array(theirs, dtype=object)
    if isinstance(ours, bytes):
        ours = np.array(ours, dtype=object)
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} != {theirs.dtype}"
    if ours.dtype == object:
        a, b = ours.reshape(-1).tolist(), theirs.reshape(-1).tolist()
        assert all(type(v) is bytes for v in a + b), f"{name}: string elements must be bytes"
        assert a == b, f"{name}: string values differ"
        return
    if ours.dtype == ml_dtypes.bfloat16:
        assert np.array_equal(ours.view(np.uint16), theirs.view(np.uint16)), f"{name}: bfloat16 bits differ"
    assert np.ascontiguousarray(ours).tobytes() == np.ascontiguousarray(theirs).tobytes(), f"{name}: bits differ"


def assert_tf_reads(prefix, expected: dict) -> None:
    """``tf.train.load_checkpoint(prefix)`` lists exactly ``expected`` and returns each tensor bit-identically."""
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    if METADATA_KEY in shapes:  # ckpt's own record (tree structure, user metadata): an ordinary string scalar to TF
        assert shapes.pop(METADATA_KEY) == [] and dtypes[METADATA_KEY] == tf.string
        assert isinstance(reader.get_tensor(METADATA_KEY), bytes)
    assert set(shapes) == set(expected)
    for name, value in expected.items():
        want = as_stored(value)
        assert tuple(shapes[name]) == want.shape, name
        assert np.dtype(dtypes[name].as_numpy_dtype) == want.dtype, name
        assert_bit_identical(want, reader.get_tensor(name), name)


def assert_ours_matches_tf(prefix) -> list[str]:
    """``ckpt.Reader`` sees the same keys, shapes, dtypes and bits as ``tf.train.load_checkpoint``."""
    prefix = str(prefix)
    theirs = tf.train.load_checkpoint(prefix)
    tf_shapes = theirs.get_variable_to_shape_map()
    tf_shapes.pop(METADATA_KEY, None)  # ckpt's own record, hidden by ckpt.Reader
    tf_dtypes = theirs.get_variable_to_dtype_map()
    with ckpt.Reader(prefix) as reader:
        keys = reader.keys()
        assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
        assert set(keys) == set(tf_shapes)
        assert len(reader) == len(tf_shapes)
        assert reader.shapes() == {k: tuple(v) for k, v in tf_shapes.items()}
        our_dtypes = reader.dtypes()
        for name in keys:
            assert np.dtype(our_dtypes[name]) == np.dtype(tf_dtypes[name].as_numpy_dtype), name
            assert name in reader
            assert_bit_identical(reader[name], theirs.get_tensor(name), name)
    return keys


def flat_names(tree: dict, scope: str = "") -> dict[str, np.ndarray]:
    """``{"layer": {"w": w}}`` -> ``{"layer/w": w}``: the variable names TF1 would use."""
    out = {}
    for key, value in tree.items():
        name = f"{scope}/{key}" if scope else key
        out.update(flat_names(value, name) if isinstance(value, dict) else {name: value})
    return out


def read_files(prefix) -> tuple[bytes, bytes]:
    prefix = str(prefix)
    with open(prefix + ".index", "rb") as f:
        index = f.read()
    with open(prefix + ".data-00000-of-00001", "rb") as f:
        data = f.read()
    return index, data


def num_index_blocks(prefix) -> int:
    with open(f"{prefix}.index", "rb") as f:
        return TableReader(f.read()).num_blocks


def tf1_saver_save(variables: dict[str, np.ndarray], prefix) -> None:
    """Save ``variables`` as TF1 ref variables with ``tf.compat.v1.train.Saver`` (no meta graph, no state file)."""
    g = tf.Graph()
    with g.as_default():
        var_list = [tf.compat.v1.Variable(value, name=name, use_resource=False) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(var_list)
        init = tf.compat.v1.global_variables_initializer()
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(init)
            saver.save(sess, str(prefix), write_meta_graph=False, write_state=False)


# ================================================================================================== ours -> TF


@pytest.mark.parametrize("dtype", POD_DTYPES, ids=_dtype_id)
def test_tf_reads_every_dtype_and_shape_bit_identically(tmp_path, dtype):
    rng = np.random.default_rng(POD_DTYPES.index(dtype))
    state = {f"{kind}": random_array(dtype, shape, rng) for kind, shape in SHAPES.items()}
    if np.dtype(dtype).kind in "fc" or dtype is ml_dtypes.bfloat16:
        special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.5]).astype(dtype)
        state["special"] = special
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        state["limits"] = np.array([info.min, info.max, 0, 1], dtype=dtype)
    state["transposed"] = random_array(dtype, (3, 5), rng).T  # not C-contiguous: must be saved in C order

    prefix = ckpt.save(state, tmp_path / "model.ckpt")

    assert_tf_reads(prefix, state)
    assert tf.train.load_checkpoint(prefix).get_tensor("transposed").shape == (5, 3)


def test_tf_reads_strings_exactly(tmp_path):
    state = {
        "scalar_str": "héllo",
        "scalar_bytes": b"\xff\x00raw",
        "scalar_empty": "",
        "vector": string_array(SPECIAL_STRINGS),
        "matrix": string_array([f"r{i}c{j}-é".encode() if (i + j) % 2 else b"\x00" * j for i in range(3)
                                for j in range(4)], (3, 4)),
        "empty_2d": np.empty((0, 3), dtype=object),
        "one_empty": string_array([""]),
        "unicode_array": np.array(["a", "é", "日本語", ""]),  # NumPy 'U' arrays are stored as UTF-8
    }

    prefix = ckpt.save(state, tmp_path / "strings")

    assert_tf_reads(prefix, state)
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor("scalar_str") == "héllo".encode("utf-8")
    assert reader.get_tensor("vector")[5] == b"x" * 300
    assert list(reader.get_tensor("unicode_array")) == [b"a", "é".encode(), "日本語".encode(), b""]


def test_tf_reads_python_scalars_and_nested_names(tmp_path):
    state = {"layer": {"w": np.ones((2, 2), np.float32), "b": [np.float32(1), np.float32(2)]},
             "lr": 0.25, "step": 7, "flag": True, "cplx": 1 - 2j, "tag": "v1"}

    prefix = ckpt.save(state, tmp_path / "scalars")

    assert_tf_reads(prefix, {
        "layer/w": np.ones((2, 2), np.float32), "layer/b/0": np.float32(1), "layer/b/1": np.float32(2),
        "lr": np.float64(0.25), "step": np.int64(7), "flag": np.bool_(True), "cplx": np.complex128(1 - 2j),
        "tag": np.array(b"v1", dtype=object)})


def test_tf_reads_10k_keys_spanning_several_index_blocks(tmp_path):
    rng = np.random.default_rng(10_000)
    dtypes = [np.float32, np.int64, np.float16, ml_dtypes.bfloat16, np.uint8]
    state = {}
    for i in range(10_000):
        name = f"tower_{i % 13}/layer_{i:05d}/{'kernel' if i % 3 else 'bias'}_{(i * 7919) % 10007}"
        state[name] = random_array(dtypes[i % len(dtypes)], (i % 4 + 1,), rng)
    state["vocab"] = string_array([f"w{i}" for i in range(50)])

    prefix = ckpt.save(state, tmp_path / "big", sync=False)

    assert num_index_blocks(prefix) >= 2
    assert_tf_reads(prefix, state)


def test_tf_reads_several_data_shards(tmp_path):
    rng = np.random.default_rng(3)
    state = {f"v{i:02d}": random_array([np.float32, np.int32, np.float64][i % 3], (i + 1, 3), rng)
             for i in range(12)}
    state["names"] = string_array(["a", "", "\x00"])

    prefix = ckpt.save(state, tmp_path / "sharded", num_shards=3)

    data_files = sorted(p.name for p in tmp_path.glob("sharded.data-*"))
    assert data_files == [f"sharded.data-0000{i}-of-00003" for i in range(3)]
    with ckpt.Reader(prefix) as reader:
        assert {reader.entry(k).shard for k in reader.keys()} == {0, 1, 2}
    assert_tf_reads(prefix, state)


@pytest.mark.parametrize("num_shards", [1, 2])
def test_tf_assembles_partitioned_tensors(tmp_path, num_shards):
    rng = np.random.default_rng(num_shards)
    rows = random_array(np.float32, (7, 4), rng)
    cols = random_array(np.int64, (3, 10), rng)
    vec = random_array(ml_dtypes.bfloat16, (9,), rng)
    plain = random_array(np.float64, (2, 2), rng)
    long = random_array(np.float32, (9000, 1), rng)  # starts and lengths >= 64 take multi-byte slice-key numbers

    prefix = str(tmp_path / "parts")
    writer = BundleWriter(prefix, num_shards=num_shards)
    # Partitioned along axis 0, slices added out of order, full second dimension written as -1 and explicitly.
    writer.add_slice("part/rows", (7, 4), [(3, 2), (0, -1)], rows[3:5])
    writer.add_slice("part/rows", (7, 4), [(0, 3), (0, 4)], rows[0:3])
    writer.add_slice("part/rows", (7, 4), [(5, 2), (0, -1)], rows[5:7])
    # Partitioned along axis 1.
    writer.add_slice("part/cols", (3, 10), [(0, -1), (0, 6)], cols[:, :6])
    writer.add_slice("part/cols", (3, 10), [(0, -1), (6, 4)], cols[:, 6:])
    writer.add_slice("vec", (9,), [(0, 4)], vec[:4])
    writer.add_slice("vec", (9,), [(4, 5)], vec[4:])
    writer.add_slice("nul\x00name", (9,), [(0, 5)], vec[:5])  # a NUL in the name is escaped in slice keys
    writer.add_slice("nul\x00name", (9,), [(5, 4)], vec[5:])
    for start, length in [(8000, 1000), (0, 70), (70, 7930)]:
        writer.add_slice("päth/long", (9000, 1), [(start, length), (0, 1)], long[start:start + length])
    writer.add("plain", plain)
    writer.finish()

    # (No string slices: TensorFlow itself cannot assemble partitioned DT_STRING tensors.)
    assert_tf_reads(prefix, {"part/rows": rows, "part/cols": cols, "vec": vec, "plain": plain, "nul\x00name": vec,
                             "päth/long": long})
    assert_ours_matches_tf(prefix)


def test_tf1_saver_restores_ckpt_values_into_variables(tmp_path):
    rng = np.random.default_rng(7)
    w = random_array(np.float32, (3, 4), rng)
    b = np.array([0.5, -1.25, 3.0, 1e-30], np.float32)
    emb = random_array(ml_dtypes.bfloat16, (5, 2), rng)
    step = np.int64(42)
    vocab = string_array(["<pad>", "héllo", "\x00"])
    ckpt.save({"layer": {"w": w, "b": b}, "embedding": {"table": emb}, "global_step": step,
                        "vocab": vocab, "unused": np.float32(9)}, tmp_path / "model.ckpt", step=5)

    g = tf.Graph()
    with g.as_default():
        with tf.compat.v1.variable_scope("layer"):
            v_w = tf.compat.v1.get_variable("w", shape=(3, 4), dtype=tf.float32)
            v_b = tf.compat.v1.get_variable("b", shape=(4,), dtype=tf.float32, use_resource=False)
        v_emb = tf.compat.v1.get_variable("embedding/table", shape=(5, 2), dtype=tf.bfloat16)
        v_step = tf.compat.v1.Variable(np.int64(0), name="global_step", use_resource=False)
        v_vocab = tf.compat.v1.Variable(string_array(["", "", ""]), name="vocab", use_resource=False)
        assert v_w.op.name == "layer/w" and v_b.op.name == "layer/b"
        saver = tf.compat.v1.train.Saver([v_w, v_b, v_emb, v_step, v_vocab])
        with tf.compat.v1.Session(graph=g) as sess:
            saver.restore(sess, tf.train.latest_checkpoint(str(tmp_path)))
            got = sess.run({"w": v_w, "b": v_b, "emb": v_emb, "step": v_step, "vocab": v_vocab})

    assert_bit_identical(w, got["w"], "layer/w")
    assert_bit_identical(b, got["b"], "layer/b")
    assert_bit_identical(emb, got["emb"], "embedding/table")
    assert_bit_identical(step, got["step"], "global_step")
    assert_bit_identical(as_stored(vocab), got["vocab"], "vocab")


def test_tf_latest_checkpoint_finds_ckpt_saves(tmp_path):
    directory = tmp_path / "run"
    prefixes = [ckpt.save({"step": np.int64(s)}, directory / "model.ckpt", step=s) for s in (1, 2, 10)]

    assert tf.train.latest_checkpoint(str(directory)) == prefixes[-1]
    assert ckpt.latest(directory) == prefixes[-1]
    state = tf.train.get_checkpoint_state(str(directory))
    assert list(state.all_model_checkpoint_paths) == prefixes
    assert tf.train.load_checkpoint(str(directory)).get_tensor("step") == 10

    # The state file holds relative paths: the run directory can be moved and TF still finds the checkpoint.
    assert str(tmp_path) not in (directory / "checkpoint").read_text()
    moved = shutil.move(str(directory), str(tmp_path / "moved"))
    assert tf.train.latest_checkpoint(moved) == os.path.join(moved, "model.ckpt-10")


# ================================================================================================== TF -> ours


def test_reader_matches_tf1_saver_with_adam_slots(tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = tf.constant(np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1))
        y = 3 * x + 0.5
        with tf.compat.v1.variable_scope("dense"):
            w = tf.compat.v1.get_variable("kernel", initializer=np.full((1, 1), 0.1, np.float32),
                                          use_resource=False)
            b = tf.compat.v1.get_variable("bias", initializer=np.zeros((1,), np.float32), use_resource=False)
        tf.compat.v1.Variable(string_array(["a", "", "\xff"]), name="vocab", trainable=False, use_resource=False)
        tf.compat.v1.Variable(np.arange(6, dtype=np.int32).reshape(2, 3), name="counts", trainable=False,
                              use_resource=False)
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
        train = tf.compat.v1.train.AdamOptimizer(0.1).minimize(loss, global_step=step)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train)
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=step, write_meta_graph=False)
            kernel = sess.run(w)

    keys = assert_ours_matches_tf(prefix)

    assert {"dense/kernel/Adam", "dense/kernel/Adam_1", "dense/bias/Adam", "beta1_power", "beta2_power",
            "global_step", "vocab", "counts"} <= set(keys)
    assert prefix.endswith("model.ckpt-3")
    assert ckpt.latest(tmp_path) == tf.train.latest_checkpoint(str(tmp_path)) == prefix
    assert_bit_identical(ckpt.Reader(tmp_path)["dense/kernel"], kernel)
    assert ckpt.load(prefix, flat=True)["global_step"] == 3


def test_reader_matches_tf1_sharded_saver_on_two_devices(tmp_path):
    g = tf.Graph()
    with g.as_default():
        with tf.device("/cpu:0"):
            tf.compat.v1.Variable(np.arange(3, dtype=np.float32), name="dev0/a", use_resource=False)
            tf.compat.v1.Variable(string_array(["ab", "", "é\x00"]), name="dev0/strings", use_resource=False)
        with tf.device("/cpu:1"):
            tf.compat.v1.Variable(np.float64(2.5), name="dev1/c", use_resource=False)
            tf.compat.v1.get_variable("dev1/part", shape=(5, 3), partitioner=tf.compat.v1.fixed_size_partitioner(2),
                                      use_resource=False)
        saver = tf.compat.v1.train.Saver(sharded=True)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=g, config=config) as sess:
            assert len([d for d in sess.list_devices() if d.device_type == "CPU"]) == 2
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"), write_meta_graph=False)

    assert sorted(p.name for p in tmp_path.glob("model.ckpt.data-*")) == \
        ["model.ckpt.data-00000-of-00002", "model.ckpt.data-00001-of-00002"]
    keys = assert_ours_matches_tf(prefix)
    assert keys == ["dev0/a", "dev0/strings", "dev1/c", "dev1/part"]
    with ckpt.Reader(prefix) as reader:
        assert {reader.entry(k).shard for k in ("dev0/a", "dev1/c")} == {0, 1}


def test_reader_matches_tf1_partitioned_variables(tmp_path):
    g = tf.Graph()
    with g.as_default():
        init = tf.compat.v1.random_normal_initializer(seed=1)
        emb = tf.compat.v1.get_variable("emb/table", shape=(10, 4), initializer=init, use_resource=False,
                                        partitioner=tf.compat.v1.fixed_size_partitioner(3))
        tf.compat.v1.get_variable("wide", shape=(2, 9), dtype=tf.int32, initializer=tf.compat.v1.ones_initializer(),
                                  partitioner=tf.compat.v1.fixed_size_partitioner(3, axis=1))
        tf.compat.v1.get_variable("dense", shape=(3,), initializer=init)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            full_emb = sess.run(tf.concat(list(emb), axis=0))
            prefix = saver.save(sess, str(tmp_path / "parts.ckpt"), write_meta_graph=False)

    keys = assert_ours_matches_tf(prefix)
    assert keys == ["dense", "emb/table", "wide"]
    with ckpt.Reader(prefix) as reader:
        assert len(reader.entry("emb/table").slices) == 3
        assert len(reader.entry("wide").slices) == 3
        assert_bit_identical(reader["emb/table"], full_emb)


class _Model(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(2)
        self.kernel = tf.Variable(random_array(np.float32, (3, 4), rng))
        self.bias = tf.Variable(random_array(np.float64, (4,), rng))
        self.half = tf.Variable(random_array(np.float16, (2, 2), rng))
        self.bf16 = tf.Variable(random_array(ml_dtypes.bfloat16, (5,), rng))
        self.count = tf.Variable(np.int64(-7))
        self.ids = tf.Variable(np.arange(6, dtype=np.int32).reshape(3, 2))
        self.mask = tf.Variable(np.array([True, False, True]))
        self.phase = tf.Variable(np.array([1 + 2j, -0.5j], np.complex64))
        self.empty = tf.Variable(np.zeros((0, 3), np.float32))
        self.vocab = tf.Variable(string_array(["<pad>", "", "héllo", "\x00\xff"]))
        self.layers = [tf.Variable(np.uint8(200)), {"scale/x": tf.Variable(np.float32(0.5))}]


def test_reader_matches_tf2_checkpoint_save_and_write(tmp_path):
    model = _Model()
    written = tf.train.Checkpoint(model=model).write(str(tmp_path / "write" / "weights"))
    saved = tf.train.Checkpoint(model=model).save(str(tmp_path / "save" / "ckpt"))

    for prefix in (saved, written):
        keys = assert_ours_matches_tf(prefix)
        assert "_CHECKPOINTABLE_OBJECT_GRAPH" in keys
        assert "model/vocab/.ATTRIBUTES/VARIABLE_VALUE" in keys
        assert "model/layers/1/scale.Sx/.ATTRIBUTES/VARIABLE_VALUE" in keys
        assert_bit_identical(ckpt.Reader(prefix)["model/kernel/.ATTRIBUTES/VARIABLE_VALUE"], model.kernel.numpy())
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in ckpt.Reader(saved)
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" not in ckpt.Reader(written)
    assert ckpt.latest(tmp_path / "save") == tf.train.latest_checkpoint(str(tmp_path / "save")) == saved


def test_reader_matches_savev2_of_every_dtype(tmp_path):
    rng = np.random.default_rng(22)
    tensors = {}
    for dtype in POD_DTYPES:
        for kind, shape in SHAPES.items():
            tensors[f"{_dtype_id(dtype)}/{kind}"] = random_array(dtype, shape, rng)
    tensors["string/vector"] = string_array(SPECIAL_STRINGS)
    tensors["string/scalar"] = np.array(b"\xff", dtype=object)
    tensors["string/empty"] = np.empty((0, 3), dtype=object)
    tensors["string/multi"] = string_array([f"{i}" * i for i in range(6)], (2, 3))
    # Names not in sorted order: TF writes the data in call order, the index sorted.
    names = list(reversed(list(tensors)))
    prefix = str(tmp_path / "dtypes")

    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(as_stored(tensors[n])) for n in names])

    keys = assert_ours_matches_tf(prefix)
    assert set(keys) == set(tensors)
    with ckpt.Reader(prefix) as reader:
        for name, value in tensors.items():
            assert_bit_identical(reader[name], as_stored(value), name)


GOLDEN = ["tf1_saver/model.ckpt-30", "tf1_adam/model.ckpt-3", "tf1_sharded/model.ckpt", "dtypes/dtypes",
          "tf2_checkpoint/ckpt-3", "tf2_plain/weights"]


@pytest.mark.parametrize("name", GOLDEN)
def test_reader_matches_tf_on_golden_files(name):
    keys = assert_ours_matches_tf(DATA / name)
    assert keys


def test_golden_tf1_saver_values():
    alpha, beta = np.load(DATA / "tf1_saver" / "expected_values.npy")
    with ckpt.Reader(DATA / "tf1_saver" / "model.ckpt-30") as reader:
        assert reader.keys() == ["alpha", "beta", "global_step"]
        assert reader["alpha"] == alpha and reader["beta"] == beta
        assert reader["global_step"] == 30


# ================================================================================================== byte identity


BYTE_IDENTITY_SETS = {
    "multi_dtype": lambda rng: {
        "w": random_array(np.float32, (3, 5), rng),
        "b": random_array(np.float64, (5,), rng),
        "layer": {"h": random_array(np.float16, (2, 2, 2), rng), "bf": random_array(ml_dtypes.bfloat16, (4,), rng),
                  "deeper": {"k": random_array(np.float32, (2,), rng)}},
        "ids": random_array(np.int32, (6,), rng),
        "global_step": np.array(123456789, np.int64),  # 0-d arrays: scalars as TF holds them
        "i8": random_array(np.int8, (3,), rng), "i16": random_array(np.int16, (3,), rng),
        "u8": random_array(np.uint8, (4,), rng), "u16": random_array(np.uint16, (2,), rng),
        "u32": random_array(np.uint32, (2,), rng), "u64": random_array(np.uint64, (2,), rng),
        "mask": np.array([[True, False], [False, True]]),
        "c64": random_array(np.complex64, (2,), rng), "c128": np.array(3 - 4j, np.complex128),
        "empty": np.zeros((0, 3), np.float32),
        "Zeta": np.array(-0.0, np.float32),  # upper case sorts before lower case bytewise
    },
    "strings": lambda rng: {
        "vocab": string_array(SPECIAL_STRINGS),
        "scalar": np.array("héllo".encode(), dtype=object),
        "none": np.empty((0,), dtype=object),
        "grid": string_array([b"\x00" * i for i in range(6)], (3, 2)),
        "alpha": np.array(1.5, np.float32),
    },
}


@pytest.mark.parametrize("which", sorted(BYTE_IDENTITY_SETS))
def test_files_byte_identical_to_tf1_saver(tmp_path, which):
    values = BYTE_IDENTITY_SETS[which](np.random.default_rng(5))  # nested dicts of NumPy arrays
    tf1_saver_save(flat_names(values), tmp_path / "tf" / "model.ckpt")

    ckpt.save(values, tmp_path / "ours" / "model.ckpt")

    tf_index, tf_data = read_files(tmp_path / "tf" / "model.ckpt")
    our_index, our_data = read_files(tmp_path / "ours" / "model.ckpt")
    assert our_data == tf_data
    assert our_index == tf_index


def test_files_byte_identical_to_savev2_with_10k_tensors(tmp_path):
    rng = np.random.default_rng(10)
    dtypes = [np.float32, np.int64, ml_dtypes.bfloat16, np.float64, np.uint8]
    values = {f"net/block_{i % 17}/unit_{i:05d}/w{(i * 31) % 997}": random_array(dtypes[i % 5], (i % 3 + 1,), rng)
              for i in range(10_000)}
    values["vocab"] = string_array(["", "a", "é", "\x00"])
    names = sorted(values, key=lambda n: n.encode())
    tf_prefix = str(tmp_path / "tf")

    tf.raw_ops.SaveV2(prefix=tf_prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[as_stored(values[n]) for n in names])
    our_prefix = ckpt.save(values, tmp_path / "ours", sync=False)

    assert num_index_blocks(our_prefix) >= 2
    tf_index, tf_data = read_files(tf_prefix)
    our_index, our_data = read_files(our_prefix)
    assert our_data == tf_data
    assert our_index == tf_index
