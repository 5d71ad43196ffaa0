"""Every operation ``ckpt.graph.to_torch`` runs, checked against TensorFlow.

Each case builds a tiny TF1 graph in ``tf.Graph()``, runs it with ``tf.compat.v1.Session``, converts the same
GraphDef with ``to_torch`` and compares ``module.run`` with ``sess.run``: same dtype, same shape, values equal
(integers, booleans) or within the case's tolerance (floats; 1e-5 unless stated). Each case also asserts that the
graph really contains the op type it is named after, so a TensorFlow API that starts emitting a different op cannot
turn a case into a no-op.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import ckpt.graph  # noqa: E402
from ckpt.graph.torch.interpreter import SUPPORTED_OPS  # noqa: E402

pytestmark = pytest.mark.tf

v1 = tf.compat.v1


class Case:
    def __init__(self, name: str, op: str, build, tol: float = 1e-5) -> None:
        self.name, self.op, self.build, self.tol = name, op, build, tol


CASES: dict[str, Case] = {}


def case(name: str, op: str | None = None, tol: float = 1e-5):
    def register(fn):
        CASES[name] = Case(name, op or name.split("-")[0], fn, tol)
        return fn
    return register


class Feeds:
    """Makes placeholders and remembers what to feed them."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.rng = np.random.default_rng(sum(map(ord, "ckpt")))

    def ph(self, value, name=None, shape="same"):
        value = np.asarray(value)
        dtype = tf.as_dtype(value.dtype)
        p = v1.placeholder(dtype, value.shape if shape == "same" else shape, name=name)
        self.values[p] = value
        return p

    def f32(self, *shape, low=None, high=None):
        if low is not None:
            return self.ph(self.rng.uniform(low, high, shape).astype(np.float32))
        return self.ph(self.rng.standard_normal(shape).astype(np.float32))

    def i32(self, *shape, low=-10, high=10):
        return self.ph(self.rng.integers(low, high, shape).astype(np.int32))

    def boolean(self, *shape):
        return self.ph(self.rng.random(shape) > 0.5)


# ----------------------------------------------------------------------------------------------- element-wise


@case("Add")
def _(f):
    return tf.raw_ops.Add(x=f.f32(2, 3), y=f.f32(3))


@case("AddV2")
def _(f):
    return tf.add(f.f32(2, 1, 3), f.f32(4, 1))


@case("AddV2-int")
def _(f):
    return tf.add(f.i32(3, 2), f.i32(2))


@case("Sub")
def _(f):
    return tf.subtract(f.f32(2, 3), f.f32(2, 1))


@case("Mul")
def _(f):
    return tf.multiply(f.f32(2, 3), f.f32(1, 3))


@case("RealDiv")
def _(f):
    return tf.divide(f.f32(2, 3), f.f32(3, low=0.5, high=2.0))


@case("Div-float")
def _(f):
    return tf.raw_ops.Div(x=f.f32(4), y=f.f32(4, low=0.5, high=2.0))


@case("Div-int")
def _(f):
    return tf.raw_ops.Div(x=f.ph(np.array([7, -7, 7, -7, 0], np.int32)), y=f.ph(np.array([2, 2, -2, -2, 3], np.int32)))


@case("FloorDiv-int")
def _(f):
    return tf.math.floordiv(f.ph(np.array([7, -7, 7, -7, 0], np.int32)), f.ph(np.array([2, 2, -2, -2, 3], np.int32)))


@case("FloorDiv-float")
def _(f):
    return tf.math.floordiv(f.ph(np.array([7.5, -7.5, 7.5, -7.5], np.float32)),
                            f.ph(np.array([2, 2, -2, -2], np.float32)))


@case("FloorMod-int")
def _(f):
    return tf.math.floormod(f.ph(np.array([7, -7, 7, -7, 0], np.int32)), f.ph(np.array([3, 3, -3, -3, 3], np.int32)))


@case("FloorMod-float")
def _(f):
    return tf.math.floormod(f.ph(np.array([7.5, -7.5, 7.5, -7.5, 6.0], np.float32)),
                            f.ph(np.array([2, 2, -2, -2, 3], np.float32)))


