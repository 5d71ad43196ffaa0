"""Format conversions proven against the real libraries: TensorFlow checkpoints to safetensors read by
``safetensors.torch``, ``torch.save`` files to bundles read by ``tf.train.load_checkpoint``, a TF2 Keras checkpoint
restored into the equivalent PyTorch model by clean names (``examples/tf2_to_torch.py``), and Keras
``.weights.h5`` files read with their layer names."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402
from ckpt.adapters.torch import to_numpy  # noqa: E402
from ckpt.cli.main import main  # noqa: E402

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.tf

EXAMPLE = Path(__file__).parent.parent / "examples" / "tf2_to_torch.py"


def load_example():
    spec = importlib.util.spec_from_file_location("tf2_to_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tf_checkpoint_to_safetensors_loads_in_safetensors_torch(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    module = tf.Module()
    module.dense = tf.Module()
    module.dense.kernel = tf.Variable(np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))
    module.dense.bias = tf.Variable(np.arange(3, dtype=np.float16))
    module.emb = tf.Variable(tf.constant([[1.5, -2.0]], dtype=tf.bfloat16))
    module.count = tf.Variable(np.int64(42))
    module.table = [tf.Variable(np.ones((2, 2), np.float64))]
    prefix = tf.train.Checkpoint(model=module).save(str(tmp_path / "tf" / "ckpt"))
    result = ckpt.convert(prefix, tmp_path / "model.safetensors", names="clean")
    loaded = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    assert set(loaded) == {"model/dense/kernel", "model/dense/bias", "model/emb", "model/count", "model/table/0",
                           "save_counter"}
    reader = tf.train.load_checkpoint(prefix)
    for name, tensor in loaded.items():
        raw = result.names[name]
        with ckpt.Reader(prefix, names="clean") as r:
            raw_key = r.raw_name(raw)
        want = reader.get_tensor(raw_key)
        got = to_numpy(tensor)
        assert got.dtype == np.asarray(want).dtype and got.shape == np.shape(want), name
        assert got.tobytes() == np.asarray(want).tobytes(), name
    # The raw names convert too (the object graph is left out), and diff says "all equal" either way.
    ckpt.convert(prefix, tmp_path / "raw.safetensors")
    assert main(["diff", prefix, str(tmp_path / "raw.safetensors")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "all equal: 6 tensors"
    assert main(["diff", prefix, str(tmp_path / "model.safetensors"), "--names", "clean"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "all equal: 6 tensors"


def test_torch_save_file_to_bundle_loads_in_tensorflow(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    state = dict(net.state_dict())
    state["half"] = torch.randn(3).half()
    state["bf"] = torch.randn(2, 2).to(torch.bfloat16)
    state["steps"] = torch.tensor([1, 2, 3])
    torch.save(state, tmp_path / "net.pt")
    result = ckpt.convert(tmp_path / "net.pt", tmp_path / "tf" / "net.ckpt", map=[(r"\.", "/")])
    assert result.format == "tensorflow" and result.verified
    reader = tf.train.load_checkpoint(str(tmp_path / "tf" / "net.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    assert set(shapes) == {name.replace(".", "/") for name in state}
    for name, tensor in state.items():
        got = reader.get_tensor(name.replace(".", "/"))
        want = to_numpy(tensor)
        assert np.asarray(got).dtype == want.dtype and np.asarray(got).tobytes() == want.tobytes(), name


def test_tf2_keras_checkpoint_restores_into_pytorch_by_clean_names(tmp_path):
    example = load_example()
    prefix, x, expected = example.train_and_save(tmp_path)
    with ckpt.Reader(prefix, names="clean") as r:
        names = r.keys()
    assert {"model/hidden/kernel", "model/hidden/bias", "model/head/kernel", "model/head/bias"} <= set(names)
    assert "optimizer/model/hidden/kernel/momentum" in names and "optimizer/model/head/bias/velocity" in names
    net = example.build_torch()
    example.restore_into_torch(prefix, net)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The same checkpoint as a readable safetensors file.
    result = example.to_safetensors(prefix, tmp_path / "model.safetensors")
    with ckpt.Reader(result.destination) as r:
        assert "model/hidden/kernel" in r.keys() and r.shapes()["model/hidden/kernel"] == (4, 8)
    # A wrong name map is reported before anything is assigned.
    bad = example.build_torch()
    before = {k: v.clone() for k, v in bad.state_dict().items()}
    example.RULES.insert(0, (r"^model/hidden/bias$", "nowhere"))
    try:
        with pytest.raises(ckpt.errors.StateMismatchError, match="nowhere"):
            example.restore_into_torch(prefix, bad)
    finally:
        example.RULES.pop(0)
    assert all(torch.equal(before[k], v) for k, v in bad.state_dict().items())


def test_keras_weights_h5_read_with_layer_names(tmp_path):
    pytest.importorskip("h5py")
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(2, name="out")])
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    with ckpt.Reader(path, names="clean") as r:
        assert r.format == "keras"
        assert r.keys() == ["layers/hidden/0", "layers/hidden/1", "layers/out/0", "layers/out/1"]
        np.testing.assert_array_equal(r["layers/hidden/0"], model.get_layer("hidden").kernel.numpy())
        np.testing.assert_array_equal(r["layers/out/1"], model.get_layer("out").bias.numpy())
    result = ckpt.convert(path, tmp_path / "m.safetensors", names="clean")
    assert result.tensors == 4 and result.verified
