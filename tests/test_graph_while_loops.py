"""TF1 while loops (``Enter``/``Merge``/``Switch``/``LoopCond``/``NextIteration``/``Exit`` frames) and TensorArrays
in ``ckpt.graph.to_torch``, checked against TensorFlow: outputs within 1e-5 and gradients (torch autograd through
the Python loop against ``tf.gradients`` in the TensorFlow graph) within 1e-5.

Every graph is built in the test with control flow v2 disabled (TensorFlow's switch is global, so it is turned off
only while a graph is built and restored afterwards).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import ckpt.graph  # noqa: E402
from ckpt.errors import FeedError, UnsupportedOperationsError  # noqa: E402
from ckpt.graph.torch.interpreter import SUPPORTED_OPS  # noqa: E402

pytestmark = pytest.mark.tf

v1 = tf.compat.v1
TOL = 1e-5


@contextlib.contextmanager
def tf1_graph():
    """A ``tf.Graph`` built with TF1 control flow (``Enter``/``Exit`` frames), restoring the global switch after."""
    from tensorflow.python.ops import control_flow_util

    before = control_flow_util.ENABLE_CONTROL_FLOW_V2
    v1.disable_control_flow_v2()
    try:
        g = tf.Graph()
        with g.as_default():
            yield g
    finally:
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = before


def _cells():
    try:
        from tensorflow.python.keras.layers.legacy_rnn import rnn_cell_impl
    except ImportError:  # pragma: no cover - depends on the TensorFlow build
        pytest.skip("TF1 rnn cells are not available")
    return rnn_cell_impl


def _close(got, expected, what):
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (what, got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL, err_msg=what)


def _run_and_save(g, tmp_path, fetches, feeds, grad_of=None, wrt=()):
    """TensorFlow's values (and gradients of ``grad_of`` with respect to the trainable variables and ``wrt``), a
    checkpoint of the variables and the meta graph."""
    variables = v1.trainable_variables()
    grads = tf.gradients(grad_of, variables + list(wrt)) if grad_of is not None else []
    with v1.Session(graph=g) as sess:
        sess.run(v1.global_variables_initializer())
        values = sess.run(list(fetches) + grads, feeds)
        prefix = v1.train.Saver().save(sess, str(tmp_path / "model")) if variables else None
    meta = v1.train.export_meta_graph(graph=g)
    n = len(fetches)
    return values[:n], dict(zip([v.op.name for v in variables] + [t.op.name for t in wrt], values[n:])), meta, prefix


def _frames(graph_def) -> set[str]:
    """The forward while frames (not the backward loops tf.gradients adds)."""
    names = {n.attr["frame_name"].s.decode() for n in graph_def.node if n.op == "Enter"}
    return {f for f in names if not f.startswith("gradients")}


@pytest.mark.parametrize("use_resource", [True, False])
def test_dynamic_rnn_lstm_outputs_and_gradients(tmp_path, use_resource):
    rnn = _cells()
    rng = np.random.default_rng(0)
    xv = rng.standard_normal((3, 7, 5)).astype(np.float32)
    with tf1_graph() as g:
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 7, 5], name="x")
        with v1.variable_scope("lstm", use_resource=use_resource):
            out, state = v1.nn.dynamic_rnn(rnn.LSTMCell(4), x, dtype=tf.float32)
        loss = tf.reduce_sum(out * out, name="loss") + tf.reduce_sum(state.c)
        fetches = [out, state.c, state.h, loss]
        expected, grads, meta, prefix = _run_and_save(g, tmp_path, fetches, {x: xv}, loss, [x])
    assert {"Enter", "Exit", "LoopCond", "NextIteration", "TensorArrayV3", "TensorArrayReadV3",
            "TensorArrayWriteV3", "TensorArrayScatterV3", "TensorArrayGatherV3"} <= {n.op for n in meta.graph_def.node}
    module = ckpt.graph.to_torch(meta, prefix, inputs=["x:0"], outputs=[t.name for t in fetches])
    x_t = torch.tensor(xv, requires_grad=True)
    got = module(x_t)
    for a, b, t in zip(got, expected, fetches):
        _close(a, b, t.name)
    got[-1].backward()
    assert len(grads) == 3
    for name, value in grads.items():
        _close(x_t.grad if name == "x" else module.variables[name].grad, value, f"d loss / d {name}")
    # The loop runs as many iterations as the sequence is long: a shorter batch gives TensorFlow's answer too.
    again = module(xv[:1])
    _close(again[0], expected[0][:1], "batch of one")
    # Frozen by ckpt, the loop still runs, in TensorFlow and here.
    frozen = ckpt.graph.freeze(module)
    _close(ckpt.graph.to_torch(frozen, outputs=out.name)(xv), expected[0], "frozen by ckpt")
    with tf.Graph().as_default() as g2:
        tf.import_graph_def(tf.compat.v1.GraphDef.FromString(frozen.graph_def.SerializeToString()), name="")
        with v1.Session(graph=g2) as sess:
            _close(sess.run(out.name, {"x:0": xv}), expected[0], "frozen by ckpt, run by TensorFlow")


@pytest.mark.slow
def test_bidirectional_lstm_with_sequence_lengths(tmp_path):
    rnn = _cells()
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((3, 6, 4)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int32)
    with tf1_graph() as g:
        v1.set_random_seed(2)
        x = v1.placeholder(tf.float32, [None, 6, 4], name="x")
        seq = v1.placeholder(tf.int32, [None], name="seq")
        (fw, bw), (s_fw, s_bw) = v1.nn.bidirectional_dynamic_rnn(rnn.LSTMCell(5), rnn.LSTMCell(3), x,
                                                                 sequence_length=seq, dtype=tf.float32)
        loss = tf.reduce_sum(tf.sin(fw)) + tf.reduce_sum(bw * bw) + tf.reduce_sum(s_bw.h)
        fetches = [fw, bw, s_fw.c, s_fw.h, s_bw.c, s_bw.h, loss]
        expected, grads, meta, prefix = _run_and_save(g, tmp_path, fetches, {x: xv, seq: lengths}, loss, [x])
    assert len(_frames(meta.graph_def)) == 2 and "ReverseSequence" in {n.op for n in meta.graph_def.node}
    module = ckpt.graph.to_torch(meta, prefix, inputs=["x:0", "seq:0"], outputs=[t.name for t in fetches])
    x_t = torch.tensor(xv, requires_grad=True)
    got = module(x_t, lengths)
    for a, b, t in zip(got, expected, fetches):
        _close(a, b, t.name)
    got[-1].backward()
    assert len(grads) == 5
    for name, value in grads.items():
        _close(x_t.grad if name == "x" else module.variables[name].grad, value, f"d loss / d {name}")


def test_while_loop_with_tensor_array_and_gradients(tmp_path):
    xv = np.array([0.5, -1.25, 2.0], np.float32)
    with tf1_graph() as g:
        x = v1.placeholder(tf.float32, [3], name="x")
        w = v1.get_variable("w", initializer=np.array([[0.9, -0.2, 0.1], [0.3, 0.8, -0.5], [0.0, 0.4, 1.1]],
                                                       np.float32))
        n = v1.placeholder_with_default(5, [], name="n")
        ta = tf.TensorArray(tf.float32, size=n)

        def body(i, h, ta):
            h = tf.tanh(tf.linalg.matvec(w, h) + tf.cast(i, tf.float32))
            return i + 1, h, ta.write(i, h * 2.0)

        _, h, ta = v1.while_loop(lambda i, h, ta: i < n, body, [0, x, ta])
        stacked = ta.stack()
        loss = tf.reduce_sum(stacked * stacked) + tf.reduce_sum(h)
        fetches = [h, stacked, loss]
        expected, grads, meta, prefix = _run_and_save(g, tmp_path, fetches, {x: xv}, loss, [x])
    assert "LoopCond" in {n.op for n in meta.graph_def.node}
    module = ckpt.graph.to_torch(meta, prefix, inputs=["x:0"], outputs=[t.name for t in fetches])
    x_t = torch.tensor(xv, requires_grad=True)
    got = module(x_t)
    for a, b, t in zip(got, expected, fetches):
        _close(a, b, t.name)
    got[-1].backward()
    _close(module.variables["w"].grad, grads["w"], "d loss / d w")
    _close(x_t.grad, grads["x"], "d loss / d x")
    # The iteration count is data: feeding n changes the number of iterations, as in TensorFlow.
    short = module.run(stacked.name, {"x:0": xv, "n:0": 2})
    _close(short, expected[1][:2], "two iterations")
    zero = module.run([h.name, stacked.name], {"x:0": xv, "n:0": 0})
    _close(zero[0], xv, "no iteration")
    assert tuple(zero[1].shape) == (0, 3)


def test_nested_while_loops_and_cond_in_the_body(tmp_path):
    xv = np.array([[0.3, -0.7], [1.1, 0.2]], np.float32)
    with tf1_graph() as g:
        x = v1.placeholder(tf.float32, [2, 2], name="x")
        scale = v1.get_variable("scale", initializer=np.float32(0.75))

        def outer(i, acc):
            def inner(j, a):
                a = tf.cond(j % 2 < 1, lambda: a * scale + 1.0, lambda: tf.sin(a) - scale)
                return j + 1, a

            _, inner_acc = v1.while_loop(lambda j, a: j < i + 1, inner, [0, acc])
            return i + 1, inner_acc + tf.cast(i, tf.float32)

        _, result = v1.while_loop(lambda i, a: i < 3, outer, [0, x])
        loss = tf.reduce_sum(result * result)
        expected, grads, meta, prefix = _run_and_save(g, tmp_path, [result, loss], {x: xv}, loss, [x])
    assert len(_frames(meta.graph_def)) == 2  # the inner loop is a frame inside the outer one
    module = ckpt.graph.to_torch(meta, prefix, inputs=["x:0"], outputs=[result.name, loss.name])
    x_t = torch.tensor(xv, requires_grad=True)
    got = module(x_t)
    _close(got[0], expected[0], "result")
    _close(got[1], expected[1], "loss")
    got[1].backward()
    _close(module.variables["scale"].grad, grads["scale"], "d loss / d scale")
    _close(x_t.grad, grads["x"], "d loss / d x")


def test_frozen_dynamic_rnn_and_fetching_inside_the_loop(tmp_path):
    rnn = _cells()
    xv = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    with tf1_graph() as g:
        x = v1.placeholder(tf.float32, [2, 4, 3], name="x")
        out, _ = v1.nn.dynamic_rnn(rnn.GRUCell(3), x, dtype=tf.float32)
        final = tf.identity(out[:, -1], name="final")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            expected = sess.run(final, {x: xv})
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["final"])
    module = ckpt.graph.to_torch(frozen, outputs="final:0")
    _close(module(xv), expected, "frozen GRU")
    inside = next(n.name for n in frozen.node if "/while/" in n.name and n.op == "MatMul")
    with pytest.raises(UnsupportedOperationsError, match="inside a TF1 while loop"):
        module.run(f"{inside}:0", {"x:0": xv})


def test_tensor_arrays_follow_tensorflow(tmp_path):
    with tf1_graph() as g:
        known = tf.TensorArray(tf.float32, size=3, element_shape=[2], clear_after_read=False).write(0, [1.0, 2.0])
        unwritten = known.read(1)
        stacked = known.stack()
        grown = tf.TensorArray(tf.float32, size=1, dynamic_size=True).write(4, [1.0, 2.0])
        grown_size, grown_stack = grown.size(), grown.stack()
        scattered = tf.TensorArray(tf.float32, size=3, clear_after_read=False).scatter([2, 0], [[1.0, 2.0],
                                                                                                [3.0, 4.0]])
        gathered = scattered.gather([0, 2, 0])
        twice = tf.TensorArray(tf.float32, size=2).write(0, [1.0]).write(0, [2.0]).read(0)
        once = tf.TensorArray(tf.float32, size=2).write(0, [1.0])
        read_twice = once.read(0) + once.read(0)
        past_end = tf.TensorArray(tf.float32, size=3).write(0, [1.0]).read(3)
        good = [unwritten, stacked, grown_size, grown_stack, gathered]
        with v1.Session(graph=g) as sess:
            expected = sess.run(good)
            for bad in (twice, read_twice, past_end):
                with pytest.raises(tf.errors.InvalidArgumentError):
                    sess.run(bad)
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=[t.name for t in good])
    for a, b, t in zip(module(), expected, good):
        _close(a, b, t.name)
    assert {"TensorArrayV3", "TensorArraySizeV3", "TensorArrayGatherV3"} <= SUPPORTED_OPS
    for bad, message in ((twice, "already been written"), (read_twice, "cleared after a previous read"),
                         (past_end, "Tried to read from index 3 but array size is: 3")):
        with pytest.raises(FeedError, match=message):
            module.run(bad.name)


def test_a_loop_that_never_ends_is_an_error(monkeypatch):
    with tf1_graph() as g:
        x = v1.placeholder(tf.float32, [], name="x")
        _, y = v1.while_loop(lambda i, y: y > -1.0, lambda i, y: (i + 1, y * 0.5 + 1.0), [0, x])
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=y.name)
    from ckpt.graph.torch import control_flow as _control_flow

    monkeypatch.setattr(_control_flow, "MAX_ITERATIONS", 50)
    with pytest.raises(FeedError, match="ran 50 iterations"):
        module(1.0)


def test_unsupported_operations_inside_a_loop_are_listed_at_conversion():
    with tf1_graph() as g:
        x = v1.placeholder(tf.float32, [3], name="x")
        _, y = v1.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.math.lgamma(y) + tf.math.digamma(y)),
                             [0, x])
    with pytest.raises(UnsupportedOperationsError) as info:
        ckpt.graph.to_torch(g.as_graph_def(), outputs=y.name)
    assert {"Lgamma", "Digamma"} <= set(info.value.operations)


def _hand_made(nodes):
    from ckpt.tf.protos import graph_pb2
    from ckpt.graph import make_tensor_proto

    gd = graph_pb2.GraphDef()
    c = gd.node.add(name="x", op="Const")
    c.attr["dtype"].type = 1
    c.attr["value"].tensor.CopyFrom(make_tensor_proto(np.float32(1)))
    for name, op, inputs in nodes:
        n = gd.node.add(name=name, op=op, input=inputs)
        n.attr["T"].type = 1
        if op == "Enter":
            n.attr["frame_name"].s = b"f"
    return gd


def test_malformed_loops_are_errors_not_crashes():
    no_cond = _hand_made([("e", "Enter", ["x"]), ("m", "Merge", ["e", "n"]), ("n", "NextIteration", ["m"]),
                          ("out", "Exit", ["m"])])
    with pytest.raises(UnsupportedOperationsError, match="0 LoopCond operations in the frame"):
        ckpt.graph.to_torch(no_cond, outputs="out:0")
    float_cond = _hand_made([("e", "Enter", ["x"]), ("m", "Merge", ["e", "n"]), ("lc", "LoopCond", ["m"]),
                             ("s", "Switch", ["m", "lc"]), ("i", "Identity", ["s:1"]), ("n", "NextIteration", ["i"]),
                             ("out", "Exit", ["s"])])
    with pytest.raises(FeedError, match="not a boolean scalar"):
        ckpt.graph.to_torch(float_cond, outputs="out:0")()