@case("Maximum")
def _(f):
    return tf.maximum(f.f32(3, 2), f.f32(2))


@case("Minimum")
def _(f):
    return tf.minimum(f.f32(3, 2), f.f32(2))


@case("Pow")
def _(f):
    return tf.pow(f.f32(3, low=0.1, high=3.0), f.f32(3))


@case("Pow-int")
def _(f):
    return tf.pow(f.i32(4, low=-3, high=4), f.i32(4, low=0, high=4))


@case("SquaredDifference")
def _(f):
    return tf.math.squared_difference(f.f32(2, 3), f.f32(3))


_UNARY = {
    "Square": (tf.square, None), "Sqrt": (tf.sqrt, (0.1, 4.0)), "Rsqrt": (tf.math.rsqrt, (0.1, 4.0)),
    "Exp": (tf.exp, None), "Log": (tf.math.log, (0.1, 4.0)), "Neg": (tf.negative, None), "Abs": (tf.abs, None),
    "Floor": (tf.floor, None), "Ceil": (tf.math.ceil, None), "Sign": (tf.sign, None), "Tanh": (tf.tanh, None),
    "Sigmoid": (tf.sigmoid, None), "Relu": (tf.nn.relu, None), "Elu": (tf.nn.elu, None), "Selu": (tf.nn.selu, None),
    "Softplus": (tf.nn.softplus, None), "Reciprocal": (tf.math.reciprocal, (0.5, 3.0)), "Erf": (tf.math.erf, None),
    "Softsign": (tf.nn.softsign, None), "Log1p": (tf.math.log1p, (0.0, 3.0)),
}
for _name, (_fn, _range) in _UNARY.items():
    def _make(fn=_fn, rng=_range):
        def build(f):
            x = f.f32(3, 4) if rng is None else f.f32(3, 4, low=rng[0], high=rng[1])
            return fn(x * 3.0) if fn in (tf.floor, tf.math.ceil, tf.sign) else fn(x)
        return build
    case(_name)(_make())


@case("Round")
def _(f):
    return tf.round(f.ph(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], np.float32)))


@case("Relu6")
def _(f):
    return tf.nn.relu6(f.f32(3, 4) * 5.0)


@case("LeakyRelu")
def _(f):
    return tf.nn.leaky_relu(f.f32(3, 4), alpha=0.3)


@case("Softmax")
def _(f):
    return tf.nn.softmax(f.f32(3, 5) * 4.0)


@case("LogSoftmax")
def _(f):
    return tf.nn.log_softmax(f.f32(3, 5) * 4.0)


@case("AddN")
def _(f):
    return tf.add_n([f.f32(2, 3), f.f32(2, 3), f.f32(2, 3)])


@case("ClipByValue")
def _(f):
    # Bounds crossing each other (max < min somewhere) show which one wins.
    return tf.raw_ops.ClipByValue(t=f.f32(3, 4), clip_value_min=f.ph(np.float32(-0.5)),
                                  clip_value_max=f.f32(3, 4) + 0.5)


@case("L2Loss")
def _(f):
    return tf.nn.l2_loss(f.f32(3, 4))


# ----------------------------------------------------------------------------------------------- linear algebra


@case("MatMul")
def _(f):
    return tf.matmul(f.f32(2, 3), f.f32(3, 4))


@case("MatMul-transpose_a")
def _(f):
    return tf.matmul(f.f32(3, 2), f.f32(3, 4), transpose_a=True)


@case("MatMul-transpose_b")
def _(f):
    return tf.matmul(f.f32(2, 3), f.f32(4, 3), transpose_b=True)


@case("MatMul-transpose_ab")
def _(f):
    return tf.matmul(f.f32(3, 2), f.f32(4, 3), transpose_a=True, transpose_b=True)


@case("BatchMatMul")
def _(f):
    return tf.raw_ops.BatchMatMul(x=f.f32(2, 3, 4), y=f.f32(2, 5, 4), adj_y=True)


