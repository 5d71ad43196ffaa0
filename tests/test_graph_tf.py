"""ckpt.graph against the real TensorFlow: the seeds' graphs are written by TF in the test run.

* the seed regression model (ref variables, GradientDescent, ``Saver``) and the seed's MNIST-style CNN at small sizes
  (28x28x1 input, 4 and 8 conv filters, a 32-unit fc layer, ``keep_prob`` dropout, Adam, an ``ArgMax`` output,
  trained 2 steps on random data), the CNN both with ref variables (as in TF1) and with resource variables (TF2's
  default in graph mode);
* ckpt lists exactly what ``tf.compat.v1.train.import_meta_graph`` lists; static dtypes and shapes agree;
* ckpt's frozen graph is byte-identical to ``convert_variables_to_constants`` on the same GraphDef, loads with
  ``import_graph_def`` and computes bit-identical outputs to TF's own frozen graph;
* ckpt's ``.pbtxt`` parses in TensorFlow; a ``.meta`` written by ``ckpt.save(..., graph=...)`` restores in TF;
* TensorBoard's own event loader finds the graph in ckpt's events file.

TF1 graphs run in their own ``tf.Graph`` and ``Session``; eager mode stays on for the rest of the test run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402
import ckpt.graph as G  # noqa: E402
from ckpt.tf.tensor_proto import make_ndarray, make_tensor_proto  # noqa: E402

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf
v1 = tf.compat.v1

CNN_OUTPUTS = ["ArgMax", "fc_layer_2/logits_output"]


# ================================================================================================ the seeds' models


def build_regression(directory: pathlib.Path) -> dict:
    """Seed 000, part 1: y = beta * x + alpha, GradientDescent(0.5), 25 steps, Saver -> regressionModel.ckpt."""
    g = tf.Graph()
    with g.as_default():
        np.random.seed(1234)
        v1.set_random_seed(1234)
        x_data = np.random.rand(100)
        y_data = x_data * 0.1 + 0.3
        alpha = v1.Variable(tf.zeros([1]), name="alpha", use_resource=False)
        beta = v1.Variable(v1.random_uniform([1], -1.0, 1.0), name="beta", use_resource=False)
        y_hat = x_data * beta + alpha
        loss = tf.reduce_mean(tf.square(y_hat - y_data))
        obj = v1.train.GradientDescentOptimizer(0.5).minimize(loss)
        init = v1.global_variables_initializer()
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(init)
            for _ in range(25):
                sess.run(obj)
            prefix = saver.save(sess, str(directory / "model" / "regressionModel.ckpt"))
            values = dict(zip(["alpha", "beta"], sess.run([alpha, beta])))
    return {"prefix": prefix, "meta": prefix + ".meta", "values": values}


def build_cnn(directory: pathlib.Path, *, resource: bool) -> dict:
    """Seed 000, appendix: the MNIST CNN at small sizes, trained 2 steps on random data, saved and frozen by TF."""
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(1234)

        def variable(initial, name):
            return v1.Variable(initial, name=name, use_resource=resource)

        def weight_variable(shape, suffix):
            return variable(v1.truncated_normal(shape, stddev=0.1), "W" + suffix)

        def bias_variable(shape, suffix):
            return variable(tf.constant(0.1, shape=shape), "b" + suffix)

        def conv2d(x, w, suffix):
            return tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME", name="conv2d" + suffix)

        def max_pool_2x2(x, suffix):
            return tf.nn.max_pool2d(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME",
                                    name="max_pool_2x2" + suffix)

        with tf.name_scope("inputs"):
            x_input = v1.placeholder(tf.float32, [None, 784], name="x_input")
            y_input = v1.placeholder(tf.float32, [None, 10], name="y_input")
            x_img_input = tf.reshape(x_input, [-1, 28, 28, 1], name="x_img_input")
        keep_prob = v1.placeholder(tf.float32, name="keep_prob")
        with tf.name_scope("conv_layer_1"):
            w_conv_1 = weight_variable([5, 5, 1, 4], "_conv_1")
            b_conv_1 = bias_variable([4], "_conv_1")
            conv_1 = conv2d(x_img_input, w_conv_1, "_1") + b_conv_1
        pool_1 = max_pool_2x2(tf.nn.relu(conv_1, name="ReLu1"), "_1")
        with tf.name_scope("conv_layer_2"):
            w_conv_2 = weight_variable([5, 5, 4, 8], "_conv_2")
            b_conv_2 = bias_variable([8], "_conv_2")
            conv_2 = conv2d(pool_1, w_conv_2, "_2") + b_conv_2
        pool_2 = max_pool_2x2(tf.nn.relu(conv_2, name="ReLU2"), "_2")
        reshape = tf.reshape(pool_2, [-1, 7 * 7 * 8])
        with tf.name_scope("fc_layer_1"):
            w_fc_1 = weight_variable([7 * 7 * 8, 32], "_fc_1")
            b_fc_1 = bias_variable([32], "_fc_1")
            fc_1 = tf.matmul(reshape, w_fc_1) + b_fc_1
        dropout = v1.nn.dropout(tf.nn.relu(fc_1, name="ReLU3"), keep_prob=keep_prob, name="dropout")
        with tf.name_scope("fc_layer_2"):
            w_fc_2 = weight_variable([32, 10], "_fc_2")
            b_fc_2 = bias_variable([10], "_fc_2")
            y_logits = tf.add(tf.matmul(dropout, w_fc_2), b_fc_2, name="logits_output")
        with tf.name_scope("cross_entropy"):
            cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_input, logits=y_logits))
        obj = v1.train.AdamOptimizer(1e-4).minimize(cross_entropy)
        correct_prediction = tf.equal(v1.argmax(y_logits, 1), v1.argmax(y_input, 1))
        tf.reduce_mean(tf.cast(correct_prediction, tf.float32))
        graph_def = g.as_graph_def()
        saver = v1.train.Saver()
        rng = np.random.RandomState(0)
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(2):
                sess.run(obj, {x_input: rng.rand(8, 784).astype(np.float32),
                               y_input: np.eye(10, dtype=np.float32)[rng.randint(0, 10, 8)], keep_prob: 0.5})
            prefix = saver.save(sess, str(directory / "model" / "CNN.ckpt"))
            frozen = v1.graph_util.convert_variables_to_constants(sess, graph_def, CNN_OUTPUTS)
            meta_def = tf.compat.v1.MetaGraphDef.FromString(pathlib.Path(prefix + ".meta").read_bytes())
            frozen_meta = v1.graph_util.convert_variables_to_constants(sess, meta_def.graph_def, CNN_OUTPUTS)
    return {"prefix": prefix, "meta": prefix + ".meta", "tf_frozen": frozen, "tf_frozen_meta": frozen_meta}


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    return build_regression(tmp_path_factory.mktemp("regression"))


@pytest.fixture(scope="module", params=["ref", "resource"])
def cnn(request, tmp_path_factory):
    return build_cnn(tmp_path_factory.mktemp(f"cnn_{request.param}"), resource=request.param == "resource")


def _imported(meta_path: str):
    g = tf.Graph()
    with g.as_default():
        v1.train.import_meta_graph(meta_path)
    return g


def _run_frozen(graph_def, feed: dict, fetches: list[str]):
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(graph_def, name="")
        with v1.Session(graph=g) as sess:
            return sess.run(fetches, feed)


# ================================================================================================ listing


def test_regression_listing_matches_import_meta_graph(regression):
    ours = G.load(regression["meta"])
    theirs = _imported(regression["meta"])
    assert [(op.name, op.type) for op in ours.operations] == [(op.name, op.type) for op in theirs.get_operations()]
    assert [v.name for v in ours.variables] == ["alpha", "beta"]
    with ckpt.Reader(regression["prefix"]) as reader:
        assert sorted(v.checkpoint_name for v in ours.variables) == reader.keys()
    assert [op.name for op in ours.outputs] == ["Mean"]
    assert ours.saver_def.restore_op_name == "save/restore_all"


def test_cnn_listing_matches_import_meta_graph(cnn):
    ours = G.load(cnn["meta"])
    theirs = _imported(cnn["meta"])
    assert [(op.name, op.type) for op in ours.operations] == [(op.name, op.type) for op in theirs.get_operations()]
    with theirs.as_default():
        tf_vars = [v.op.name for v in v1.global_variables()]
        tf_trainable = [v.op.name for v in v1.trainable_variables()]
    assert [v.name for v in ours.variables] == [op.name for op in theirs.get_operations()
                                                 if op.type in ("VariableV2", "VarHandleOp")]
    assert sorted(v.name for v in ours.variables) == sorted(tf_vars)
    assert [v.name for v in ours.variables if v.trainable] == tf_trainable
    with ckpt.Reader(cnn["prefix"]) as reader:
        assert sorted(v.checkpoint_name for v in ours.variables) == reader.keys()
    assert [op.name for op in ours.inputs] == ["inputs/x_input", "inputs/y_input", "keep_prob"]
    assert sorted(op.name for op in ours.outputs) == ["Mean", "cross_entropy/Mean"]
    assert [op.name for op in ours.predictions] == ["ArgMax"]
    assert ours.needed_inputs("ArgMax") == ["inputs/x_input", "keep_prob"]


def test_static_dtypes_and_shapes_agree_with_tensorflow(cnn):
    ours = G.load(cnn["meta"])
    theirs = _imported(cnn["meta"])
    checked = 0
    for op in theirs.get_operations():
        mine = ours.get_operation_by_name(op.name)
        for tensor in op.outputs:
            t = ours.get_tensor_by_name(tensor.name)
            if t.dtype is not None:
                assert t.dtype == tensor.dtype.name, tensor.name
            if t.shape is not None:
                assert list(t.shape) == tensor.shape.as_list(), tensor.name
            checked += 1
        assert len(mine.outputs) == len(op.outputs) or "_output_shapes" not in mine.node.attr
    assert checked > 300
    x = ours.get_tensor_by_name("inputs/x_input:0")
    assert (x.dtype, x.shape) == ("float32", (None, 784))


# ================================================================================================ freezing


def test_freeze_is_byte_identical_to_convert_variables_to_constants(cnn):
    ours = G.freeze(cnn["meta"], cnn["prefix"], CNN_OUTPUTS)
    expected = cnn["tf_frozen_meta"].SerializeToString(deterministic=True)
    assert ours.graph_def.SerializeToString(deterministic=True) == expected


def test_frozen_pb_runs_in_tensorflow_like_tfs_own(cnn, tmp_path):
    path = G.freeze(cnn["meta"], cnn["prefix"], CNN_OUTPUTS).save(tmp_path / "CNN.pb")
    ours = v1.GraphDef.FromString(path.read_bytes())
    assert [n.op for n in ours.node if n.name.endswith(("W_conv_1", "b_fc_2"))] == ["Const", "Const"]
    big = next(n for n in ours.node if n.name == "fc_layer_1/W_fc_1")
    assert len(big.attr["value"].tensor.tensor_content) == 392 * 32 * 4  # large constants as TF stores them
    x = np.random.RandomState(1).rand(5, 784).astype(np.float32)
    fetches = ["ArgMax:0", "fc_layer_2/logits_output:0"]
    for keep in (1.0, 0.5):  # 0.5: the dropout ops carry seeds, so fresh sessions draw the same masks
        feed = {"inputs/x_input:0": x, "keep_prob:0": keep}
        got = _run_frozen(ours, feed, fetches)
        want = _run_frozen(cnn["tf_frozen"], feed, fetches)
        assert np.array_equal(got[0], want[0])
        assert got[1].tobytes() == want[1].tobytes()
    with pytest.raises((KeyError, ValueError)):
        _run_frozen(ours, {"inputs/x_input:0": x, "keep_prob:0": 1.0}, ["Adam"])  # training is gone


def test_regression_freeze_and_cli(regression, tmp_path):
    from ckpt.cli.main import main

    out = tmp_path / "regression.pb"
    assert main(["freeze", "--graph", regression["meta"], "--outputs", "Mean", "-o", str(out)]) == 0
    frozen = G.load(out)
    assert [op.type for op in frozen if op.name in ("alpha", "beta")] == ["Const", "Const"]
    got = _run_frozen(v1.GraphDef.FromString(out.read_bytes()), {}, ["alpha:0", "beta:0", "Mean:0"])
    assert got[0].tolist() == regression["values"]["alpha"].tolist()
    assert got[1].tolist() == regression["values"]["beta"].tolist()
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(regression["meta"])
        with v1.Session(graph=g) as sess:
            saver.restore(sess, regression["prefix"])
            # Grappler folds the all-constant frozen graph, so the last bit may differ from the variable graph.
            assert np.isclose(sess.run("Mean:0"), got[2], rtol=1e-6, atol=0)


def test_pbtxt_parses_in_tensorflow(cnn, tmp_path):
    from google.protobuf import text_format

    frozen = G.freeze(cnn["meta"], cnn["prefix"], CNN_OUTPUTS)
    text = frozen.save(tmp_path / "CNN.pbtxt").read_text()
    parsed = text_format.Parse(text, v1.GraphDef())
    assert parsed.SerializeToString(deterministic=True) == frozen.save(tmp_path / "CNN.pb").read_bytes()
    assert text == text_format.MessageToString(cnn["tf_frozen_meta"])  # what tf.io.write_graph(as_text=True) writes
    tf.io.write_graph(cnn["tf_frozen_meta"], str(tmp_path), "tf.pbtxt", as_text=True)
    assert (tmp_path / "tf.pbtxt").read_text() == text


def test_meta_round_trips_byte_identically(cnn, tmp_path):
    data = pathlib.Path(cnn["meta"]).read_bytes()
    assert G.load(cnn["meta"]).save(tmp_path / "copy.meta").read_bytes() == data


def test_resource_gather_freeze_matches_tensorflow(tmp_path):
    """Embedding lookups on resource variables: ResourceGather -> GatherV2 + axis, ReadVariableOp -> Identity."""
    g = tf.Graph()
    with g.as_default():
        ids = v1.placeholder(tf.int32, [None], name="ids")
        emb = v1.get_variable("emb", initializer=np.arange(12, dtype=np.float32).reshape(6, 2), use_resource=True)
        scale = v1.get_variable("scale", initializer=np.float32(2.0), use_resource=True)
        out = tf.identity(v1.nn.embedding_lookup(emb, ids) * scale, name="out")
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "emb.ckpt"))
            meta = v1.MetaGraphDef.FromString(pathlib.Path(prefix + ".meta").read_bytes())
            theirs = v1.graph_util.convert_variables_to_constants(sess, meta.graph_def, ["out"])
            want = sess.run(out, {ids: [5, 0, 3]})
    ours = G.freeze(prefix + ".meta", prefix, ["out"])
    assert "GatherV2" in [op.type for op in ours] and "ResourceGather" not in [op.type for op in ours]
    assert ours.graph_def.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    got = _run_frozen(v1.GraphDef.FromString(ours.graph_def.SerializeToString()), {"ids:0": [5, 0, 3]}, ["out:0"])
    assert got[0].tolist() == want.tolist()


# ================================================================================================ meta graphs


def test_ckpt_save_with_graph_restores_in_tensorflow(regression, tmp_path):
    values = {"alpha": np.array([0.25], np.float32), "beta": np.array([-0.75], np.float32)}
    prefix = ckpt.save(values, str(tmp_path / "model" / "regressionModel.ckpt"), step=25,
                       graph=G.load(regression["meta"]), sync=False)
    assert v1.train.latest_checkpoint(str(tmp_path / "model")) == prefix
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(prefix + ".meta")
        with v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            assert sess.run("alpha:0").tolist() == [0.25] and sess.run("beta:0").tolist() == [-0.75]


def test_export_meta_graph_from_a_tf_graph(tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        tf.identity(x * 2.0, name="y")
    path = G.export_meta_graph(g, tmp_path / "g.meta")
    ours = G.load(path)
    assert [op.name for op in ours.outputs] == ["y"] and [op.name for op in ours.inputs] == ["x"]
    imported = _imported(str(path))
    assert [op.name for op in imported.get_operations()] == [op.name for op in ours.operations]


# ================================================================================================ TensorBoard, codec


def test_tensorboard_event_loader_finds_the_graph(cnn, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    g = G.load(cnn["meta"])
    path = G.write_events(g, tmp_path / "logs")
    acc = event_accumulator.EventAccumulator(str(tmp_path / "logs"))
    acc.Reload()
    assert acc.Tags()["graph"] and acc.Tags()["meta_graph"]
    assert acc.Graph().SerializeToString(deterministic=True) == g.graph_def.SerializeToString(deterministic=True)
    assert len(acc.MetaGraph().graph_def.node) == len(g)
    records = list(tf.compat.v1.train.summary_iterator(str(path)))
    assert records[0].file_version == "brain.Event:2"
    assert v1.GraphDef.FromString(records[1].graph_def).SerializeToString(deterministic=True) == \
        g.graph_def.SerializeToString(deterministic=True)


_DTYPES = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool", "complex64", "complex128", "string"]


@pytest.mark.parametrize("dtype", _DTYPES)
def test_tensor_proto_codec_matches_tensorflow(dtype):
    rng = np.random.default_rng(0)
    tf_dtype = tf.as_dtype(dtype)
    for shape in [(), (1,), (0,), (3,), (2, 3), (0, 3)]:
        n = int(np.prod(shape))
        if dtype == "string":
            value = np.array([b"ab\x00", b"", b"\xff\xfe", "\u00e9".encode()] * 2, dtype=object)[:n].reshape(shape)
        else:
            value = (rng.standard_normal(shape) * 10).astype(tf_dtype.as_numpy_dtype)
        theirs = tf.make_tensor_proto(value, dtype=tf_dtype, shape=value.shape)
        mine = make_tensor_proto(value, tf_dtype.as_datatype_enum, value.shape)
        assert mine.SerializeToString() == theirs.SerializeToString(), (dtype, shape)
        from ckpt.tf.protos import tensor_pb2

        decoded = make_ndarray(tensor_pb2.TensorProto.FromString(theirs.SerializeToString()))
        expected = tf.make_ndarray(theirs)
        if dtype == "string":
            assert decoded.tolist() == expected.tolist()
        else:
            assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
            assert decoded.tobytes() == expected.tobytes()
