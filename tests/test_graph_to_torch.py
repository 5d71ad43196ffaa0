"""TensorFlow 1 graphs as trainable PyTorch modules (``ckpt.graph.to_torch``), proven against TensorFlow.

TensorFlow writes every graph and checkpoint here in the test run (TF1 graph mode inside ``tf.Graph()``); the
PyTorch side never imports TensorFlow's code, only reads its files. Tolerances: forward outputs within 1e-5
(absolute, float32 convolutions and matrix products summed in a different order), gradients within 1e-5,
predictions (``ArgMax``) exactly equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
torch = pytest.importorskip("torch")

import ckpt  # noqa: E402
import ckpt.graph  # noqa: E402
from ckpt.cli.main import main as cli_main  # noqa: E402
from ckpt.errors import CheckpointNotFoundError, OperationNotFoundError  # noqa: E402
from ckpt.graph.torch.interpreter import FeedError, UnsupportedOperationsError  # noqa: E402

FORWARD_TOL = 1e-5
GRAD_TOL = 1e-5


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


# ----------------------------------------------------------------------------------------------- no TensorFlow


def test_import_ckpt_graph_does_not_import_torch():
    code = "import sys, ckpt, ckpt.graph; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert callable(ckpt.graph.to_torch)


def test_torch_adapter_honours_ckpt_names(tmp_path):
    """The adapter hook: ``__ckpt_names__`` replaces the "." -> "/" rule, also for a submodule (under its path),
    and a name that is a prefix of another ("w" and "w/Adam") is fine."""

    class Renamed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.ones(2))
            self.register_buffer("b", torch.zeros(3))
            self.c = torch.nn.Parameter(torch.full((1,), 5.0))

        def __ckpt_names__(self):
            return {"a": "w", "b": "w/Adam"}  # "c" keeps the default rule

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Renamed()
            self.head = torch.nn.Linear(2, 1)

    prefix = ckpt.save(Renamed(), tmp_path / "one", sync=False)
    assert sorted(ckpt.Reader(prefix).keys()) == ["c", "w", "w/Adam"]
    outer = Outer()
    opt = torch.optim.SGD(outer.parameters(), lr=0.1, momentum=0.9)
    outer.head(outer.inner.a).sum().backward()
    opt.step()
    prefix = ckpt.save({"model": outer, "opt": opt}, tmp_path / "two", sync=False)
    keys = ckpt.Reader(prefix).keys()
    assert {"model/inner/w", "model/inner/w/Adam", "model/inner/c", "model/head/weight"} <= set(keys)
    assert "opt/model/inner/w/momentum_buffer" in keys  # optimizer slots follow the chosen names
    fresh = Outer()
    ckpt.restore(prefix, {"model": fresh, "opt": torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)})
    assert torch.equal(fresh.inner.a, outer.inner.a)


def _hand_made_graph():
    """x * "eval" + "a.b/c-1": variables whose TensorFlow names are no Python identifiers (or clash with
    nn.Module's own attributes), written as a GraphDef by hand."""
    from ckpt.tf.protos import graph_pb2

    gd = graph_pb2.GraphDef()
    x = gd.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = 1
    for name in ("eval", "a.b/c-1"):
        var = gd.node.add(name=name, op="VariableV2")
        var.attr["dtype"].type = 1
        var.attr["shape"].shape.dim.add(size=2)
        read = gd.node.add(name=f"{name}/read", op="Identity", input=[name])
        read.attr["T"].type = 1
    gd.node.add(name="mul", op="Mul", input=["x", "eval/read"]).attr["T"].type = 1
    gd.node.add(name="y", op="AddV2", input=["mul", "a.b/c-1/read"]).attr["T"].type = 1
    return gd


def test_names_that_are_not_identifiers_round_trip(tmp_path):
    source = ckpt.save({"eval": np.array([2.0, 3.0], np.float32), "a.b/c-1": np.array([1.0, -1.0], np.float32)},
                       tmp_path / "values", sync=False)
    module = ckpt.graph.to_torch(_hand_made_graph(), source, outputs="y:0")
    assert module(np.array([1.0, 1.0], np.float32)).tolist() == [3.0, 2.0]
    keys = list(module.state_dict())
    assert all(k.isidentifier() for k in keys) and "eval" not in keys  # no clash with nn.Module.eval
    assert sorted(module.__ckpt_names__().values()) == ["a.b/c-1", "eval"]
    assert sorted(module.variables) == ["a.b/c-1", "eval"]
    with torch.no_grad():
        module.variables["eval"].fill_(5.0)
    written = ckpt.save(module, tmp_path / "tuned", sync=False)
    reader = ckpt.Reader(written)
    assert sorted(k for k in reader.keys()) == ["a.b/c-1", "eval"]
    assert reader["eval"].tolist() == [5.0, 5.0]
    module.eval()  # still the method
    with pytest.raises(CheckpointNotFoundError, match="eval"):
        ckpt.graph.to_torch(_hand_made_graph(), ckpt.save({"a.b/c-1": np.zeros(2, np.float32)}, tmp_path / "x",
                                                          sync=False))


# ----------------------------------------------------------------------------------------------- seed 001


@pytest.fixture(scope="module")
def seed001(tf, tmp_path_factory):
    """The seed's graph: (w1 + w2) * bias, bias = 2.0, saved with global_step=1000."""
    d = tmp_path_factory.mktemp("seed001")
    g = tf.Graph()
    with g.as_default():
        w1 = tf.compat.v1.placeholder("float", name="w1")
        w2 = tf.compat.v1.placeholder("float", name="w2")
        b1 = tf.compat.v1.Variable(2.0, name="bias")
        w4 = tf.multiply(tf.add(w1, w2), b1, name="op_to_restore")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            assert sess.run(w4, {w1: 4, w2: 8}) == 24
            tf.compat.v1.train.Saver().save(sess, str(d / "my_test_model"), global_step=1000)
    return d


@pytest.mark.tf
def test_seed001_restore_run_and_add_on(seed001):
    d = seed001
    module = ckpt.graph.to_torch(str(d / "my_test_model-1000.meta"), checkpoint=ckpt.latest(d))
    assert isinstance(module, torch.nn.Module) and not module.training
    assert module.variables["bias"].item() == 2.0
    assert module.run("op_to_restore:0", {"w1:0": 13.0, "w2:0": 17.0}).item() == 60.0
    assert module.run("op_to_restore", {"w1": 13.0, "w2": 17.0}).item() == 60.0  # op names work too
    assert module(13.0, 17.0).item() == 60.0
    assert module(w1=13.0, w2=17.0).item() == 60.0
    # Add more operations on top, as the seed does with tf.multiply(op_to_restore, 2).
    op_to_restore = module.tensor("op_to_restore:0")
    add_on = op_to_restore(w1=13.0, w2=17.0) * 2
    assert add_on.item() == 120.0
    # The fetch list behaves like sess.run: a list in, a list out; intermediate tensors too.
    total, bias = module.run(["Add:0", "bias:0"], {"w1:0": 13.0, "w2:0": 17.0})
    assert total.item() == 30.0 and bias.item() == 2.0


@pytest.mark.tf
def test_seed001_errors_are_clear(seed001):
    module = ckpt.graph.to_torch(str(seed001 / "my_test_model-1000.meta"))  # checkpoint beside the .meta
    with pytest.raises(FeedError, match=r"placeholder 'w2' .* needs a value"):
        module.run("op_to_restore:0", {"w1:0": 1.0})
    with pytest.raises(OperationNotFoundError, match="did you mean 'op_to_restore'"):
        module.run("op_to_restor:0", {"w1:0": 1.0, "w2:0": 2.0})
    with pytest.raises(UnsupportedOperationsError, match="SaveV2 .*ckpt.save"):
        module.run("save/SaveV2")
    with pytest.raises(UnsupportedOperationsError, match=r"assigns a variable"):
        ckpt.graph.to_torch(str(seed001 / "my_test_model-1000.meta"), outputs="bias/Assign")


@pytest.mark.tf
def test_cli_run_seed001(seed001, capsys, tmp_path):
    meta = str(seed001 / "my_test_model-1000.meta")
    assert cli_main(["run", meta, "--feed", "w1=13", "--feed", "w2=17", "--fetch", "op_to_restore:0"]) == 0
    out = capsys.readouterr().out
    assert out == "op_to_restore:0 (float32, shape []):\n60.0\n"
    np.save(tmp_path / "w1.npy", np.array([1.0, 13.0], np.float32))
    assert cli_main(["run", str(seed001), "--checkpoint", str(seed001), "--feed", f"w1={tmp_path / 'w1.npy'}",
                     "--feed", "w2=[2, 17]", "--fetch", "op_to_restore,bias", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outputs"]["op_to_restore"] == {"dtype": "float32", "shape": [2], "value": [6.0, 60.0]}
    assert data["outputs"]["bias"]["value"] == 2.0
    out_file = tmp_path / "out.npz"
    assert cli_main(["run", meta, "--feed", "w1=13", "--feed", "w2=17", "--fetch", "op_to_restore:0",
                     "-o", str(out_file)]) == 0
    with np.load(out_file) as saved:
        assert saved["op_to_restore:0"] == 60.0
    assert cli_main(["run", meta, "--feed", "w1=13", "--fetch", "op_to_restore:0"]) == 2
    assert "Error: placeholder 'w2'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- the seed's CNN


def _build_cnn(tf, size=8):
    """The seed's MNIST CNN at small sizes: 8x8x1 inputs, 5x5 convs with 4 and 8 filters (SAME), 2x2 max pools,
    32 hidden units, dropout with a keep_prob placeholder, 10 logits, ArgMax, cross entropy, Adam."""
    v1 = tf.compat.v1

    def weight(shape, suffix):
        return v1.Variable(tf.random.truncated_normal(shape, stddev=0.1), name="W" + suffix, use_resource=False)

    def bias(shape, suffix):
        return v1.Variable(tf.constant(0.1, shape=shape), name="b" + suffix, use_resource=False)

    def conv2d(x, w, suffix):
        return tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME", name="conv2d" + suffix)

    def max_pool_2x2(x, suffix):
        return tf.nn.max_pool2d(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME",
                                name="max_pool_2x2" + suffix)

    with v1.name_scope("inputs"):
        x_input = v1.placeholder(tf.float32, [None, size * size], name="x_input")
        y_input = v1.placeholder(tf.float32, [None, 10], name="y_input")
        x_img = tf.reshape(x_input, [-1, size, size, 1], name="x_img_input")
    keep_prob = v1.placeholder(tf.float32, name="keep_prob")
    with v1.name_scope("conv_layer_1"):
        conv_1 = conv2d(x_img, weight([5, 5, 1, 4], "_conv_1"), "_1") + bias([4], "_conv_1")
    pool_1 = max_pool_2x2(tf.nn.relu(conv_1, name="ReLu1"), "_1")
    with v1.name_scope("conv_layer_2"):
        conv_2 = conv2d(pool_1, weight([5, 5, 4, 8], "_conv_2"), "_2") + bias([8], "_conv_2")
    pool_2 = max_pool_2x2(tf.nn.relu(conv_2, name="ReLU2"), "_2")
    flat = (size // 4) ** 2 * 8
    reshape = tf.reshape(pool_2, [-1, flat])
    with v1.name_scope("fc_layer_1"):
        fc_1 = tf.matmul(reshape, weight([flat, 32], "_fc_1")) + bias([32], "_fc_1")
    dropout = v1.nn.dropout(tf.nn.relu(fc_1, name="ReLU3"), keep_prob, name="dropout")
    with v1.name_scope("fc_layer_2"):
        logits = tf.add(tf.matmul(dropout, weight([32, 10], "_fc_2")), bias([10], "_fc_2"), name="logits_output")
    with v1.name_scope("cross_entropy"):
        loss = tf.reduce_mean(v1.nn.softmax_cross_entropy_with_logits(labels=y_input, logits=logits))
    train = v1.train.AdamOptimizer(1e-2).minimize(loss)
    prediction = tf.argmax(logits, 1)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(prediction, tf.argmax(y_input, 1)), tf.float32), name="accuracy")
    return {"x": x_input, "y": y_input, "keep_prob": keep_prob, "logits": logits, "loss": loss, "train": train,
            "prediction": prediction, "accuracy": accuracy}


LOSS = "cross_entropy/Mean:0"


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()  # 1797 8x8 images that ship with scikit-learn
    x = (data.images.reshape(-1, 64) / 16.0).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[data.target]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def cnn(tf, digits, tmp_path_factory):
    """Train the CNN for 40 steps in TensorFlow, save it, freeze it, and record TensorFlow's answers."""
    x_train, y_train, x_test, y_test = digits
    d = tmp_path_factory.mktemp("cnn")
    rng = np.random.default_rng(0)
    x_rand = rng.random((6, 64), dtype=np.float32)
    y_rand = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.set_random_seed(0)
        n = _build_cnn(tf)
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(40):
                idx = rng.choice(len(x_train), 100, replace=False)
                sess.run(n["train"], {n["x"]: x_train[idx], n["y"]: y_train[idx], n["keep_prob"]: 0.5})
            prefix = tf.compat.v1.train.Saver().save(sess, str(d / "CNN.ckpt"), global_step=40)
            feed = {n["x"]: x_rand, n["keep_prob"]: 1.0}
            logits, prediction = sess.run([n["logits"], n["prediction"]], feed)
            variables = tf.compat.v1.trainable_variables()
            grads = sess.run(tf.gradients(n["loss"], variables), {**feed, n["y"]: y_rand})
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["ArgMax"])
            tf.io.write_graph(frozen, str(d), "CNN.pb", as_text=False)
    return {"dir": d, "prefix": prefix, "x": x_rand, "y": y_rand, "logits": logits, "prediction": prediction,
            "grads": {v.op.name: gr for v, gr in zip(variables, grads)}}


@pytest.mark.tf
def test_cnn_from_meta_matches_tensorflow(cnn):
    module = ckpt.graph.to_torch(cnn["prefix"] + ".meta", checkpoint=ckpt.latest(cnn["dir"]),
                                 outputs=["fc_layer_2/logits_output:0", "ArgMax:0"])
    logits, prediction = module(cnn["x"], keep_prob=1.0)
    assert np.abs(logits.detach().numpy() - cnn["logits"]).max() <= FORWARD_TOL
    assert prediction.dtype == torch.int64 and np.array_equal(prediction.numpy(), cnn["prediction"])
    # Default outputs: the graph's prediction (ArgMax), fed by position in graph order.
    default = ckpt.graph.to_torch(cnn["prefix"] + ".meta")
    assert default.outputs == ["ArgMax:0"] and default.inputs == ["inputs/x_input:0", "keep_prob:0"]
    assert np.array_equal(default(cnn["x"], 1.0).numpy(), cnn["prediction"])
    # Every variable is state: trainable ones parameters, Adam's slots and beta powers buffers.
    assert sorted(n for n, p in module.named_parameters()) == sorted(
        module._attr[name] for name in cnn["grads"])
    assert isinstance(module.variables["conv_layer_1/W_conv_1/Adam"], torch.Tensor)
    assert "beta1_power" in module.variables and len(module.variables) == 8 * 3 + 2
    assert any("ApplyAdam" in why for why in module.left_out.values())
    # Training operations are recognised: asking for one says what to do instead.
    with pytest.raises(UnsupportedOperationsError, match="training update .ApplyAdam.*PyTorch optimizer"):
        module.run("Adam/update_fc_layer_2/W_fc_2/ApplyAdam:0", {"inputs/x_input:0": cnn["x"]})
    with pytest.raises(UnsupportedOperationsError, match="training step"):
        module.run("Adam", {"inputs/x_input:0": cnn["x"]})
    # Placeholders check what they are fed, as TensorFlow does.
    with pytest.raises(FeedError, match=r"shape \(6, 63\) for tensor 'inputs/x_input:0', which has shape \[\?, 64\]"):
        module(cnn["x"][:, :63], keep_prob=1.0)


@pytest.mark.tf
def test_cnn_from_frozen_pb_matches_tensorflow(cnn):
    module = ckpt.graph.to_torch(str(cnn["dir"] / "CNN.pb"))
    assert module.outputs == ["ArgMax:0"] and not list(module.parameters())
    assert np.array_equal(module(cnn["x"], keep_prob=1.0).numpy(), cnn["prediction"])
    logits = module.run("fc_layer_2/logits_output:0", {"inputs/x_input:0": cnn["x"], "keep_prob:0": 1.0})
    assert np.abs(logits.numpy() - cnn["logits"]).max() <= FORWARD_TOL
    # The frozen weights are constants: persistent buffers under their TF names, parameters on request.
    assert "fc_layer_2/W_fc_2" in module.constants and not module.constants["fc_layer_2/W_fc_2"].requires_grad
    tunable = ckpt.graph.to_torch(str(cnn["dir"] / "CNN.pb"), constants_as_parameters="fc_layer_2/*")
    assert sorted(tunable.constants[n].requires_grad for n in ("fc_layer_2/W_fc_2", "fc_layer_1/W_fc_1")) == \
        [False, True]


@pytest.mark.tf
def test_cnn_gradients_match_tensorflow(cnn):
    module = ckpt.graph.to_torch(cnn["prefix"] + ".meta", outputs=LOSS)
    loss = module(cnn["x"], keep_prob=1.0, **{"inputs/y_input": cnn["y"]})
    loss.backward()
    assert set(cnn["grads"]) == {n for n, v in module.variables.items() if v.requires_grad}
    for name, expected in cnn["grads"].items():
        got = module.variables[name].grad.numpy()
        assert np.abs(got - expected).max() <= GRAD_TOL, name


@pytest.mark.tf
def test_cnn_fine_tune_last_layer_and_restore_in_tensorflow(tf, cnn, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    module = ckpt.graph.to_torch(cnn["prefix"] + ".meta", outputs=["fc_layer_2/logits_output:0", "ArgMax:0"])
    assert module.freeze("*") and module.unfreeze("fc_layer_2/*") == ["fc_layer_2/W_fc_2", "fc_layer_2/b_fc_2"]
    before_conv = module.variables["conv_layer_1/W_conv_1"].detach().clone()

    def accuracy():
        with torch.no_grad():
            _, prediction = module(x_test, keep_prob=1.0)
        return prediction.numpy(), float((prediction.numpy() == y_test.argmax(1)).mean())

    _, before = accuracy()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(60):
        idx = rng.choice(len(x_train), 100, replace=False)
        loss = module.run(LOSS, {"inputs/x_input:0": x_train[idx], "inputs/y_input:0": y_train[idx],
                                 "keep_prob:0": 1.0})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictions, after = accuracy()
    assert after > before + 0.02, (before, after)
    assert torch.equal(module.variables["conv_layer_1/W_conv_1"], before_conv)  # frozen layers stayed put

    # Written under the original TensorFlow names, restored by TensorFlow into the original graph.
    prefix = ckpt.save(module, tmp_path / "tuned" / "CNN.ckpt", step=41, sync=False)
    assert {"conv_layer_1/W_conv_1", "fc_layer_2/W_fc_2/Adam", "beta2_power"} <= set(ckpt.Reader(prefix).keys())
    g = tf.Graph()
    with g.as_default():
        saver = tf.compat.v1.train.import_meta_graph(cnn["prefix"] + ".meta")
        with tf.compat.v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            tf_accuracy, tf_predictions = sess.run(["accuracy:0", "ArgMax:0"], {
                "inputs/x_input:0": x_test, "inputs/y_input:0": y_test, "keep_prob:0": 1.0})
    assert np.array_equal(tf_predictions, predictions)
    assert tf_accuracy == np.float32(after)

    # ckpt.graph.freeze bakes the fine-tuned values into a frozen graph that gives the same predictions.
    frozen = ckpt.graph.freeze(cnn["prefix"] + ".meta", prefix, ["ArgMax"])
    frozen_module = ckpt.graph.to_torch(frozen)
    assert np.array_equal(frozen_module(x_test, keep_prob=1.0).numpy(), predictions)

    # And the checkpoint restores into a fresh graph module with ckpt.restore.
    fresh = ckpt.graph.to_torch(cnn["prefix"] + ".meta")
    ckpt.restore(prefix, fresh)
    assert torch.equal(fresh.variables["fc_layer_2/W_fc_2"], module.variables["fc_layer_2/W_fc_2"])


@pytest.mark.tf
def test_cnn_new_head_on_an_intermediate_tensor(cnn):
    """The seed's VGG recipe: take fc7 (here ReLU3), stop gradients there, put a new 2-class layer on top."""
    module = ckpt.graph.to_torch(cnn["prefix"] + ".meta")
    features = module.tensor("ReLU3:0")
    assert features.inputs == ["inputs/x_input:0"]  # keep_prob is not needed below the dropout
    assert sorted(features.variables) == ["conv_layer_1/W_conv_1", "conv_layer_1/b_conv_1", "conv_layer_2/W_conv_2",
                                          "conv_layer_2/b_conv_2", "fc_layer_1/W_fc_1", "fc_layer_1/b_fc_1"]
    assert features.variables["fc_layer_1/W_fc_1"] is module.variables["fc_layer_1/W_fc_1"]  # shared
    head = torch.nn.Linear(32, 2)
    net = torch.nn.Sequential(features, head)
    out = net(torch.from_numpy(cnn["x"]))
    assert out.shape == (6, 2)
    out.sum().backward()
    assert features.variables["fc_layer_1/W_fc_1"].grad is not None and head.weight.grad is not None
    # A graph that says StopGradient: nothing below it gets a gradient.
    cut = module.subgraph("fc_layer_2/logits_output:0", inputs=["ReLU3:0"])
    assert cut.inputs == ["ReLU3:0"] and sorted(cut.variables) == ["fc_layer_2/W_fc_2", "fc_layer_2/b_fc_2"]
    hidden = torch.rand(4, 32, requires_grad=True)
    cut(hidden, keep_prob=1.0).sum().backward()
    assert hidden.grad is not None and cut.variables["fc_layer_2/W_fc_2"].grad is not None


@pytest.mark.tf
def test_stop_gradient_in_the_graph(tf):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.compat.v1.Variable(np.ones((3, 2), np.float32), name="w")
        v = tf.compat.v1.Variable(np.ones((2, 1), np.float32), name="v")
        h = tf.stop_gradient(tf.matmul(x, w), name="features")
        tf.identity(tf.matmul(h, v), name="y")
    with pytest.warns(UserWarning, match="no checkpoint given"):  # variables start from their initializers
        module = ckpt.graph.to_torch(g.as_graph_def(), outputs="y:0")
    assert torch.equal(module.variables["w"], torch.ones(3, 2))
    module(np.ones((2, 3), np.float32)).sum().backward()
    assert module.variables["v"].grad is not None and module.variables["w"].grad is None


@pytest.mark.tf
def test_unsupported_operations_fail_at_conversion(tf):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="x")
        top = tf.math.lgamma(x, name="top")
        y = tf.identity(top * 2.0, name="y")
        z = tf.math.bessel_i0e(x, name="bessel")
        tf.add(y[:, 0], z[:, 0], name="both")
        tf.nn.relu(x, name="fine")
    gd = g.as_graph_def()
    with pytest.raises(UnsupportedOperationsError) as info:
        ckpt.graph.to_torch(gd, outputs=["both:0"])
    err = info.value
    assert set(err.operations) == {"Lgamma", "BesselI0e"}
    assert err.operations["Lgamma"] == ["top"] and err.operations["BesselI0e"] == ["bessel/BesselI0e"]
    assert "Lgamma: top" in str(err) and "BesselI0e: bessel/BesselI0e" in str(err)
    # Only what the requested outputs need is considered: relu converts and runs.
    module = ckpt.graph.to_torch(gd, outputs="fine:0")
    assert module(np.array([[-1.0, 2.0, 0, 0, 0]], np.float32)).tolist() == [[0.0, 2.0, 0, 0, 0]]
    with pytest.raises(UnsupportedOperationsError, match="Lgamma"):
        module.run("y:0", {"x:0": np.zeros((1, 5), np.float32)})


# ----------------------------------------------------------------------------------------------- batch norm


def _batch_norm(tf, x, is_training, *, use_resource):
    """What ``tf.compat.v1.layers.batch_normalization(x, training=is_training)`` builds for NHWC input (TensorFlow
    2.21 ships that layer only with tf_keras, so the same graph is built from its parts): variables gamma, beta,
    moving_mean, moving_variance; a cond on ``is_training`` between FusedBatchNormV3 in training and inference
    mode; moving-average updates in UPDATE_OPS."""
    v1 = tf.compat.v1
    channels = x.shape[-1]
    with v1.variable_scope("batch_normalization"):
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer(), use_resource=use_resource)
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer(), use_resource=use_resource)
        moving_mean = v1.get_variable("moving_mean", [channels], initializer=v1.zeros_initializer(),
                                      trainable=False, use_resource=use_resource)
        moving_variance = v1.get_variable("moving_variance", [channels], initializer=v1.ones_initializer(),
                                          trainable=False, use_resource=use_resource)

        def training():
            return v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-3, is_training=True)

        def inference():
            return v1.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=1e-3,
                                          is_training=False)

        y, mean, variance = v1.cond(is_training, training, inference)
        momentum = v1.cond(is_training, lambda: tf.constant(0.9), lambda: tf.constant(1.0))
        for var, value in ((moving_mean, mean), (moving_variance, variance)):
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign_sub(var, (var - value) * (1.0 - momentum)))
    return y