@case("BatchMatMulV2")
def _(f):
    return tf.raw_ops.BatchMatMulV2(x=f.f32(2, 1, 3, 4), y=f.f32(3, 4, 2))


@case("BatchMatMulV3")
def _(f):
    return tf.raw_ops.BatchMatMulV3(x=f.f32(2, 4, 3), y=f.f32(2, 4, 5), Tout=tf.float32, adj_x=True)


@case("BiasAdd-NHWC")
def _(f):
    return tf.nn.bias_add(f.f32(2, 3, 3, 4), f.f32(4))


@case("BiasAdd-NCHW")
def _(f):
    return tf.nn.bias_add(f.f32(2, 4, 3, 3), f.f32(4), data_format="NCHW")


@case("Einsum")
def _(f):
    return tf.einsum("bij,bjk->bik", f.f32(2, 3, 4), f.f32(2, 4, 5))


# ----------------------------------------------------------------------------------------------- convolutions


@case("Conv2D-SAME", tol=1e-4)
def _(f):
    return tf.nn.conv2d(f.f32(2, 7, 6, 3), f.f32(3, 3, 3, 4), strides=1, padding="SAME")


@case("Conv2D-SAME-stride2-asymmetric", tol=1e-4)
def _(f):
    return tf.nn.conv2d(f.f32(2, 8, 7, 3), f.f32(4, 3, 3, 5), strides=[1, 2, 2, 1], padding="SAME")


@case("Conv2D-VALID-stride", tol=1e-4)
def _(f):
    return tf.nn.conv2d(f.f32(1, 9, 8, 2), f.f32(3, 2, 2, 3), strides=[1, 2, 3, 1], padding="VALID")


@case("Conv2D-dilated", tol=1e-4)
def _(f):
    return tf.nn.conv2d(f.f32(1, 9, 9, 2), f.f32(3, 3, 2, 3), strides=1, padding="SAME", dilations=2)


@case("Conv2D-EXPLICIT", tol=1e-4)
def _(f):
    return tf.nn.conv2d(f.f32(1, 6, 6, 2), f.f32(3, 3, 2, 3), strides=2, padding=[[0, 0], [1, 2], [2, 0], [0, 0]])


@case("DepthwiseConv2dNative", tol=1e-4)
def _(f):
    return tf.nn.depthwise_conv2d(f.f32(2, 7, 7, 3), f.f32(3, 3, 3, 2), strides=[1, 2, 2, 1], padding="SAME")


@case("DepthwiseConv2dNative-VALID", tol=1e-4)
def _(f):
    return tf.raw_ops.DepthwiseConv2dNative(input=f.f32(1, 6, 6, 2), filter=f.f32(2, 2, 2, 3), strides=[1, 1, 1, 1],
                                            padding="VALID")


@case("Conv2DBackpropInput-SAME", tol=1e-4)
def _(f):
    return tf.nn.conv2d_transpose(f.f32(2, 4, 4, 3), f.f32(3, 3, 5, 3), output_shape=[2, 8, 8, 5], strides=2,
                                  padding="SAME")


@case("Conv2DBackpropInput-SAME-odd", tol=1e-4)
def _(f):
    return tf.nn.conv2d_transpose(f.f32(1, 4, 4, 3), f.f32(4, 4, 2, 3), output_shape=[1, 7, 7, 2], strides=2,
                                  padding="SAME")


@case("Conv2DBackpropInput-VALID", tol=1e-4)
def _(f):
    return tf.nn.conv2d_transpose(f.f32(1, 3, 3, 2), f.f32(3, 3, 4, 2), output_shape=[1, 8, 8, 4], strides=2,
                                  padding="VALID")


@case("MaxPool-SAME")
def _(f):
    return tf.nn.max_pool2d(f.f32(2, 7, 7, 3), ksize=3, strides=2, padding="SAME")


@case("MaxPool-VALID")
def _(f):
    return tf.nn.max_pool2d(f.f32(2, 7, 6, 3), ksize=[1, 2, 3, 1], strides=[1, 2, 1, 1], padding="VALID")


