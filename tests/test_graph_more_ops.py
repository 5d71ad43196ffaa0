"""The operations of ``ckpt.graph.torch.more_ops`` against TensorFlow: values (1e-5) and, where TensorFlow has them,
gradients (torch autograd against ``tf.gradients`` of a weighted sum of the outputs, 1e-5).

Each case builds a tiny TF1 graph, runs it with ``tf.compat.v1.Session`` and converts the same GraphDef with
``to_torch``. Shapes are odd on purpose (SAME padding's extra pixel, blocks that do not divide the input before
padding), and each case asserts the graph really contains the op it is named after.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import ckpt.graph  # noqa: E402
from ckpt.errors import FeedError  # noqa: E402
from ckpt.graph.torch.interpreter import SUPPORTED_OPS  # noqa: E402

pytestmark = pytest.mark.tf

v1 = tf.compat.v1
raw = tf.raw_ops
CASES = {}


def case(name, op=None, grad=True):
    def register(fn):
        CASES[name] = (op or name.split("-")[0], fn, grad)
        return fn
    return register


class Feeds:
    def __init__(self) -> None:
        self.values = {}
        self.rng = np.random.default_rng(sum(map(ord, "more ops")))

    def ph(self, value):
        value = np.asarray(value)
        p = v1.placeholder(tf.as_dtype(value.dtype), value.shape)
        self.values[p] = value
        return p

    def f32(self, *shape):
        return self.ph(self.rng.standard_normal(shape).astype(np.float32))


# ----------------------------------------------------------------------------------------------- element-wise


@case("DivNoNan")
def _(f):
    y = f.ph(np.array([0.0, 2.0, -0.5, 0.0], np.float32))
    return raw.DivNoNan(x=f.f32(3, 4), y=y)


@case("DivNoNan-float64")
def _(f):
    return raw.DivNoNan(x=f.ph(np.array([1.0, -3.0, 0.0])), y=f.ph(np.array([0.0, 4.0, 0.0])))


# ----------------------------------------------------------------------------------------------- reordering


@case("ReverseV2")
def _(f):
    return tf.reverse(f.f32(2, 3, 5), axis=[1, -1])


@case("ReverseSequence")
def _(f):
    return tf.reverse_sequence(f.f32(5, 3, 2), f.ph(np.array([5, 0, 3], np.int64)), seq_axis=0, batch_axis=1)


@case("DepthToSpace-odd")
def _(f):
    return tf.nn.depth_to_space(f.f32(2, 3, 5, 12), 2)


@case("DepthToSpace-block3")
def _(f):
    return tf.nn.depth_to_space(f.f32(1, 2, 3, 18), 3)


@case("SpaceToDepth")
def _(f):
    return tf.nn.space_to_depth(f.f32(2, 6, 4, 3), 2)


@case("SpaceToDepth-block3")
def _(f):
    return tf.nn.space_to_depth(f.f32(1, 6, 9, 2), 3)


@case("SpaceToBatchND")
def _(f):
    return tf.space_to_batch_nd(f.f32(2, 5, 7, 3), [2, 3], [[1, 0], [2, 0]])


@case("SpaceToBatchND-1d")
def _(f):
    return tf.space_to_batch_nd(f.f32(3, 5, 2), [2], [[0, 1]])


@case("BatchToSpaceND")
def _(f):
    return tf.batch_to_space(f.f32(12, 3, 2, 2), [2, 3], [[1, 0], [0, 2]])


@case("BatchToSpaceND-atrous", op="SpaceToBatchND")
def _(f):
    return tf.nn.atrous_conv2d(f.f32(1, 7, 9, 3), f.f32(3, 3, 3, 4), 2, "SAME")


@case("BatchToSpaceND-atrous-valid", op="BatchToSpaceND")
def _(f):
    return tf.nn.atrous_conv2d(f.f32(2, 11, 10, 2), f.f32(3, 2, 2, 3), 3, "VALID")


# ----------------------------------------------------------------------------------------------- 3-D


@case("Conv3D-same-strided")
def _(f):
    return tf.nn.conv3d(f.f32(2, 5, 6, 7, 3), f.f32(3, 2, 3, 3, 4), [1, 2, 1, 2, 1], "SAME")


@case("Conv3D-valid-dilated", grad=False)  # TensorFlow (oneDNN) cannot differentiate it on CPU
def _(f):
    return tf.nn.conv3d(f.f32(1, 6, 5, 7, 2), f.f32(2, 2, 3, 2, 3), [1, 1, 1, 1, 1], "VALID",
                        dilations=[1, 2, 1, 2, 1])


@case("Conv3D-ncdhw")
def _(f):
    return tf.nn.conv3d(f.f32(1, 3, 5, 4, 7), f.f32(3, 3, 2, 3, 2), [1, 1, 2, 1, 2], "SAME", data_format="NCDHW")


@case("Conv3DBackpropInputV2-same")
def _(f):
    return raw.Conv3DBackpropInputV2(input_sizes=[2, 5, 6, 7, 3], filter=f.f32(3, 2, 3, 3, 4),
                                     out_backprop=f.f32(2, 3, 6, 4, 4), strides=[1, 2, 1, 2, 1], padding="SAME")


@case("Conv3DBackpropInputV2-valid")
def _(f):
    return raw.Conv3DBackpropInputV2(input_sizes=[1, 7, 6, 5, 2], filter=f.f32(2, 3, 2, 2, 3),
                                     out_backprop=f.f32(1, 3, 2, 2, 3), strides=[1, 2, 2, 2, 1], padding="VALID")


@case("Conv3DBackpropInputV2-ncdhw-dilated")
def _(f):
    return raw.Conv3DBackpropInputV2(input_sizes=[1, 2, 5, 6, 4], filter=f.f32(2, 2, 2, 2, 3),
                                     out_backprop=f.f32(1, 3, 5, 6, 4), strides=[1, 1, 1, 1, 1], padding="SAME",
                                     data_format="NCDHW", dilations=[1, 1, 2, 1, 2])


@case("MaxPool3D-same")
def _(f):
    return tf.nn.max_pool3d(f.f32(1, 5, 6, 7, 2), [1, 2, 3, 2, 1], [1, 2, 2, 2, 1], "SAME")


@case("MaxPool3D-valid-ncdhw")
def _(f):
    return tf.nn.max_pool3d(f.f32(2, 3, 5, 4, 7), [1, 1, 3, 2, 2], [1, 1, 1, 2, 3], "VALID", data_format="NCDHW")


@case("AvgPool3D-same")
def _(f):
    return tf.nn.avg_pool3d(f.f32(1, 5, 6, 7, 2), [1, 3, 3, 2, 1], [1, 2, 2, 2, 1], "SAME")


@case("AvgPool3D-valid")
def _(f):
    return tf.nn.avg_pool3d(f.f32(2, 4, 5, 6, 3), [1, 2, 2, 3, 1], [1, 1, 2, 3, 1], "VALID")


@case("AvgPool3D-same-ncdhw")
def _(f):
    return tf.nn.avg_pool3d(f.f32(1, 2, 5, 4, 3), [1, 1, 2, 3, 2], [1, 1, 3, 1, 2], "SAME", data_format="NCDHW")


# ----------------------------------------------------------------------------------------------- top k


@case("TopKV2-ties-int", grad=False)
def _(f):
    x = f.ph(np.array([[3, 1, 3, 2, 3, 1, 0, 2, 3], [5, 5, 5, 5, 5, 5, 5, 5, 5], [0, 9, 1, 9, 2, 9, 3, 9, 4]],
                      np.int32))
    return list(tf.math.top_k(x, 4))


@case("TopKV2-ties-float")
def _(f):
    x = f.ph(np.array([[0.5, -1.0, 0.5, 2.0, 0.5, 2.0, -0.0, 0.0]], np.float32))
    return list(tf.math.top_k(x, 5))


@case("TopKV2-k-equals-n")
def _(f):
    x = f.ph(np.array([[1.0, 3.0, 1.0, 3.0, 2.0], [4.0, 4.0, 0.0, 4.0, 1.0]], np.float32))
    return list(tf.math.top_k(x, 5))


@case("TopKV2-k1-3d")
def _(f):
    x = f.ph(np.array([[[1.0, 7.0, 7.0], [2.0, 2.0, -1.0]], [[0.0, 0.0, 0.0], [5.0, 6.0, 6.0]]], np.float32))
    return list(tf.math.top_k(x, 1))


@case("TopKV2-k0", grad=False)
def _(f):
    return list(tf.math.top_k(f.f32(2, 3), 0))


# ----------------------------------------------------------------------------------------------- the harness


def _compare(name, got, expected):
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, TensorFlow {expected.dtype}"
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, TensorFlow {expected.shape}"
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_and_gradient_match_tensorflow(name):
    op, build, grad = CASES[name]
    g = tf.Graph()
    feeds = Feeds()
    with g.as_default():
        out = build(feeds)
        outs = out if isinstance(out, list) else [out]
        floats = [p for p in feeds.values if p.dtype.is_floating]
        weights = [feeds.rng.standard_normal(o.shape.as_list()).astype(o.dtype.as_numpy_dtype)
                   for o in outs if o.dtype.is_floating]
        objective = tf.add_n([tf.reduce_sum(o * w) for o, w in zip([o for o in outs if o.dtype.is_floating],
                                                                   weights)]) if grad else None
        grads = tf.gradients(objective, floats) if grad else []
        with v1.Session(graph=g) as sess:
            expected = sess.run(outs + grads, feeds.values)
    assert op in {o.type for o in g.get_operations()} and op in SUPPORTED_OPS
    names = [t.name for t in outs]
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=names)
    leaves = {p.name: torch.tensor(v, requires_grad=p in floats) for p, v in feeds.values.items()}
    got = module.run(names, leaves)
    for n, a, b in zip(names, got, expected):
        _compare(f"{name} {n}", a, b)
    if grad:
        float_outs = [a for a in got if a.dtype.is_floating_point]
        torch_objective = sum((a * torch.from_numpy(w)).sum() for a, w in zip(float_outs, weights))
        torch_objective.backward()
        for p, expected_grad in zip(floats, expected[len(outs):]):
            leaf = leaves[p.name]
            value = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            _compare(f"{name} d/d{p.name}", value, expected_grad)


def test_top_k_unsorted_returns_the_same_elements():
    """With sorted=False TensorFlow's order is unspecified (a heap's): the same k (value, index) pairs come back."""
    x = np.random.default_rng(5).integers(0, 4, (3, 11)).astype(np.float32)
    g = tf.Graph()
    with g.as_default():
        values, indices = tf.math.top_k(v1.placeholder_with_default(x, x.shape, name="x"), 4, sorted=False)
        with v1.Session(graph=g) as sess:
            tf_values, tf_indices = sess.run([values, indices])
    got_values, got_indices = ckpt.graph.to_torch(g.as_graph_def(), outputs=[values.name, indices.name])()
    for row in range(3):
        assert sorted(zip(tf_indices[row], tf_values[row])) == sorted(zip(got_indices[row].tolist(),
                                                                          got_values[row].tolist()))


@pytest.mark.parametrize("op", ["DepthToSpace", "SpaceToDepth"])
def test_depth_space_nchw_is_nhwc_in_another_layout(op):
    """TensorFlow's CPU kernels refuse NCHW for these (its GPU kernels take it, with NHWC's element order); the NCHW
    graph runs here and equals TensorFlow's NHWC result transposed."""
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 8)).astype(np.float32)  # NHWC
    fn = tf.nn.depth_to_space if op == "DepthToSpace" else tf.nn.space_to_depth
    x = x[:, :2] if op == "SpaceToDepth" else x
    with tf.Graph().as_default() as g:
        with v1.Session(graph=g) as sess:
            expected = sess.run(fn(tf.constant(x), 2)).transpose(0, 3, 1, 2)
    with tf.Graph().as_default() as g:  # a separate graph: TensorFlow's CPU session cannot even hold this node
        nchw = fn(v1.placeholder(tf.float32, [None, 8, None, None], name="x"), 2, data_format="NCHW")
    got = ckpt.graph.to_torch(g.as_graph_def(), outputs=nchw.name)(x.transpose(0, 3, 1, 2))
    _compare(op, got, expected)


def test_bad_block_shapes_are_errors():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, None, None, 4], name="x")
        s2d = tf.nn.space_to_depth(x, 2)
        top = tf.math.top_k(x, v1.placeholder_with_default(5, [], name="k"))
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=[s2d.name])
    with pytest.raises(FeedError, match="divisible by block_size"):
        module(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(FeedError, match="at least k columns"):
        ckpt.graph.to_torch(g.as_graph_def(), outputs=top.indices.name)(np.zeros((1, 2, 2, 4), np.float32))