@pytest.fixture(scope="module", params=["Switch/Merge", "StatelessIf"])
def bn_graph(request, tf, tmp_path_factory):
    """A conv + batch norm + dense model with ``is_training = placeholder_with_default(False, [])``, trained for a
    few steps in TensorFlow (moving averages updated), saved; with TF1 control flow (Switch/Merge, reference
    variables) and with TensorFlow 2's functional cond (StatelessIf/If, resource variables)."""
    v1 = tf.compat.v1
    d = tmp_path_factory.mktemp("bn")
    legacy = request.param == "Switch/Merge"
    if legacy:
        v1.disable_control_flow_v2()
    try:
        g = tf.Graph()
        with g.as_default():
            v1.set_random_seed(1)
            x = v1.placeholder(tf.float32, [None, 6, 6, 2], name="x")
            y_true = v1.placeholder(tf.float32, [None, 3], name="y_true")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            w = v1.get_variable("conv/w", [3, 3, 2, 4], use_resource=not legacy)
            h = tf.nn.conv2d(x, w, strides=1, padding="SAME")
            h = tf.nn.relu(_batch_norm(tf, h, is_training, use_resource=not legacy))
            dense = v1.get_variable("dense/w", [6 * 6 * 4, 3], use_resource=not legacy)
            logits = tf.identity(tf.matmul(tf.reshape(h, [-1, 6 * 6 * 4]), dense), name="logits")
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_true, logits=logits))
            with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
                train = v1.train.GradientDescentOptimizer(0.1).minimize(loss)
            rng = np.random.default_rng(5)
            xs = (rng.standard_normal((8, 6, 6, 2)) * 2 + 1).astype(np.float32)
            ys = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
            with v1.Session(graph=g) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(5):
                    sess.run(train, {x: xs, y_true: ys, is_training: True})
                prefix = v1.train.Saver().save(sess, str(d / "bn.ckpt"))
                expected = {mode: sess.run(logits, {x: xs} if mode is None else {x: xs, is_training: mode})
                            for mode in (None, True, False)}
    finally:
        if legacy:
            v1.enable_control_flow_v2()
    types = {op.type for op in g.get_operations()}
    assert ({"Switch", "Merge"} <= types) if legacy else bool({"If", "StatelessIf"} & types)
    return prefix, xs, expected