@case("MaxPool-SAME-negative")
def _(f):
    return tf.nn.max_pool2d(-tf.abs(f.f32(1, 5, 5, 2)) - 1.0, ksize=2, strides=2, padding="SAME")


@case("AvgPool-SAME")
def _(f):
    return tf.nn.avg_pool2d(f.f32(2, 7, 7, 3), ksize=3, strides=2, padding="SAME")


@case("AvgPool-VALID")
def _(f):
    return tf.nn.avg_pool2d(f.f32(2, 6, 6, 3), ksize=2, strides=2, padding="VALID")


@case("LRN")
def _(f):
    return tf.nn.local_response_normalization(f.f32(2, 3, 3, 7), depth_radius=2, bias=1.5, alpha=0.3, beta=0.75)


# ----------------------------------------------------------------------------------------------- normalization


def _bn_inputs(f, c=3):
    return f.f32(2, 4, 4, c), f.f32(c, low=0.5, high=1.5), f.f32(c), f.f32(c), f.f32(c, low=0.5, high=1.5)


@case("FusedBatchNormV3-training")
def _(f):
    x, scale, offset, _, _ = _bn_inputs(f)
    y, mean, var = v1.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3, is_training=True)
    return [y, mean, var]


@case("FusedBatchNormV3-inference")
def _(f):
    x, scale, offset, mean, var = _bn_inputs(f)
    y, m, v = v1.nn.fused_batch_norm(x, scale, offset, mean=mean, variance=var, epsilon=1e-3, is_training=False)
    return [y, m, v]


@case("FusedBatchNormV3-avg-factor")
def _(f):
    x, scale, offset, mean, var = _bn_inputs(f)
    out = tf.raw_ops.FusedBatchNormV3(x=x, scale=scale, offset=offset, mean=mean, variance=var, epsilon=1e-3,
                                      exponential_avg_factor=0.25, is_training=True)
    return [out.y, out.batch_mean, out.batch_variance]


@case("FusedBatchNorm-training")
def _(f):
    x, scale, offset, _, _ = _bn_inputs(f)
    empty = tf.constant([], tf.float32)
    out = tf.raw_ops.FusedBatchNorm(x=x, scale=scale, offset=offset, mean=empty, variance=empty, is_training=True)
    return [out.y, out.batch_mean, out.batch_variance]


@case("FusedBatchNormV2-inference")
def _(f):
    x, scale, offset, mean, var = _bn_inputs(f)
    out = tf.raw_ops.FusedBatchNormV2(x=x, scale=scale, offset=offset, mean=mean, variance=var, epsilon=0.01,
                                      is_training=False)
    return [out.y]


# ----------------------------------------------------------------------------------------------- shapes


@case("Reshape")
def _(f):
    return tf.reshape(f.f32(2, 3, 4), [-1, 4])


@case("Squeeze")
def _(f):
    return tf.squeeze(f.f32(1, 3, 1, 2), axis=[-2])


@case("Squeeze-all")
def _(f):
    return tf.squeeze(f.f32(1, 3, 1, 2))


@case("ExpandDims")
def _(f):
    return [tf.expand_dims(f.f32(2, 3), -1), tf.expand_dims(f.f32(2, 3), 0)]


@case("Transpose")
def _(f):
    return tf.transpose(f.f32(2, 3, 4), [2, 0, 1])


@case("ConcatV2")
def _(f):
    return tf.concat([f.f32(2, 3), f.f32(2, 1)], axis=-1)


@case("Concat")
def _(f):
    return tf.raw_ops.Concat(concat_dim=0, values=[f.f32(2, 3), f.f32(1, 3)])


@case("Pack")
def _(f):
    return tf.stack([f.f32(2, 3), f.f32(2, 3)], axis=1)


@case("Unpack")
def _(f):
    return tf.unstack(f.f32(2, 3, 4), axis=1)


@case("Split")
def _(f):
    return tf.split(f.f32(2, 6), 3, axis=1)


