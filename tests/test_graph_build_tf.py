"""Graphs edited with ``ckpt.graph.GraphBuilder`` and written back, imported and run by the real TensorFlow.

The seed workflows, each built by TensorFlow in the test, edited by ckpt, then run by both:

* seed 001: restore ``my_test_model-1000.meta``, add ``op_to_restore * 2``, save again (``.meta`` + checkpoint),
  ``import_meta_graph`` + ``restore`` + ``sess.run`` in TensorFlow prints 120; ckpt's GraphDef is byte-identical to
  the one TensorFlow builds doing the same;
* seed 003: two graphs merged in one under import scopes, the output of one plugged into the input of the other;
  and two ``.meta`` files merged, whose scoped collections and saver TensorFlow's ``import_meta_graph`` reads;
* seed 004: a frozen base graph, a new head trained in PyTorch on ckpt's bottlenecks, written as ``output_graph.pb``
  with Const weights + MatMul + Softmax named ``final_result`` that TensorFlow runs;
* ``from_torch`` graphs carry node names TensorFlow's importer accepts.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402
import ckpt.graph as G  # noqa: E402

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.tf
v1 = tf.compat.v1


def _tf_graph_def(ours) -> "v1.GraphDef":
    return v1.GraphDef.FromString(ours.SerializeToString())


def _without_output_shapes(graph_def) -> bytes:
    copy = type(graph_def)()
    copy.CopyFrom(graph_def)
    for node in copy.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return copy.SerializeToString(deterministic=True)


def _run_pb(path, feed: dict, fetches: list[str]):
    g = tf.Graph()
    with g.as_default():
        gd = v1.GraphDef.FromString(pathlib.Path(path).read_bytes())
        tf.import_graph_def(gd, name="")
        with v1.Session(graph=g) as sess:
            return sess.run(fetches, feed)


# ================================================================================================ seed 001


def _seed001(directory: pathlib.Path) -> str:
    g = tf.Graph()
    with g.as_default():
        w1 = v1.placeholder("float", name="w1")
        w2 = v1.placeholder("float", name="w2")
        b1 = v1.Variable(2.0, name="bias", use_resource=False)
        w3 = tf.add(w1, w2)
        tf.multiply(w3, b1, name="op_to_restore")
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, str(directory / "my_test_model"), global_step=1000)


def test_seed001_add_on_op_saved_and_restored_in_tensorflow(tmp_path):
    prefix = _seed001(tmp_path / "model")
    b = G.GraphBuilder(prefix + ".meta")
    two = b.constant(2, name="Mul/y", dtype=b.dtype("op_to_restore:0"))
    add_on = b.op("Mul", ["op_to_restore:0", two])
    assert add_on == "Mul:0"

    # What TensorFlow builds for the same edit: the same GraphDef, byte for byte (TensorFlow's importer drops the
    # _output_shapes the Saver wrote; the builder keeps them).
    g = tf.Graph()
    with g.as_default():
        v1.train.import_meta_graph(prefix + ".meta")
        tf.multiply(g.get_tensor_by_name("op_to_restore:0"), 2)
    assert _without_output_shapes(b.graph_def) == g.as_graph_def().SerializeToString(deterministic=True)

    # Save again: the same variables, the edited graph.
    new = ckpt.save(ckpt.load(prefix, flat=True), str(tmp_path / "again" / "my_test_model"), step=2000,
                    graph=b.graph, sync=False)
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(new + ".meta")
        with v1.Session(graph=g) as sess:
            saver.restore(sess, v1.train.latest_checkpoint(str(tmp_path / "again")))
            feed = {g.get_tensor_by_name("w1:0"): 13.0, g.get_tensor_by_name("w2:0"): 17.0}
            want = sess.run(g.get_tensor_by_name("Mul:0"), feed)
    assert want == 120.0
    net = G.to_torch(new + ".meta", new, outputs=["Mul:0"])
    got = net.run("Mul:0", {"w1:0": 13.0, "w2:0": 17.0})
    assert float(got.detach()) == float(want)

    # .pbtxt and .meta from the builder itself import in TensorFlow too.
    b.save(tmp_path / "edited.pbtxt")
    from google.protobuf import text_format

    gd = text_format.Parse((tmp_path / "edited.pbtxt").read_text(), v1.GraphDef())
    assert gd.SerializeToString(deterministic=True) == b.graph_def.SerializeToString(deterministic=True)
    b.save(tmp_path / "edited.meta")
    g2 = tf.Graph()
    with g2.as_default():
        saver = v1.train.import_meta_graph(str(tmp_path / "edited.meta"))
        with v1.Session(graph=g2) as sess:
            saver.restore(sess, prefix)
            assert sess.run("Mul:0", {"w1:0": 4.0, "w2:0": 8.0}) == 48.0


# ================================================================================================ seed 003


def _small_model(directory: pathlib.Path, seed: int, n_in: int, n_out: int) -> str:
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(seed)
        x = v1.placeholder(tf.float32, [None, n_in], name="input")
        w = v1.Variable(v1.random_normal([n_in, n_out]), name="W", use_resource=False)
        bias = v1.Variable(v1.random_normal([n_out]), name="b", use_resource=False)
        tf.nn.relu(tf.matmul(x, w) + bias, name="output")
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, str(directory / "model.ckpt"))


def _tf_run_meta(prefix: str, feed, fetch):
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(prefix + ".meta")
        with v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            return sess.run(fetch, feed)


def test_seed003_two_graphs_merged_under_scopes(tmp_path):
    a = _small_model(tmp_path / "a", 1, 5, 4)
    c = _small_model(tmp_path / "c", 2, 4, 3)
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    hidden = _tf_run_meta(a, {"input:0": x}, "output:0")
    want = _tf_run_meta(c, {"input:0": hidden}, "output:0")

    b = G.GraphBuilder()
    assert b.import_graph(G.freeze(a + ".meta", a, ["output"]), scope="first") == "first/"
    b.import_graph(G.freeze(c + ".meta", c, ["output"]), scope="second", input_map={"input:0": "first/output:0"})
    out = b.op("Identity", ["second/output:0"], name="merged")
    assert "second/input" in b and b.dtype(out) == "float32"
    b.prune([out])
    assert "second/input" not in b  # its only consumer was rewired to first/output
    b.save(tmp_path / "merged.pb")

    got_tf = _run_pb(tmp_path / "merged.pb", {"first/input:0": x}, ["merged:0"])[0]
    np.testing.assert_allclose(got_tf, want, rtol=1e-5, atol=1e-5)
    net = G.to_torch(tmp_path / "merged.pb", outputs=["merged:0"])
    np.testing.assert_allclose(net.run("merged:0", {"first/input:0": x}).detach().numpy(), got_tf, rtol=1e-5,
                               atol=1e-5)


def test_seed003_meta_graphs_merged_keep_scoped_collections_and_saver(tmp_path):
    a = _small_model(tmp_path / "a", 3, 2, 2)
    c = _small_model(tmp_path / "c", 4, 2, 2)
    b = G.GraphBuilder()
    b.import_graph(a + ".meta", scope="vgg")
    b.import_graph(c + ".meta", scope="head")
    stopped = b.op("StopGradient", ["vgg/output:0"], name="head_in")
    b.op("AddV2", [stopped, "head/output:0"], name="sum")
    path = b.save(tmp_path / "merged.meta")

    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(str(path))
        names = sorted(v.name for v in v1.global_variables())
        assert names == ["head/W:0", "head/b:0", "vgg/W:0", "vgg/b:0"]
        assert sorted(v.name for v in v1.trainable_variables()) == names
        head_saver = v1.train.Saver({"W": g.get_tensor_by_name("head/W:0"), "b": g.get_tensor_by_name("head/b:0")})
        with v1.Session(graph=g) as sess:
            saver.restore(sess, a)  # the first graph's saver_def, scoped: restores vgg/*
            head_saver.restore(sess, c)
            x = np.ones((1, 2), np.float32)
            got = sess.run("sum:0", {"vgg/input:0": x, "head/input:0": x})
    want = _tf_run_meta(a, {"input:0": x}, "output:0") + _tf_run_meta(c, {"input:0": x}, "output:0")
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ================================================================================================ seed 004


def test_seed004_retrained_head_exported_as_output_graph(tmp_path):
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(7)
        x = v1.placeholder(tf.float32, [None, 8], name="input")
        w = v1.Variable(v1.random_normal([8, 6]), name="conv/W", use_resource=False)
        tf.nn.relu(tf.matmul(x, w), name="pool_3/_reshape")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["pool_3/_reshape"])
    (tmp_path / "classify_image_graph_def.pb").write_bytes(frozen.SerializeToString())

    # Bottlenecks by ckpt, a new 3-class head trained in PyTorch.
    rng = np.random.default_rng(1)
    images = rng.standard_normal((32, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 32)
    base = G.to_torch(tmp_path / "classify_image_graph_def.pb", outputs=["pool_3/_reshape:0"])
    bottlenecks = base.run("pool_3/_reshape:0", {"input:0": images}).detach()
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(bottlenecks), torch.as_tensor(labels))
        loss.backward()
        opt.step()
    expected = torch.softmax(head(bottlenecks), -1).detach().numpy()

    b = G.GraphBuilder(tmp_path / "classify_image_graph_def.pb")
    weights = b.constant(head.weight.detach().numpy().T.copy(), name="final_training_ops/weights/final_weights")
    biases = b.constant(head.bias.detach().numpy(), name="final_training_ops/biases/final_biases")
    logits = b.op("MatMul", ["pool_3/_reshape:0", weights], name="final_training_ops/Wx_plus_b/MatMul")
    logits = b.op("BiasAdd", [logits, biases], name="final_training_ops/Wx_plus_b/add")
    b.op("Softmax", [logits], name="final_result")
    b.save(tmp_path / "output_graph.pb")

    got_tf = _run_pb(tmp_path / "output_graph.pb", {"input:0": images}, ["final_result:0"])[0]
    np.testing.assert_allclose(got_tf, expected, rtol=1e-5, atol=1e-6)
    ours = G.to_torch(tmp_path / "output_graph.pb", outputs=["final_result:0"])
    np.testing.assert_allclose(ours.run("final_result:0", {"input:0": images}).detach().numpy(), got_tf,
                               rtol=1e-5, atol=1e-6)


# ================================================================================================ editing ops


def test_replace_inserts_a_node_and_rename_follows_everywhere(tmp_path):
    prefix = _seed001(tmp_path / "model")
    b = G.GraphBuilder(prefix + ".meta")
    # Insert y = x * 3 between "add" and its consumer, then rename the variable's read path.
    three = b.constant(3.0, name="three")
    scaled = b.op("Mul", ["Add:0", three], name="scaled")
    assert b.replace("Add:0", scaled) == ["op_to_restore"]
    b.rename("op_to_restore", "prediction")
    path = b.save(tmp_path / "edited.meta")
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(str(path))
        with v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            assert sess.run("prediction:0", {"w1:0": 1.0, "w2:0": 2.0}) == (1.0 + 2.0) * 3 * 2
    net = G.to_torch(path, prefix, outputs=["prediction:0"])
    assert float(net.run("prediction:0", {"w1:0": 1.0, "w2:0": 2.0}).detach()) == 18.0


def test_builder_attrs_are_what_tensorflow_builds(tmp_path):
    b = G.GraphBuilder()
    x = b.placeholder("x", "float32", [None, 3])
    w = b.constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
    mm = b.op("MatMul", [x, w], name="mm", attrs={"transpose_a": False, "transpose_b": False})
    axis = b.constant(1, name="axis")
    b.op("Sum", [mm, axis], name="total", attrs={"keep_dims": True})
    b.op("Reshape", [mm, b.constant([-1], name="flat_shape")], name="flat")
    g = tf.Graph()
    with g.as_default():
        xt = v1.placeholder(tf.float32, [None, 3], name="x")
        m = tf.matmul(xt, tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="w"), name="mm")
        tf.reduce_sum(m, tf.constant(1, name="axis"), keepdims=True, name="total")
        tf.reshape(m, tf.constant([-1], name="flat_shape"), name="flat")
    # TensorFlow's importer fills in the attributes left at their defaults (MatMul's grad_a...): after that, every
    # node is the one TensorFlow's own constructors make.
    with tf.Graph().as_default() as imported:
        tf.import_graph_def(_tf_graph_def(b.graph_def), name="")
    assert imported.as_graph_def().SerializeToString(deterministic=True) == \
        g.as_graph_def().SerializeToString(deterministic=True)
    got = _run_pb(b.save(tmp_path / "g.pb"), {"x:0": np.ones((2, 3))}, ["total:0", "flat:0"])
    assert got[0].tolist() == [[15.0], [15.0]] and got[1].tolist() == [6.0, 9.0, 6.0, 9.0]


# ================================================================================================ from_torch


def test_from_torch_node_names_are_accepted_by_tensorflow():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    graph = G.from_torch(net, torch.zeros(1, 3))
    names = [op.name for op in graph.operations]
    assert all(G._build.NODE_NAME.match(n) for n in names), names
    gd = _tf_graph_def(graph.graph_def)
    with tf.Graph().as_default():
        # Node names pass TensorFlow's checks; what it still refuses is PyTorch's op types ("Linear").
        with pytest.raises(Exception, match="Op type not registered 'Linear'"):
            tf.import_graph_def(gd, name="")
    # The TensorFlow-typed part (placeholders, variables, identities) imports as it is.
    b = G.GraphBuilder(graph)
    keep = [op.name for op in graph.operations if op.type in ("Placeholder", "VariableV2")]
    b.prune(keep)
    with tf.Graph().as_default() as g:
        tf.import_graph_def(_tf_graph_def(b.graph_def), name="")
        assert sorted(op.name for op in g.get_operations()) == sorted(keep)