@pytest.mark.tf
def test_batch_norm_follows_train_and_eval_modes(bn_graph):
    prefix, xs, expected = bn_graph
    assert not np.allclose(expected[True], expected[False], atol=1e-3)  # the modes really differ
    module = ckpt.graph.to_torch(prefix + ".meta", outputs="logits:0")
    assert module.inputs == ["x:0"]  # is_training follows the mode instead of being an input
    assert sorted(n for n, v in module.variables.items() if not isinstance(v, torch.nn.Parameter)) == [
        "batch_normalization/moving_mean", "batch_normalization/moving_variance"]
    with torch.no_grad():
        eval_out = module(xs)  # eval mode: moving averages, like TensorFlow's default (False)
        module.train()
        train_out = module(xs)  # train mode: batch statistics
        module.eval()
        fed_true = module(xs, is_training=True)  # feeding the placeholder wins over the mode
        module.train()
        fed_false = module(xs, is_training=False)
    np.testing.assert_allclose(eval_out.numpy(), expected[None], atol=FORWARD_TOL, rtol=FORWARD_TOL)
    np.testing.assert_allclose(fed_false.numpy(), expected[False], atol=FORWARD_TOL, rtol=FORWARD_TOL)
    np.testing.assert_allclose(train_out.numpy(), expected[True], atol=FORWARD_TOL, rtol=FORWARD_TOL)
    np.testing.assert_allclose(fed_true.numpy(), expected[True], atol=FORWARD_TOL, rtol=FORWARD_TOL)
    # The gradient flows through the taken branch.
    module.train()
    module(xs).square().mean().backward()
    assert module.variables["batch_normalization/gamma"].grad is not None