@case("SplitV")
def _(f):
    return tf.split(f.f32(7, 2), [2, -1, 1], axis=0)


@case("Slice")
def _(f):
    return tf.slice(f.f32(4, 5, 3), [1, 0, 1], [2, -1, 2])


def _strided(index):
    def build(f):
        x = f.f32(4, 5, 6)
        return x[index(tf)]
    return build


case("StridedSlice-basic")(_strided(lambda tf: (slice(1, 3), slice(None, None, 2))))
case("StridedSlice-negative-stride")(_strided(lambda tf: (slice(None, None, -1), slice(4, 0, -2))))
case("StridedSlice-ellipsis-shrink")(_strided(lambda tf: (Ellipsis, 1)))
case("StridedSlice-newaxis")(_strided(lambda tf: (slice(None), tf.newaxis, slice(2, None))))
case("StridedSlice-shrink-negative")(_strided(lambda tf: (-1, slice(-3, None))))
case("StridedSlice-mixed")(_strided(lambda tf: (slice(1, -1), Ellipsis, tf.newaxis, slice(None, None, -3))))


@case("StridedSlice-begin-end-masks")
def _(f):
    x = f.f32(5, 6)
    return tf.strided_slice(x, [1, 2], [4, 5], [1, 1], begin_mask=1, end_mask=2)


@case("Pad")
def _(f):
    return tf.pad(f.f32(2, 3), [[1, 0], [2, 1]])


@case("PadV2")
def _(f):
    return tf.pad(f.f32(2, 3), [[1, 2], [0, 1]], constant_values=3.5)


@case("MirrorPad-REFLECT")
def _(f):
    return tf.pad(f.f32(3, 4), [[1, 2], [3, 2]], mode="REFLECT")


@case("MirrorPad-SYMMETRIC")
def _(f):
    return tf.pad(f.f32(3, 4), [[2, 1], [0, 3]], mode="SYMMETRIC")


@case("Tile")
def _(f):
    return tf.tile(f.f32(2, 3), [2, 3])


@case("Shape")
def _(f):
    x = f.ph(np.zeros((2, 3, 4), np.float32), shape=[None, 3, None])
    return [tf.shape(x), tf.shape(x, out_type=tf.int64)]


@case("Size")
def _(f):
    return tf.size(f.ph(np.zeros((2, 3), np.float32), shape=None))


@case("Rank")
def _(f):
    return tf.rank(f.ph(np.zeros((2, 3), np.float32), shape=None))


@case("Fill")
def _(f):
    return tf.fill(tf.shape(f.f32(2, 3)), 2.5)


@case("Range")
def _(f):
    return [tf.range(f.ph(np.int32(2)), 11, 3), tf.range(0.5, 2.0, 0.25)]


@case("ZerosLike")
def _(f):
    return tf.raw_ops.ZerosLike(x=f.f32(2, 3))


@case("OnesLike")
def _(f):
    return tf.raw_ops.OnesLike(x=f.i32(2, 3))


@case("Cast")
def _(f):
    x = f.ph(np.array([-2.7, -0.5, 0.0, 0.5, 2.7], np.float32))
    return [tf.cast(x, tf.int32), tf.cast(x, tf.bool), tf.cast(tf.cast(x, tf.int64), tf.float64)]


@case("GatherV2")
def _(f):
    return [tf.gather(f.f32(5, 3), f.ph(np.array([4, 0, 2, 2], np.int32))),
            tf.gather(f.f32(2, 5, 3), f.ph(np.array([[1, 0], [4, 4]], np.int64)), axis=1)]


@case("OneHot")
def _(f):
    idx = f.ph(np.array([0, 3, -1, 2], np.int32))
    return [tf.one_hot(idx, 4), tf.one_hot(idx, 3, on_value=5.0, off_value=-1.0, axis=0)]


@case("BroadcastTo")
def _(f):
    return tf.broadcast_to(f.f32(3, 1), [2, 3, 4])


