"""Freezing and exporting a fine-tuned ``to_torch`` module writes the module's current values (issue 12, item 4).

A small model is built and trained in real TensorFlow inside the test, saved with its Saver and frozen with
``convert_variables_to_constants``. It is converted with ``ckpt.graph.to_torch``, trained a few steps in PyTorch,
then frozen or exported by every path ckpt has (``freeze(module)``, ``ckpt.save`` + ``freeze``/``ckpt freeze``,
``ckpt.save(..., graph=module)``). Each result is run in TensorFlow (``import_graph_def`` + ``Session``, or
``import_meta_graph`` + ``Saver.restore``) and in ckpt: the outputs are the tuned module's and not the original's,
and the written constants are the module's bit for bit.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import ckpt  # noqa: E402
import ckpt.graph as G  # noqa: E402
from ckpt.cli.main import main as cli_main  # noqa: E402
from ckpt.errors import CheckpointNotFoundError, StateMismatchError  # noqa: E402
from ckpt.tf.tensor_proto import make_ndarray  # noqa: E402

pytestmark = pytest.mark.tf
v1 = tf.compat.v1

X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
TARGET = np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """``y = (tanh(x @ W + b) @ W2) * scale + offset``: three variables, two float constants, trained 2 steps."""
    directory = tmp_path_factory.mktemp("small")
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(3)
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = v1.Variable(v1.random_normal([3, 4], seed=1), name="W", use_resource=False)
        b = v1.Variable(tf.zeros([4]), name="b", use_resource=False)
        w2 = v1.Variable(v1.random_normal([4, 2], seed=2), name="W2", use_resource=False)
        scale = tf.constant([1.5, -0.5], name="scale")
        offset = tf.constant([0.25, 0.125], name="offset")
        y = tf.identity(tf.matmul(tf.tanh(tf.matmul(x, w) + b), w2) * scale + offset, name="y")
        loss = tf.reduce_mean(tf.square(y - TARGET))
        train = v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(2):
                sess.run(train, {x: X})
            prefix = saver.save(sess, str(directory / "model.ckpt"))
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["y"])
    pb = directory / "frozen.pb"
    pb.write_bytes(frozen.SerializeToString())
    return {"prefix": prefix, "meta": prefix + ".meta", "pb": str(pb), "dir": directory}


def tf_run_pb(path) -> np.ndarray:
    graph_def = v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    g = tf.Graph()
    with g.as_default():
        v1.import_graph_def(graph_def, name="")
        with v1.Session(graph=g) as sess:
            return sess.run("y:0", {"x:0": X})


def tf_run_meta(meta, prefix) -> np.ndarray:
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(str(meta))
        with v1.Session(graph=g) as sess:
            saver.restore(sess, str(prefix))
            return sess.run("y:0", {"x:0": X})


def tune(module, steps: int = 3) -> np.ndarray:
    module.train()
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.2)
    for _ in range(steps):
        loss = ((module(X) - torch.from_numpy(TARGET)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        return module(X).numpy()


def const_values(graph) -> dict[str, np.ndarray]:
    return {op.name: make_ndarray(op.node.attr["value"].tensor) for op in graph.operations if op.type == "Const"}


def assert_holds(frozen_path, module, tuned: np.ndarray, original: np.ndarray) -> None:
    """The file computes the tuned outputs in TensorFlow and in ckpt, and holds the module's values exactly."""
    ours = tf_run_pb(frozen_path)
    np.testing.assert_allclose(ours, tuned, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ours, original, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        again = G.to_torch(str(frozen_path), outputs="y:0")(X).numpy()
    assert again.tobytes() == tuned.tobytes()  # same values, same kernels: bit-identical
    written = const_values(G.load(frozen_path))
    state = {**{k: v.detach().numpy() for k, v in module.variables.items()},
             **{k: v.detach().numpy() for k, v in module.constants.items()}}
    assert set(module.variables) <= set(written)
    for name, value in state.items():
        if name in written or name in module.variables:  # the loss's constants are pruned away
            assert written[name].tobytes() == value.tobytes(), name


def test_freezing_a_tuned_frozen_graph_module_writes_the_tuned_constants(small, tmp_path, capsys):
    original = tf_run_pb(small["pb"])
    module = G.to_torch(small["pb"], outputs="y:0", constants_as_parameters=True)
    with torch.no_grad():
        np.testing.assert_allclose(module(X).numpy(), original, rtol=1e-6, atol=1e-6)
    tuned = tune(module)
    assert not np.allclose(tuned, original, rtol=1e-3, atol=1e-3)

    # 1. The module itself.
    direct = G.freeze(module).save(tmp_path / "direct.pb")
    assert_holds(direct, module, tuned, original)
    # 2. ckpt.save writes the tuned constants under their node names; freeze takes them from the checkpoint.
    prefix = ckpt.save(module, tmp_path / "tuned" / "model.ckpt")
    via_checkpoint = G.freeze(small["pb"], prefix, ["y"]).save(tmp_path / "via_checkpoint.pb")
    assert_holds(via_checkpoint, module, tuned, original)
    # 3. The command line reports what it wrote.
    assert cli_main(["freeze", "--graph", small["pb"], "--checkpoint", str(prefix), "--outputs", "y",
                     "-o", str(tmp_path / "cli.pb")]) == 0
    out = capsys.readouterr().out
    assert "froze 0 variable(s) and 5 constant(s) with new values" in out, out
    assert_holds(tmp_path / "cli.pb", module, tuned, original)
    assert G.load(direct).graph_def == G.load(via_checkpoint).graph_def == G.load(tmp_path / "cli.pb").graph_def


def test_freezing_and_exporting_a_tuned_meta_graph_module(small, tmp_path):
    original = tf_run_meta(small["meta"], small["prefix"])
    module = G.to_torch(small["meta"], small["prefix"], outputs="y:0", constants_as_parameters="scale")
    assert set(module.variables) == {"W", "b", "W2"}
    tuned = tune(module)
    assert not np.allclose(tuned, original, rtol=1e-3, atol=1e-3)

    direct = G.freeze(module).save(tmp_path / "direct.pb")
    assert_holds(direct, module, tuned, original)
    prefix = ckpt.save(module, tmp_path / "tuned" / "model.ckpt")
    via_checkpoint = G.freeze(small["meta"], prefix, "y").save(tmp_path / "via_checkpoint.pb")
    assert G.load(via_checkpoint).graph_def == G.load(direct).graph_def
    # A graph and a module from it: the module's values.
    assert G.freeze(module.graph, module, ["y"]).graph_def == G.load(direct).graph_def

    # ckpt.save(..., graph=module): the .meta holds the tuned constant, the checkpoint the tuned variables, so
    # TensorFlow's Saver brings back the tuned model.
    saved = ckpt.save(module, tmp_path / "exported" / "model.ckpt", graph=module)
    np.testing.assert_allclose(tf_run_meta(f"{saved}.meta", saved), tuned, rtol=1e-6, atol=1e-6)
    exported = G.export_meta_graph(module, tmp_path / "exported.meta")
    np.testing.assert_allclose(tf_run_meta(exported, saved), tuned, rtol=1e-6, atol=1e-6)
    assert const_values(G.load(exported))["scale"].tobytes() == module.constants["scale"].detach().numpy().tobytes()

    # The module's bare graph still holds the original constant: every way of writing it refuses, naming it,
    # unless the values come from somewhere that has the tuned one.
    stale = r"trained constant\(s\) scale"
    with pytest.raises(StateMismatchError, match=stale):
        module.graph.save(tmp_path / "bare.pb")
    with pytest.raises(StateMismatchError, match=stale):
        G.export_meta_graph(module.graph, tmp_path / "bare.meta")
    with pytest.raises(StateMismatchError, match=stale):
        ckpt.save(module, tmp_path / "bare" / "model.ckpt", graph=module.graph)
    with pytest.raises(StateMismatchError, match=stale):
        G.freeze(module.graph, small["prefix"], ["y"])
    assert not any((tmp_path / name).exists() for name in ("bare.pb", "bare.meta", "bare"))
    assert G.freeze(module.graph, prefix, ["y"]).graph_def == G.load(direct).graph_def
    # A graph loaded afresh is the original, and writes as such.
    assert G.freeze(small["meta"], small["prefix"], ["y"]).graph_def != G.load(direct).graph_def


def test_freezing_refuses_values_it_cannot_write(small, tmp_path):
    module = G.to_torch(small["pb"], outputs="y:0", constants_as_parameters=True)
    tune(module, 1)
    module.double()  # the graph says float32
    with pytest.raises(StateMismatchError, match=r"constant scale: the graph holds float32 \[2\], the module "
                                                 r"float64"):
        G.freeze(module)
    with pytest.raises(StateMismatchError, match="constant scale"):
        G.export_meta_graph(module, tmp_path / "x.meta")
    assert not (tmp_path / "x.meta").exists()

    # A module cut down to part of the graph has no value for the variables it does not need.
    meta_module = G.to_torch(small["meta"], small["prefix"], outputs="y:0")
    part = meta_module.subgraph("MatMul:0")
    with pytest.raises(CheckpointNotFoundError, match="W2"):
        G.freeze(part, outputs=["y"])

    # A checkpoint none of whose tensors the frozen graph has: refused instead of ignored.
    other = ckpt.save({"unrelated": np.zeros(3, np.float32)}, tmp_path / "other" / "ckpt")
    with pytest.raises(StateMismatchError, match="none of the checkpoint's 1 tensor"):
        G.freeze(small["pb"], other, ["y"])
    # A tensor named like a constant but of another shape.
    wrong = ckpt.save({"scale": np.zeros(3, np.float32)}, tmp_path / "wrong" / "ckpt")
    with pytest.raises(StateMismatchError, match=r"constant scale: the graph holds float32 \[2\], the checkpoint "
                                                 r"float32 \[3\]"):
        G.freeze(small["pb"], wrong, ["y"])


def test_an_untouched_module_freezes_to_the_same_bytes(small, tmp_path):
    """Constants nobody changed keep their exact encoding."""
    module = G.to_torch(small["pb"], outputs="y:0", constants_as_parameters=True)
    assert G.freeze(module).graph_def == G.freeze(small["pb"], small["prefix"], ["y"]).graph_def == \
        G.load(small["pb"]).graph_def