@pytest.mark.tf
def test_dropout_keep_prob(tf):
    """keep_prob=1.0 gives exactly TensorFlow's output; other values drop and rescale with torch's generator."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 100], name="x")
        keep_prob = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        y = tf.compat.v1.nn.dropout(x * 3.0, keep_prob, name="dropout")
        xs = np.random.default_rng(2).standard_normal((50, 100)).astype(np.float32)
        with tf.compat.v1.Session(graph=g) as sess:
            expected = sess.run(y, {x: xs, keep_prob: 1.0})
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=y.name)
    assert module.inputs == ["x:0", "keep_prob:0"]
    assert np.array_equal(module(xs, 1.0).numpy(), expected)
    torch.manual_seed(0)
    dropped = module(xs, 0.5).numpy()
    kept = dropped != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_allclose(dropped[kept], (xs * 3.0)[kept] / 0.5, rtol=1e-6)


@pytest.mark.tf
@pytest.mark.parametrize("use_resource", [False, True], ids=["VariableV2", "VarHandleOp"])
def test_partitioned_variables_round_trip(tf, tmp_path, use_resource):
    """A partitioned variable is one full-size tensor under its SaveSliceInfo full_name; TensorFlow's Saver restores
    the parts from what ckpt.save writes."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 10], name="x")
        w = v1.get_variable("w", shape=[10, 3], partitioner=v1.fixed_size_partitioner(2), use_resource=use_resource)
        y = tf.identity(tf.matmul(x, w), name="y")
        xs = np.random.default_rng(3).random((2, 10), dtype=np.float32)
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = v1.train.Saver().save(sess, str(tmp_path / "part"))
            expected = sess.run(y, {x: xs})
    module = ckpt.graph.to_torch(prefix + ".meta", outputs="y:0")
    assert list(module.variables) == ["w"] and tuple(module.variables["w"].shape) == (10, 3)
    np.testing.assert_allclose(module(xs).detach().numpy(), expected, atol=FORWARD_TOL)
    with torch.no_grad():
        module.variables["w"].mul_(-2.0)
    out = ckpt.save(module, tmp_path / "tuned", sync=False)
    g2 = tf.Graph()
    with g2.as_default():
        saver = v1.train.import_meta_graph(prefix + ".meta")
        with v1.Session(graph=g2) as sess:
            saver.restore(sess, out)
            restored = sess.run("y:0", {"x:0": xs})
    np.testing.assert_allclose(restored, -2.0 * expected, atol=FORWARD_TOL)


@pytest.mark.tf
def test_run_structures_and_feeding_intermediates(seed001):
    module = ckpt.graph.to_torch(str(seed001 / "my_test_model-1000.meta"))
    feeds = {"w1:0": 1.0, "w2:0": 2.0}
    assert [t.item() for t in module.run(("Add:0", "op_to_restore:0"), feeds)] == [3.0, 6.0]
    assert {k: v.item() for k, v in module.run({"sum": "Add:0", "out": "op_to_restore:0"}, feeds).items()} == \
        {"sum": 3.0, "out": 6.0}
    # Feeding an intermediate tensor cuts off what computes it (no placeholder needed).
    assert module.run("op_to_restore:0", {"Add:0": 10.0}).item() == 20.0
    named = ckpt.graph.to_torch(str(seed001 / "my_test_model-1000.meta"), inputs={"a": "w1:0", "b": "w2:0"},
                                outputs={"y": "op_to_restore:0"})
    assert named(3.0, b=4.0)["y"].item() == 14.0