@case("Cumsum")
def _(f):
    x = f.f32(3, 4)
    return [tf.cumsum(x, axis=1), tf.cumsum(x, axis=0, exclusive=True, reverse=True)]


@case("Where")
def _(f):
    return tf.where(f.boolean(3, 4))


# ----------------------------------------------------------------------------------------------- reductions


@case("Mean")
def _(f):
    x = f.f32(2, 3, 4)
    return [tf.reduce_mean(x, axis=[0, 2]), tf.reduce_mean(x, axis=-1, keepdims=True), tf.reduce_mean(x)]


@case("Mean-int")
def _(f):
    return tf.reduce_mean(f.ph(np.array([[1, 2, 4], [-3, -4, 5]], np.int32)), axis=1)


@case("Sum")
def _(f):
    return [tf.reduce_sum(f.f32(2, 3, 4), axis=1, keepdims=True), tf.reduce_sum(f.i32(3, 4), axis=0)]


@case("Max")
def _(f):
    return tf.reduce_max(f.f32(2, 3, 4), axis=[1, 2])


@case("Min")
def _(f):
    return tf.reduce_min(f.f32(2, 3, 4), axis=0, keepdims=True)


@case("Prod")
def _(f):
    return [tf.reduce_prod(f.f32(2, 3, 4), axis=[0, 2]), tf.reduce_prod(f.i32(2, 3, low=-3, high=4), axis=1)]


@case("All")
def _(f):
    return tf.reduce_all(f.boolean(3, 4), axis=1, keepdims=True)


@case("Any")
def _(f):
    return tf.reduce_any(f.boolean(3, 4), axis=[0, 1])


@case("ArgMax")
def _(f):
    x = f.ph(np.array([[1.0, 3.0, 3.0], [2.0, -1.0, 0.0]], np.float32))
    return [tf.argmax(x, 1), tf.argmax(x, 0, output_type=tf.int32)]


@case("ArgMin")
def _(f):
    return tf.argmin(f.f32(3, 4), axis=-1)


# ----------------------------------------------------------------------------------------------- comparisons


for _name, _fn in {"Equal": tf.equal, "NotEqual": tf.not_equal, "Less": tf.less, "LessEqual": tf.less_equal,
                   "Greater": tf.greater, "GreaterEqual": tf.greater_equal}.items():
    def _make_cmp(fn=_fn):
        def build(f):
            return fn(f.i32(3, 4, low=0, high=3), f.i32(4, low=0, high=3))
        return build
    case(_name)(_make_cmp())


@case("LogicalAnd")
def _(f):
    return tf.logical_and(f.boolean(3, 4), f.boolean(4))


@case("LogicalOr")
def _(f):
    return tf.logical_or(f.boolean(3, 4), f.boolean(3, 4))


@case("LogicalNot")
def _(f):
    return tf.logical_not(f.boolean(3, 4))


@case("Select")
def _(f):
    return [v1.where(f.boolean(3), f.f32(3, 2), f.f32(3, 2)), v1.where(f.boolean(2, 3), f.f32(2, 3), f.f32(2, 3))]


@case("SelectV2")
def _(f):
    return tf.where(f.boolean(3, 1), f.f32(3, 4), f.f32(4))


# ----------------------------------------------------------------------------------------------- plumbing and losses


@case("Identity")
def _(f):
    return tf.identity(f.f32(2, 3))


@case("IdentityN")
def _(f):
    return tf.identity_n([f.f32(2), f.i32(3)])


@case("StopGradient")
def _(f):
    return tf.stop_gradient(f.f32(2, 3))


@case("Const")
def _(f):
    return [tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3)), tf.constant(7, tf.int64),
            tf.constant([True, False])]


@case("PlaceholderWithDefault")
def _(f):
    unfed = v1.placeholder_with_default(tf.constant([1.0, 2.0]), [2])
    fed = v1.placeholder_with_default(tf.constant([1.0, 2.0]), [None])
    f.values[fed] = np.array([5.0, 6.0, 7.0], np.float32)
    return [unfed * 2.0, fed * 2.0]


