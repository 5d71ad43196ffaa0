"""ckpt next to an old stack: TensorFlow 2.15 with its protobuf 4.x, ml_dtypes 0.3 and NumPy 1.x (`make compat`).

`make compat` installs that stack in .venv-compat and ckpt into it with --no-deps, so these tests run against the
old runtimes as a user of an old TensorFlow project has them. Files go both ways and must be bit-identical:
ckpt writes -> TensorFlow 2.15 reads, TensorFlow 2.15 writes -> ckpt reads. The main suite ignores this folder
(pyproject addopts), because its venv has the current stack.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import google.protobuf  # noqa: E402
import ml_dtypes  # noqa: E402

import ckpt  # noqa: E402

# Every numeric dtype both sides have on this stack (bfloat16 through ml_dtypes, which ckpt loads on use).
DTYPES = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]
SHAPES = [(), (0, 3), (7,), (2, 3, 4)]
STRINGS = np.array([b"", "héllo ✓".encode(), b"\x00\xff", b"x" * 300], dtype=object)


def _major(version: str) -> int:
    return int(version.split(".")[0])


def test_the_stack_is_the_old_one():
    # Guards the point of this file: if the venv drifted to a current stack, the proof would be about nothing.
    assert tf.__version__.startswith("2.15."), tf.__version__
    assert _major(google.protobuf.__version__) == 4, google.protobuf.__version__
    assert _major(np.__version__) == 1, np.__version__
    assert ml_dtypes.__version__.startswith("0.3."), ml_dtypes.__version__


def _bits(dtype, shape, seed: int) -> np.ndarray:
    """Random bit patterns (NaN payloads, subnormals, -0), so any re-encoding on either side shows."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape, dtype=np.int64))
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.integers(0, 256, size=count * dt.itemsize, dtype=np.uint8).view(dt).reshape(shape)


def _state() -> dict[str, np.ndarray]:
    state = {}
    for i, dtype in enumerate(DTYPES):
        for j, shape in enumerate(SHAPES):
            state[f"{np.dtype(dtype).name}/s{j}"] = _bits(dtype, shape, 10 * i + j)
    state["strings"] = STRINGS
    return state


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


@pytest.mark.parametrize("num_shards", [1, 3])
def test_ckpt_writes_tensorflow_215_reads(tmp_path, num_shards):
    state = _state()
    prefix = ckpt.save(state, str(tmp_path / "model.ckpt"), step=7, num_shards=num_shards)

    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix
    reader = tf.train.load_checkpoint(prefix)
    assert set(reader.get_variable_to_shape_map()) == set(state)
    for name, value in state.items():
        got = reader.get_tensor(name)
        assert _same(got, value), name

    # And the TF1 Saver restores it into graph variables, as old projects do.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        v = tf.compat.v1.get_variable("float32/s3", shape=(2, 3, 4), dtype=tf.float32)
        tf.compat.v1.train.Saver([v]).restore(sess, prefix)
        assert sess.run(v).tobytes() == state["float32/s3"].tobytes()


def test_tensorflow_215_writes_ckpt_reads(tmp_path):
    # TF2 object-based checkpoint (tf.train.Checkpoint) and a TF1 Saver checkpoint, both sharded by TF itself.
    values = {f"v_{np.dtype(d).name}": _bits(d, (3, 5), i) for i, d in enumerate(DTYPES)}
    variables = {k: tf.Variable(v) for k, v in values.items()}
    variables["strings"] = tf.Variable(STRINGS.astype(bytes))
    root = tf.train.Checkpoint(**variables)
    path = root.write(str(tmp_path / "tf2" / "ckpt"))

    reader = ckpt.Reader(path)
    for key, value in values.items():
        got = reader[f"{key}/.ATTRIBUTES/VARIABLE_VALUE"]
        assert _same(got, value), key
    assert reader["strings/.ATTRIBUTES/VARIABLE_VALUE"].tolist() == STRINGS.tolist()
    clean = ckpt.Reader(path, names="clean")
    assert _same(clean["v_bfloat16"], values["v_bfloat16"])

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf_vars = [tf.compat.v1.get_variable(k, initializer=v) for k, v in values.items()]
        sess.run(tf.compat.v1.global_variables_initializer())
        saver = tf.compat.v1.train.Saver(tf_vars, sharded=True)
        (tmp_path / "tf1").mkdir()
        prefix = saver.save(sess, str(tmp_path / "tf1" / "model.ckpt"), global_step=3)
    assert ckpt.latest(str(tmp_path / "tf1")) == prefix
    loaded = ckpt.load(prefix, flat=True)
    assert set(loaded) == set(values)
    for key, value in values.items():
        assert _same(loaded[key], value), key


def test_restore_into_numpy_state_from_tensorflow_215(tmp_path):
    # The round trip a user of both does: TF saves, ckpt restores in place, ckpt saves, TF reads.
    value = _bits(np.float32, (4, 4), 99)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        w = tf.compat.v1.get_variable("layer/kernel", initializer=value)
        sess.run(w.initializer)
        (tmp_path / "a").mkdir()
        prefix = tf.compat.v1.train.Saver([w]).save(sess, str(tmp_path / "a" / "m.ckpt"))
    state = {"layer": {"kernel": np.zeros((4, 4), np.float32)}}
    ckpt.restore(prefix, state)
    assert state["layer"]["kernel"].tobytes() == value.tobytes()
    again = ckpt.save(state, str(tmp_path / "b" / "m.ckpt"))
    assert tf.train.load_checkpoint(again).get_tensor("layer/kernel").tobytes() == value.tobytes()


def test_convert_to_safetensors_and_back_on_old_ml_dtypes(tmp_path):
    # ckpt's safetensors codec knows more narrow types than ml_dtypes 0.3 has; the ones it has still work.
    state = {"w": _bits(np.float32, (3, 4), 1), "b": _bits(ml_dtypes.bfloat16, (5,), 2)}
    prefix = ckpt.save(state, str(tmp_path / "m.ckpt"))
    ckpt.convert(prefix, str(tmp_path / "m.safetensors"))
    ckpt.convert(str(tmp_path / "m.safetensors"), str(tmp_path / "back" / "m.ckpt"))
    reader = tf.train.load_checkpoint(str(tmp_path / "back" / "m.ckpt"))
    for name, value in state.items():
        assert _same(reader.get_tensor(name), value), name