@case("SoftmaxCrossEntropyWithLogits")
def _(f):
    labels = tf.nn.softmax(f.f32(4, 5))
    return tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=f.f32(4, 5) * 3.0, labels=labels)


@case("SparseSoftmaxCrossEntropyWithLogits")
def _(f):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=f.ph(np.array([0, 4, 2], np.int32)),
                                                          logits=f.f32(3, 5) * 3.0)


# ----------------------------------------------------------------------------------------------- less common


@case("Sin")
def _(f):
    return tf.sin(f.f32(3, 4))


@case("Cos")
def _(f):
    return tf.cos(f.f32(3, 4))


@case("Expm1")
def _(f):
    return tf.math.expm1(f.f32(3, 4))


@case("Inv")
def _(f):
    return tf.raw_ops.Inv(x=f.f32(3, 4, low=0.5, high=2.0))


@case("IsNan")
def _(f):
    x = f.ph(np.array([1.0, np.nan, np.inf, -np.inf], np.float32))
    return [tf.math.is_nan(x), tf.math.is_inf(x), tf.math.is_finite(x)]


@case("TruncateDiv")
def _(f):
    return tf.truncatediv(f.ph(np.array([7, -7, 7, -7], np.int32)), f.ph(np.array([2, 2, -2, -2], np.int32)))


@case("TruncateMod")
def _(f):
    return [tf.truncatemod(f.ph(np.array([7, -7, 7, -7], np.int32)), f.ph(np.array([3, 3, -3, -3], np.int32))),
            tf.raw_ops.Mod(x=f.ph(np.array([7.5, -7.5], np.float32)), y=f.ph(np.array([2.0, 2.0], np.float32)))]


@case("ShapeN")
def _(f):
    return tf.raw_ops.ShapeN(input=[f.f32(2, 3), f.f32(4)])


@case("MaxPoolV2")
def _(f):
    return tf.raw_ops.MaxPoolV2(input=f.f32(1, 5, 5, 2), ksize=f.ph(np.array([1, 2, 2, 1], np.int32)),
                                strides=f.ph(np.array([1, 2, 2, 1], np.int32)), padding="SAME")


@case("BiasAddV1")
def _(f):
    return tf.raw_ops.BiasAddV1(value=f.f32(2, 3, 4), bias=f.f32(4))


@case("Gather")
def _(f):
    return tf.raw_ops.Gather(params=f.f32(5, 3), indices=f.ph(np.array([[4, 0], [1, 1]], np.int32)))


@case("EnsureShape")
def _(f):
    return tf.ensure_shape(f.ph(np.zeros((2, 3), np.float32), shape=None), [None, 3])


@case("CheckNumerics")
def _(f):
    return tf.debugging.check_numerics(f.f32(2, 3), "bad")


@case("Snapshot")
def _(f):
    return [tf.raw_ops.Snapshot(input=f.f32(2, 3)), tf.raw_ops.PreventGradient(input=f.f32(2))]


@case("PartitionedCall")
def _(f):
    @tf.function
    def affine(a, b):
        return tf.nn.relu(a * b + 1.0), a - b

    return list(affine(f.f32(2, 3), f.f32(3)))


# ----------------------------------------------------------------------------------------------- the harness


def _compare(name: str, got, expected, tol: float) -> None:
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, TensorFlow {expected.dtype}"
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, TensorFlow {expected.shape}"
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=name)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_tensorflow(name):
    c = CASES[name]
    g = tf.Graph()
    feeds = Feeds()
    with g.as_default():
        out = c.build(feeds)
        fetches = list(out) if isinstance(out, (list, tuple)) else [out]
        with v1.Session(graph=g) as sess:
            expected = sess.run(fetches, feeds.values)
    types = {op.type for op in g.get_operations()}
    assert c.op in types, f"{name}: the graph has no {c.op} ({sorted(types)})"
    assert c.op in SUPPORTED_OPS
    names = [t.name for t in fetches]
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=names)
    got = module.run(names, {p.name: value for p, value in feeds.values.items()})
    for n, a, b in zip(names, got, expected):
        _compare(f"{name} {n}", a, b, c.tol)
    # module(...) gives the same as run(...).
    again = module(**{p.op.name: value for p, value in feeds.values.items()})
    again = again if isinstance(again, tuple) else (again,)
    for n, a, b in zip(names, again, expected):
        _compare(f"{name} {n} (forward)", a, b, c.tol)


def test_noop_fetch_returns_none():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2], name="x")
        tf.identity(x * 2.0, name="y")
        tf.no_op(name="nothing")
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs="y:0")
    assert module.run(["nothing", "y:0"], {"x:0": [1.0, 2.0]})[0] is None


def test_batch_norm_with_global_normalization():
    """TensorFlow 2.21 refuses to build this op (removed in GraphDef version 9), so old graphs are the only place it
    appears: the reference is TensorFlow's documented formula."""
    from ckpt.tf.protos import graph_pb2
    from ckpt.graph import make_tensor_proto

    rng = np.random.default_rng(3)
    t = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    m, beta, gamma = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    gd = graph_pb2.GraphDef()
    for name, value in {"t": t, "m": m, "v": v, "beta": beta, "gamma": gamma}.items():
        node = gd.node.add(name=name, op="Const")
        node.attr["dtype"].type = 1
        node.attr["value"].tensor.CopyFrom(make_tensor_proto(value))
    for name, scale in (("bn", True), ("bn_noscale", False)):
        node = gd.node.add(name=name, op="BatchNormWithGlobalNormalization", input=["t", "m", "v", "beta", "gamma"])
        node.attr["T"].type = 1
        node.attr["variance_epsilon"].f = 0.001
        node.attr["scale_after_normalization"].b = scale
    module = ckpt.graph.to_torch(gd, outputs=["bn:0", "bn_noscale:0"])
    scaled, plain = module()
    ref = (t - m) / np.sqrt(v + 0.001)
    np.testing.assert_allclose(scaled.numpy(), ref * gamma + beta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain.numpy(), ref + beta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["RandomUniform", "RandomStandardNormal", "TruncatedNormal"])
def test_random_ops_shape_dtype_and_statistics(op):
    """Random numbers come from torch's generator: same distribution, shape (from a tensor) and dtype as TF."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 50], name="x")
        shape = tf.shape(x)
        make = {"RandomUniform": lambda: tf.random.uniform(shape, name="r"),
                "RandomStandardNormal": lambda: tf.random.normal(shape, name="r"),
                "TruncatedNormal": lambda: tf.random.truncated_normal(shape, name="r")}[op]
        r = make()
        assert any(o.type == op for o in g.get_operations())
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=r.name)
    torch.manual_seed(0)
    value = module(np.zeros((200, 50), np.float32))
    assert value.dtype == torch.float32 and tuple(value.shape) == (200, 50)
    mean, std = float(value.mean()), float(value.std())
    if op == "RandomUniform":
        assert 0 <= float(value.min()) and float(value.max()) < 1 and abs(mean - 0.5) < 0.02
        assert abs(std - (1 / 12) ** 0.5) < 0.02
    elif op == "RandomStandardNormal":
        assert abs(mean) < 0.03 and abs(std - 1.0) < 0.03
    else:
        assert float(value.abs().max()) <= 2.0 and abs(mean) < 0.03 and abs(std - 0.8796) < 0.03
    other = module(np.zeros((200, 50), np.float32))
    assert not torch.equal(value, other)  # a fresh draw on every run, as in TensorFlow


def test_random_uniform_int():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        r = tf.random.uniform(tf.shape(x), minval=3, maxval=7, dtype=tf.int64, name="r")
        assert any(o.type == "RandomUniformInt" for o in g.get_operations())
    value = ckpt.graph.to_torch(g.as_graph_def(), outputs=r.name)(np.zeros(1000, np.float32))
    assert value.dtype == torch.int64 and value.shape == (1000,)
    assert set(value.tolist()) == {3, 4, 5, 6}
