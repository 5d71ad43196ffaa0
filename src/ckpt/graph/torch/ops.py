"""TensorFlow operations as PyTorch code, with TensorFlow's numerics (the kernels of ``ckpt.graph.to_torch``).

Each kernel takes ``(node, args, rt)``: the node (``.name``, ``.type``, decoded ``.attrs``), its data inputs as
tensors (or Python values for a few shape arguments) and the runtime (``rt.training``, ``rt.device(tensor)``),
and returns the op's output, or a list of outputs for the ops in :data:`MULTI_OUTPUT`. ``CHECKS`` holds, per op
type, a function that returns why a particular node cannot run (an attribute combination not implemented) or None;
``to_torch`` calls them at conversion time so problems surface before the first run.

TensorFlow's conventions are kept exactly rather than translated once: data stays NHWC when the graph says NHWC
(kernels permute around ``torch.nn.functional`` calls), ``SAME`` padding is TensorFlow's (the odd pixel goes at the
end), ``AvgPool`` divides by the number of real pixels in each window, integer ``Div`` truncates while ``FloorDiv``
floors, ``FloorMod`` takes the divisor's sign, reductions of integers stay integers, ``ArgMax`` returns int64
unless ``output_type`` says otherwise, and ``Select`` with a vector condition picks whole rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["KERNELS", "MULTI_OUTPUT", "CHECKS", "OUTPUT_ARGS", "torch_dtype", "as_tensor"]

_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
    "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8,
    "uint16": torch.uint16, "uint32": torch.uint32, "uint64": torch.uint64, "bool": torch.bool,
    "complex64": torch.complex64, "complex128": torch.complex128,
}


def torch_dtype(name: str | None) -> torch.dtype | None:
    """TensorFlow dtype name (``"float32"``, ``"float32_ref"``) -> torch dtype, or None (strings, resources)."""
    if name is None:
        return None
    return _DTYPES.get(name[:-4] if name.endswith("_ref") else name)


def as_tensor(value: Any, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """A torch tensor from a tensor, NumPy array or Python number (cast to ``dtype`` when given)."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind in "SU":
            raise TypeError(f"string values are not supported (got {array.dtype})")
        from ...adapters.torch import from_numpy

        t = from_numpy(np.array(array, copy=True))
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t


#: Largest tensor a shape computed in the graph may create (elements x item size), as for tensors read from files:
#: Fill, Range, Tile, BroadcastTo, OneHot, Pad and the random ops check their sizes before allocating.
MAX_CREATED_BYTES = 1 << 31


def _created(dims, dtype: torch.dtype, what: str) -> list[int]:
    """``dims`` after checking the tensor they describe is neither negative nor too large to create."""
    dims = [int(d) for d in dims]
    if any(d < 0 for d in dims):
        raise ValueError(f"{what}: negative dimension in {dims}")
    n = 1
    for d in dims:
        n *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if n * itemsize > MAX_CREATED_BYTES:
        raise ValueError(f"{what}: a {dtype} tensor of shape {dims} would take {n * itemsize:,} bytes, more than the "
                         f"{MAX_CREATED_BYTES:,}-byte limit")
    return dims


def _ints(value) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _int(value) -> int:
    values = _ints(value)
    if len(values) != 1:
        raise ValueError(f"expected a scalar, got {len(values)} values")
    return values[0]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _is_int(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


KERNELS: dict[str, Callable] = {}
MULTI_OUTPUT: set[str] = set()
CHECKS: dict[str, Callable] = {}

# Output argument names of multi-output ops, for references inside function bodies ("bn:batch_mean:0").
OUTPUT_ARGS: dict[str, tuple[str, ...]] = {
    "Switch": ("output_false", "output_true"), "RefSwitch": ("output_false", "output_true"),
    "Merge": ("output", "value_index"), "RefMerge": ("output", "value_index"),
    "FusedBatchNorm": ("y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2"),
    "FusedBatchNormV2": ("y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2"),
    "FusedBatchNormV3": ("y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2",
                         "reserve_space_3"),
    "SoftmaxCrossEntropyWithLogits": ("loss", "backprop"),
    "SparseSoftmaxCrossEntropyWithLogits": ("loss", "backprop"),
}


def kernel(*types: str, multi: bool = False):
    def register(fn):
        for t in types:
            KERNELS[t] = fn
            if multi:
                MULTI_OUTPUT.add(t)
        return fn
    return register


def check(*types: str):
    def register(fn):
        for t in types:
            CHECKS[t] = fn
        return fn
    return register


# ----------------------------------------------------------------------------------------------- plumbing


@kernel("Identity", "RefIdentity", "Snapshot", "PreventGradient", "EnsureShape")
def _identity(node, args, rt):
    return args[0]


@kernel("CheckNumerics")
def _check_numerics(node, args, rt):
    x = args[0]
    if x.dtype.is_floating_point and not torch.isfinite(x).all():
        raise FloatingPointError(f"{node.name}: {node.attrs.get('message', '')} : Tensor had NaN or Inf values")
    return x


@kernel("IdentityN", multi=True)
def _identity_n(node, args, rt):
    return list(args)


@kernel("StopGradient")
def _stop_gradient(node, args, rt):
    return args[0].detach()


@kernel("NoOp", multi=True)
def _noop(node, args, rt):
    return []


# ----------------------------------------------------------------------------------------------- element-wise


def _binary(fn):
    def run(node, args, rt):
        return fn(args[0], args[1])
    return run


def _unary(fn):
    def run(node, args, rt):
        return fn(args[0])
    return run


def _same_dtype(fn):
    """Element-wise ops that keep the input dtype where torch would promote (bool -> int, int32 sums...)."""
    def run(x, y):
        out = fn(x, y)
        return out.to(x.dtype) if out.dtype != x.dtype else out
    return run


for _name, _fn in {
    "Add": torch.add, "AddV2": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "Maximum": torch.maximum, "Minimum": torch.minimum,
    "Equal": torch.eq, "NotEqual": torch.ne, "Less": torch.lt, "LessEqual": torch.le, "Greater": torch.gt,
    "GreaterEqual": torch.ge, "LogicalAnd": torch.logical_and, "LogicalOr": torch.logical_or,
    "SquaredDifference": lambda x, y: (x - y) * (x - y),
}.items():
    KERNELS[_name] = _binary(_fn)


@kernel("RealDiv", "Div", "TruncateDiv")
def _div(node, args, rt):
    x, y = args
    if _is_int(x):  # C++ integer division: truncates towards zero
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


@kernel("FloorDiv")
def _floordiv(node, args, rt):
    x, y = args
    if _is_int(x):
        return torch.div(x, y, rounding_mode="floor")
    return torch.floor(x / y)


@kernel("FloorMod")
def _floormod(node, args, rt):
    x, y = args
    if _is_int(x):
        return torch.remainder(x, y)
    mod = torch.fmod(x, y)  # TensorFlow: fmod, then moved to the divisor's sign
    return torch.where((mod != 0) & ((mod < 0) != (y < 0)), mod + y, mod)


@kernel("TruncateMod", "Mod")
def _truncmod(node, args, rt):
    return torch.fmod(args[0], args[1])


@kernel("Pow")
def _pow(node, args, rt):
    return torch.pow(args[0], args[1])


@kernel("AddN")
def _add_n(node, args, rt):
    out = args[0]
    for a in args[1:]:
        out = out + a
    return out


for _name, _fn in {
    "Square": lambda x: x * x, "Sqrt": torch.sqrt, "Rsqrt": torch.rsqrt, "Exp": torch.exp, "Log": torch.log,
    "Log1p": torch.log1p, "Expm1": torch.expm1, "Neg": torch.neg, "Abs": torch.abs, "Floor": torch.floor,
    "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid,
    "Relu": torch.relu, "Relu6": lambda x: torch.clamp(x, 0, 6), "Elu": F.elu, "Selu": torch.selu,
    "Softplus": F.softplus, "Softsign": F.softsign, "Erf": torch.erf, "Sin": torch.sin, "Cos": torch.cos,
    "LogicalNot": torch.logical_not, "IsNan": torch.isnan, "IsInf": torch.isinf, "IsFinite": torch.isfinite,
    "ZerosLike": torch.zeros_like, "OnesLike": torch.ones_like,
}.items():
    KERNELS[_name] = _unary(_fn)


@kernel("Reciprocal", "Inv")
def _reciprocal(node, args, rt):
    x = args[0]
    return torch.div(torch.ones_like(x), x, rounding_mode="trunc") if _is_int(x) else torch.reciprocal(x)


@kernel("LeakyRelu")
def _leaky_relu(node, args, rt):
    return F.leaky_relu(args[0], float(node.attrs.get("alpha", 0.2)))


@kernel("Softmax")
def _softmax(node, args, rt):
    return torch.softmax(args[0], dim=-1)


@kernel("LogSoftmax")
def _log_softmax(node, args, rt):
    return torch.log_softmax(args[0], dim=-1)


@kernel("ClipByValue")
def _clip(node, args, rt):
    x, lo, hi = args
    return torch.maximum(torch.minimum(x, hi), lo)  # TensorFlow's order: when hi < lo, lo wins


@kernel("L2Loss")
def _l2_loss(node, args, rt):
    return (args[0] * args[0]).sum() / 2


@kernel("Cast")
def _cast(node, args, rt):
    dtype = torch_dtype(node.attrs["DstT"])
    return args[0].to(dtype)


@kernel("Select")
def _select(node, args, rt):
    cond, x, y = args
    if cond.dim() == 1 and x.dim() > 1:  # TF1 Select: a vector condition picks rows
        cond = cond.reshape(cond.shape + (1,) * (x.dim() - 1))
    return torch.where(cond, x, y)


@kernel("SelectV2")
def _select_v2(node, args, rt):
    return torch.where(args[0], args[1], args[2])


# ----------------------------------------------------------------------------------------------- linear algebra


@kernel("MatMul")
def _matmul(node, args, rt):
    a, b = args
    if node.attrs.get("transpose_a"):
        a = a.transpose(-1, -2)
    if node.attrs.get("transpose_b"):
        b = b.transpose(-1, -2)
    return a @ b


@kernel("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
def _batch_matmul(node, args, rt):
    a, b = args
    if node.attrs.get("adj_x"):
        a = a.transpose(-1, -2).conj()
    if node.attrs.get("adj_y"):
        b = b.transpose(-1, -2).conj()
    out = torch.matmul(a, b)
    tout = node.attrs.get("Tout")
    return out.to(torch_dtype(tout)) if tout else out


@kernel("Einsum")
def _einsum(node, args, rt):
    return torch.einsum(node.attrs["equation"], *args)


def _channel_dim(node, rank: int) -> int:
    fmt = node.attrs.get("data_format", "NHWC")
    return 1 if fmt.startswith("NC") else rank - 1


@kernel("BiasAdd", "BiasAddV1")
def _bias_add(node, args, rt):
    x, b = args
    dim = _channel_dim(node, x.dim())
    shape = [1] * x.dim()
    shape[dim] = b.shape[0]
    return x + b.reshape(shape)


# ----------------------------------------------------------------------------------------------- convolutions


def _nchw(node) -> bool:
    return node.attrs.get("data_format", "NHWC").startswith("NC")


def _spatial(values, nchw: bool) -> list[int]:
    values = list(values) if values else [1, 1, 1, 1]
    return values[2:] if nchw else values[1:-1]


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: the output has ceil(size / stride) positions; the odd pixel goes at the end."""
    effective = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + effective - size, 0)
    return total // 2, total - total // 2


def _pads(node, sizes, ksizes, strides, dilations, nchw: bool) -> list[tuple[int, int]]:
    padding = node.attrs.get("padding", "VALID")
    if padding == "SAME":
        return [_same_pads(n, k, s, d) for n, k, s, d in zip(sizes, ksizes, strides, dilations)]
    if padding == "EXPLICIT":
        flat = list(node.attrs.get("explicit_paddings") or [])
        pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]
        return pairs[2:] if nchw else pairs[1:-1]
    return [(0, 0)] * len(sizes)


def _to_nchw(x, nchw: bool):
    return x if nchw else x.permute(0, 3, 1, 2)


def _from_nchw(x, nchw: bool):
    return x if nchw else x.permute(0, 2, 3, 1)


def _pad_hw(x, pads, value: float = 0.0):
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


@check("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "Conv2DBackpropInput")
def _check_conv(node):
    padding = node.attrs.get("padding", "VALID")
    if padding not in ("SAME", "VALID", "EXPLICIT"):
        return f"padding {padding!r}"
    fmt = node.attrs.get("data_format", "NHWC")
    if fmt not in ("NHWC", "NCHW"):
        return f"data_format {fmt!r}"
    if node.type in ("MaxPool", "AvgPool"):
        ksize = node.attrs.get("ksize") or []
        strides = node.attrs.get("strides") or []
        batch_or_channel = [0, 1] if fmt == "NCHW" else [0, 3]
        if any(ksize[i] != 1 or strides[i] != 1 for i in batch_or_channel if i < len(ksize) and i < len(strides)):
            return "pooling over the batch or channel dimension"
    return None


@kernel("Conv2D")
def _conv2d(node, args, rt):
    x, w = args
    nchw = _nchw(node)
    strides = _spatial(node.attrs.get("strides"), nchw)
    dilations = _spatial(node.attrs.get("dilations"), nchw)
    xs = _to_nchw(x, nchw)
    pads = _pads(node, xs.shape[2:], w.shape[:2], strides, dilations, nchw)
    xs = _pad_hw(xs, pads)
    groups = xs.shape[1] // w.shape[2]  # grouped convolution: filter depth divides input depth
    out = F.conv2d(xs, w.permute(3, 2, 0, 1), stride=strides, dilation=dilations, groups=groups)
    return _from_nchw(out, nchw)


@kernel("DepthwiseConv2dNative")
def _depthwise(node, args, rt):
    x, w = args
    nchw = _nchw(node)
    strides = _spatial(node.attrs.get("strides"), nchw)
    dilations = _spatial(node.attrs.get("dilations"), nchw)
    xs = _to_nchw(x, nchw)
    kh, kw, cin, mult = w.shape
    pads = _pads(node, xs.shape[2:], (kh, kw), strides, dilations, nchw)
    xs = _pad_hw(xs, pads)
    weight = w.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)  # output channel c*mult + m
    out = F.conv2d(xs, weight, stride=strides, dilation=dilations, groups=cin)
    return _from_nchw(out, nchw)


@kernel("Conv2DBackpropInput")
def _conv2d_backprop_input(node, args, rt):
    sizes, w, dy = args
    nchw = _nchw(node)
    sizes = _ints(sizes)
    in_hw = sizes[2:] if nchw else sizes[1:3]
    strides = _spatial(node.attrs.get("strides"), nchw)
    dilations = _spatial(node.attrs.get("dilations"), nchw)
    pads = _pads(node, in_hw, w.shape[:2], strides, dilations, nchw)
    dys = _to_nchw(dy, nchw)
    full = F.conv_transpose2d(dys, w.permute(3, 2, 0, 1), stride=strides, dilation=dilations)
    # The transposed convolution covers the padded input; cut the padding off, zero-fill what it never reached.
    out = []
    for axis, ((before, _), size) in enumerate(zip(pads, in_hw)):
        dim = 2 + axis
        have = full.shape[dim]
        if have < before + size:
            extra = before + size - have
            pad = [0, 0] * (full.dim() - dim - 1) + [0, extra]
            full = F.pad(full, pad)
        out.append((dim, before, size))
    for dim, start, size in out:
        full = full.narrow(dim, start, size)
    return _from_nchw(full, nchw)


def _pool_params(node, nchw: bool, ksize=None, strides=None):
    ksize = _spatial(ksize if ksize is not None else node.attrs.get("ksize"), nchw)
    strides = _spatial(strides if strides is not None else node.attrs.get("strides"), nchw)
    return ksize, strides


@kernel("MaxPool")
def _max_pool(node, args, rt):
    return _max_pool_impl(node, args[0])


@kernel("MaxPoolV2")
def _max_pool_v2(node, args, rt):
    return _max_pool_impl(node, args[0], _ints(args[1]), _ints(args[2]))


def _max_pool_impl(node, x, ksize=None, strides=None):
    nchw = _nchw(node)
    ksize, strides = _pool_params(node, nchw, ksize, strides)
    xs = _to_nchw(x, nchw)
    pads = _pads(node, xs.shape[2:], ksize, strides, (1, 1), nchw)
    xs = _pad_hw(xs, pads, value=-math.inf)  # padding never wins a max
    return _from_nchw(F.max_pool2d(xs, ksize, strides), nchw)


@kernel("AvgPool")
def _avg_pool(node, args, rt):
    x = args[0]
    nchw = _nchw(node)
    ksize, strides = _pool_params(node, nchw)
    xs = _to_nchw(x, nchw)
    pads = _pads(node, xs.shape[2:], ksize, strides, (1, 1), nchw)
    if not any(p for pair in pads for p in pair):
        return _from_nchw(F.avg_pool2d(xs, ksize, strides), nchw)
    # TensorFlow averages over the real pixels of each window only: sum / count of non-padding pixels.
    sums = F.avg_pool2d(_pad_hw(xs, pads), ksize, strides, divisor_override=1)
    ones = torch.ones((1, 1) + tuple(xs.shape[2:]), dtype=xs.dtype, device=xs.device)
    counts = F.avg_pool2d(_pad_hw(ones, pads), ksize, strides, divisor_override=1)
    return _from_nchw(sums / counts, nchw)


@kernel("LRN")
def _lrn(node, args, rt):
    x = args[0]  # NHWC; TensorFlow's alpha is not divided by the window size (PyTorch's is)
    radius = int(node.attrs.get("depth_radius", 5))
    bias = float(node.attrs.get("bias", 1.0))
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 0.5))
    sq = (x * x).unsqueeze(1)  # N, 1, H, W, C
    sq = F.pad(sq, (radius, radius))
    sums = F.avg_pool3d(sq, (1, 1, 2 * radius + 1), stride=1, divisor_override=1).squeeze(1)
    return x / torch.pow(bias + alpha * sums, beta)


# ----------------------------------------------------------------------------------------------- normalization


@kernel("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", multi=True)
def _fused_batch_norm(node, args, rt):
    x, scale, offset, mean, variance = args[:5]
    eps = float(node.attrs.get("epsilon", 1e-4))
    nchw = _nchw(node)
    dim = 1 if nchw else x.dim() - 1
    shape = [1] * x.dim()
    shape[dim] = -1
    compute = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if node.attrs.get("is_training", True):
        axes = [d for d in range(x.dim()) if d != dim]
        batch_mean = compute.mean(dim=axes)
        batch_var = compute.var(dim=axes, unbiased=False)
        y = (compute - batch_mean.reshape(shape)) * torch.rsqrt(batch_var.reshape(shape) + eps)
        n = compute.numel() // compute.shape[dim]
        corrected = batch_var * (n / (n - 1)) if n > 1 else batch_var  # the running variance is unbiased
        factor = float(node.attrs.get("exponential_avg_factor", 1.0))
        if factor != 1.0 and mean.numel():
            out_mean = (1 - factor) * mean + factor * batch_mean
            out_var = (1 - factor) * variance + factor * corrected
        else:
            out_mean, out_var = batch_mean, corrected
        saved = [batch_mean, batch_var]
    else:
        y = (compute - mean.reshape(shape)) * torch.rsqrt(variance.reshape(shape) + eps)
        out_mean, out_var = mean, variance
        saved = [mean, variance]
    y = y * scale.reshape(shape) + offset.reshape(shape)
    outputs = [y.to(x.dtype), out_mean, out_var] + saved
    if node.type == "FusedBatchNormV3":
        outputs.append(torch.empty(0, dtype=scale.dtype, device=x.device))
    return outputs


@kernel("BatchNormWithGlobalNormalization")
def _batch_norm_global(node, args, rt):
    t, m, v, beta, gamma = args
    eps = float(node.attrs.get("variance_epsilon", 1e-3))
    y = (t - m) * torch.rsqrt(v + eps)
    if node.attrs.get("scale_after_normalization"):
        y = y * gamma
    return y + beta


# ----------------------------------------------------------------------------------------------- images


@check("DecodeJpeg")
def _check_decode_jpeg(node):
    import importlib.util

    if importlib.util.find_spec("PIL") is None:
        return "no JPEG decoder: install Pillow (pip install ckpt[image])"
    return None


@kernel("DecodeJpeg")
def _decode_jpeg(node, args, rt):
    from .._image import decode_jpeg

    value = args[0]
    if not isinstance(value, np.ndarray) or value.dtype != object or value.shape != ():
        raise TypeError(f"DecodeJpeg takes one string (the JPEG's bytes), got {getattr(value, 'shape', value)!r}")
    a = node.attrs
    pixels = decode_jpeg(value[()], channels=int(a.get("channels", 0) or 0), ratio=int(a.get("ratio", 1) or 1),
                         fancy_upscaling=bool(a.get("fancy_upscaling", True)),
                         dct_method=str(a.get("dct_method", "") or ""), where=node.name)
    return as_tensor(pixels, device=rt.device())


@check("ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic")
def _check_resize(node):
    if node.attrs.get("align_corners") and node.attrs.get("half_pixel_centers"):
        return "align_corners and half_pixel_centers both set (TensorFlow refuses it too)"
    return None


_MAX_RESIZED_BYTES = 2 << 30


def _resize_scale(in_size: int, out_size: int, align_corners: bool) -> np.float32:
    """TensorFlow's CalculateResizeScale, in float32."""
    if align_corners and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _resize_sizes(node, args) -> tuple[int, int, int, int]:
    x = args[0]
    if x.dim() != 4:
        raise ValueError(f"{node.name}: images must be 4-dimensional [batch, height, width, channels], got "
                         f"{list(x.shape)}")
    size = _ints(args[1])
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{node.name}: size must be 2 positive numbers, got {size}")
    if x.shape[0] * size[0] * size[1] * x.shape[3] * 4 > _MAX_RESIZED_BYTES:  # a graph's numbers size no allocation
        raise ValueError(f"{node.name}: resizing to {size} would create more than {_MAX_RESIZED_BYTES:,} bytes")
    return x.shape[1], x.shape[2], size[0], size[1]


def _bilinear_weights(in_size: int, out_size: int, align: bool, half: bool, device):
    """kernels/image/resize_bilinear_op.cc compute_interpolation_weights: lower/upper source rows and the lerp."""
    scale = _resize_scale(in_size, out_size, align)
    i = np.arange(out_size, dtype=np.float32)
    pos = (i + np.float32(0.5)) * scale - np.float32(0.5) if half else i * scale
    floor = np.floor(pos)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(pos).astype(np.int64), in_size - 1)
    lerp = (pos - floor).astype(np.float32)
    return (torch.from_numpy(lower).to(device), torch.from_numpy(upper).to(device),
            torch.from_numpy(lerp).to(device))


@kernel("ResizeBilinear")
def _resize_bilinear(node, args, rt):
    x = args[0].to(torch.float32)  # TensorFlow casts every pixel to float and returns float32
    in_h, in_w, out_h, out_w = _resize_sizes(node, args)
    align, half = bool(node.attrs.get("align_corners")), bool(node.attrs.get("half_pixel_centers"))
    y0, y1, ly = _bilinear_weights(in_h, out_h, align, half, x.device)
    x0, x1, lx = _bilinear_weights(in_w, out_w, align, half, x.device)
    top, bottom = x.index_select(1, y0), x.index_select(1, y1)
    lx = lx.reshape(1, 1, -1, 1)
    top_left, top_right = top.index_select(2, x0), top.index_select(2, x1)
    bottom_left, bottom_right = bottom.index_select(2, x0), bottom.index_select(2, x1)
    top = top_left + (top_right - top_left) * lx  # the order of TensorFlow's compute_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * lx
    return top + (bottom - top) * ly.reshape(1, -1, 1, 1)


def _nearest_index(in_size: int, out_size: int, align: bool, half: bool, device) -> torch.Tensor:
    """kernels/image/resize_nearest_neighbor_op.cc: floor (round with align_corners) of the scaled position."""
    scale = _resize_scale(in_size, out_size, align)
    i = np.arange(out_size, dtype=np.float32)
    pos = (i + np.float32(0.5)) * scale if half else i * scale
    index = np.floor(pos + np.float32(0.5)) if align else np.floor(pos)  # roundf: halves away from zero (pos >= 0)
    index = np.minimum(index.astype(np.int64), in_size - 1)
    if half:
        index = np.maximum(index, 0)
    return torch.from_numpy(index).to(device)


@kernel("ResizeNearestNeighbor")
def _resize_nearest(node, args, rt):
    x = args[0]
    in_h, in_w, out_h, out_w = _resize_sizes(node, args)
    align, half = bool(node.attrs.get("align_corners")), bool(node.attrs.get("half_pixel_centers"))
    rows = _nearest_index(in_h, out_h, align, half, x.device)
    cols = _nearest_index(in_w, out_w, align, half, x.device)
    return x.index_select(1, rows).index_select(2, cols)


_CUBIC_TABLE_SIZE = 1024


def _cubic_table(a: float) -> np.ndarray:
    """resize_bicubic_op.cc InitCoeffsTable: Keys' cubic weights at 1025 offsets, computed in double, kept in float."""
    out = np.empty((_CUBIC_TABLE_SIZE + 1, 2), np.float32)
    for i in range(_CUBIC_TABLE_SIZE + 1):
        x = float(np.float32(i * 1.0 / _CUBIC_TABLE_SIZE))
        out[i, 0] = ((a + 2) * x - (a + 3)) * x * x + 1
        x = float(np.float32(x + 1.0))
        out[i, 1] = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return out


_CUBIC_TABLES: dict[bool, np.ndarray] = {}


def _cubic_weights(in_size: int, out_size: int, align: bool, half: bool):
    """resize_bicubic_op.cc GetWeightsAndIndices: 4 source indices and weights per output position; with
    half_pixel_centers (Keys' a=-0.5) taps outside the image get weight 0 and the rest are renormalised."""
    table = _CUBIC_TABLES.get(half)
    if table is None:
        table = _CUBIC_TABLES[half] = _cubic_table(-0.5 if half else -0.75)
    scale = _resize_scale(in_size, out_size, align)
    i = np.arange(out_size, dtype=np.float32)
    pos = (i + np.float32(0.5)) * scale - np.float32(0.5) if half else i * scale
    loc = np.floor(pos).astype(np.int64)
    delta = (pos - loc.astype(np.float32)).astype(np.float32)
    offset = np.rint(delta * np.float32(_CUBIC_TABLE_SIZE)).astype(np.int64)
    taps = [loc - 1, loc, loc + 1, loc + 2]
    weights = [table[offset, 1], table[offset, 0], table[_CUBIC_TABLE_SIZE - offset, 0],
               table[_CUBIC_TABLE_SIZE - offset, 1]]
    index = [np.clip(t, 0, in_size - 1) for t in taps]
    if half:
        weights = [np.where(ix == t, w, np.float32(0)).astype(np.float32) for ix, t, w in zip(index, taps, weights)]
        total = ((weights[0] + weights[1]) + weights[2]) + weights[3]
        ok = np.abs(total) >= np.float32(1000) * np.finfo(np.float32).tiny
        inv = np.where(ok, np.float32(1) / np.where(ok, total, np.float32(1)), np.float32(1)).astype(np.float32)
        weights = [np.where(ok, w * inv, w).astype(np.float32) for w in weights]
    return index, weights


@kernel("ResizeBicubic")
def _resize_bicubic(node, args, rt):
    x = args[0].to(torch.float32)
    in_h, in_w, out_h, out_w = _resize_sizes(node, args)
    align, half = bool(node.attrs.get("align_corners")), bool(node.attrs.get("half_pixel_centers"))

    def along(t, dim, in_size, out_size):
        index, weights = _cubic_weights(in_size, out_size, align, half)
        shape = [1] * 4
        shape[dim] = out_size
        out = None
        for ix, w in zip(index, weights):  # TensorFlow's Interpolate1D: v0*w0 + v1*w1 + v2*w2 + v3*w3, in order
            term = t.index_select(dim, torch.from_numpy(ix).to(t.device)) * torch.from_numpy(w).to(
                t.device).reshape(shape)
            out = term if out is None else out + term
        return out

    return along(along(x, 2, in_w, out_w), 1, in_h, out_h)  # along x within each row first, then along y


# ----------------------------------------------------------------------------------------------- losses


@kernel("SoftmaxCrossEntropyWithLogits", multi=True)
def _softmax_xent(node, args, rt):
    logits, labels = args
    log_p = torch.log_softmax(logits, dim=-1)
    loss = -(labels * log_p).sum(dim=-1)
    return [loss, torch.softmax(logits, dim=-1) - labels]


@kernel("SparseSoftmaxCrossEntropyWithLogits", multi=True)
def _sparse_softmax_xent(node, args, rt):
    logits, labels = args
    log_p = torch.log_softmax(logits, dim=-1)
    index = labels.long().unsqueeze(-1)
    loss = -log_p.gather(-1, index).squeeze(-1)
    onehot = torch.zeros_like(logits).scatter_(-1, index, 1.0)
    return [loss, torch.softmax(logits, dim=-1) - onehot]


# ----------------------------------------------------------------------------------------------- shapes


@kernel("Reshape")
def _reshape(node, args, rt):
    return args[0].reshape(_ints(args[1]))


@kernel("Squeeze")
def _squeeze(node, args, rt):
    x = args[0]
    dims = node.attrs.get("squeeze_dims") or []
    if not dims:
        return x.reshape([d for d in x.shape if d != 1])
    dims = sorted({_axis(int(d), x.dim()) for d in dims})
    for d in dims:
        if x.shape[d] != 1:
            raise ValueError(f"{node.name}: can not squeeze dim[{d}], expected a dimension of 1, got {x.shape[d]}")
    return x.reshape([s for i, s in enumerate(x.shape) if i not in dims])


@kernel("ExpandDims")
def _expand_dims(node, args, rt):
    return args[0].unsqueeze(_int(args[1]))


@kernel("Transpose")
def _transpose(node, args, rt):
    return args[0].permute(_ints(args[1]))


@kernel("ConcatV2")
def _concat_v2(node, args, rt):
    values, axis = args[:-1], _int(args[-1])
    return torch.cat(list(values), dim=axis)


@kernel("Concat")
def _concat(node, args, rt):
    return torch.cat(list(args[1:]), dim=_int(args[0]))


@kernel("Pack")
def _pack(node, args, rt):
    return torch.stack(list(args), dim=int(node.attrs.get("axis", 0)))


@kernel("Unpack", multi=True)
def _unpack(node, args, rt):
    return list(torch.unbind(args[0], dim=int(node.attrs.get("axis", 0))))


@kernel("Split", multi=True)
def _split(node, args, rt):
    axis, x = _int(args[0]), args[1]
    num = int(node.attrs["num_split"])
    size = x.shape[axis]
    if size % num:
        raise ValueError(f"{node.name}: dimension {axis} of size {size} does not split into {num} equal parts")
    return list(torch.split(x, size // num, dim=axis))


@kernel("SplitV", multi=True)
def _split_v(node, args, rt):
    x, sizes, axis = args[0], _ints(args[1]), _int(args[2])
    if -1 in sizes:
        known = sum(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = x.shape[axis] - known
    return list(torch.split(x, sizes, dim=axis))


@kernel("Slice")
def _slice(node, args, rt):
    x, begin, size = args[0], _ints(args[1]), _ints(args[2])
    for dim, (b, s) in enumerate(zip(begin, size)):
        x = x.narrow(dim, b, x.shape[dim] - b if s == -1 else s)
    return x


@kernel("StridedSlice")
def _strided_slice(node, args, rt):
    x = args[0]
    begin, end, strides = _ints(args[1]), _ints(args[2]), _ints(args[3])
    a = node.attrs
    begin_mask, end_mask = int(a.get("begin_mask", 0)), int(a.get("end_mask", 0))
    ellipsis_mask, new_axis_mask = int(a.get("ellipsis_mask", 0)), int(a.get("new_axis_mask", 0))
    shrink_mask = int(a.get("shrink_axis_mask", 0))
    n = len(begin)
    # Expand the sparse spec into one entry per input dimension (plus new axes), as TensorFlow's BuildDenseSpec.
    consuming = sum(1 for i in range(n) if not (ellipsis_mask >> i) & 1 and not (new_axis_mask >> i) & 1)
    entries: list[tuple[str, int]] = []
    has_ellipsis = any((ellipsis_mask >> i) & 1 for i in range(n))
    for i in range(n):
        if (ellipsis_mask >> i) & 1:
            entries.extend(("all", -1) for _ in range(x.dim() - consuming))
        elif (new_axis_mask >> i) & 1:
            entries.append(("new", i))
        else:
            entries.append(("spec", i))
    if not has_ellipsis:
        entries.extend(("all", -1) for _ in range(x.dim() - consuming))
    index: list[Any] = []
    flips: list[int] = []
    dim = 0
    for kind, i in entries:
        if kind == "new":
            index.append(None)
            continue
        size = x.shape[dim]
        if kind == "all":
            index.append(slice(None))
        elif (shrink_mask >> i) & 1:
            b = begin[i] + size if begin[i] < 0 else begin[i]
            if not 0 <= b < size:
                raise IndexError(f"{node.name}: slice index {begin[i]} of dimension {dim} out of bounds")
            index.append(b)
        else:
            step = strides[i]
            if step == 0:
                raise ValueError(f"{node.name}: strides[{i}] must be non-zero")
            b = None if (begin_mask >> i) & 1 else begin[i]
            e = None if (end_mask >> i) & 1 else end[i]
            start, stop, step = slice(b, e, step).indices(size)
            if step < 0:  # torch slices go forwards only: flip the dimension and mirror the bounds
                flips.append(dim)
                start, stop, step = size - 1 - start, size - 1 - stop, -step
            index.append(slice(start, max(stop, start), step))
        dim += 1
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]


@kernel("Pad", "PadV2")
def _pad(node, args, rt):
    x, paddings = args[0], _ints(args[1])
    value = float(args[2].item()) if len(args) > 2 else 0.0
    _created([n + paddings[2 * i] + paddings[2 * i + 1] for i, n in enumerate(x.shape)], x.dtype, "Pad")
    pad: list[int] = []
    for dim in reversed(range(x.dim())):
        pad.extend([paddings[2 * dim], paddings[2 * dim + 1]])
    return F.pad(x, pad, value=value)


@kernel("MirrorPad")
def _mirror_pad(node, args, rt):
    x, paddings = args[0], _ints(args[1])
    symmetric = node.attrs.get("mode", "REFLECT") == "SYMMETRIC"
    limit = 0 if symmetric else 1  # TensorFlow: paddings at most the size (SYMMETRIC) or size - 1 (REFLECT)
    for dim in range(x.dim()):
        if min(paddings[2 * dim], paddings[2 * dim + 1]) < 0 or \
                max(paddings[2 * dim], paddings[2 * dim + 1]) > x.shape[dim] - limit:
            raise ValueError(f"MirrorPad: paddings {paddings[2 * dim:2 * dim + 2]} do not fit dimension {dim} of "
                             f"size {x.shape[dim]}")
    for dim in range(x.dim()):
        before, after = paddings[2 * dim], paddings[2 * dim + 1]
        if not before and not after:
            continue
        n = x.shape[dim]
        if symmetric:
            left, right = list(range(before - 1, -1, -1)), list(range(n - 1, n - 1 - after, -1))
        else:
            left, right = list(range(before, 0, -1)), list(range(n - 2, n - 2 - after, -1))
        index = torch.tensor(left + list(range(n)) + right, device=x.device)
        x = x.index_select(dim, index)
    return x


@kernel("Tile")
def _tile(node, args, rt):
    multiples = _ints(args[1])
    _created([n * m for n, m in zip(args[0].shape, multiples)] + multiples[args[0].dim():], args[0].dtype, "Tile")
    return args[0].repeat(multiples)


@kernel("BroadcastTo")
def _broadcast_to(node, args, rt):
    return torch.broadcast_to(args[0], _created(_ints(args[1]), args[0].dtype, "BroadcastTo"))


@kernel("Shape")
def _shape(node, args, rt):
    x = args[0]
    return torch.tensor(list(x.shape), dtype=torch_dtype(node.attrs.get("out_type", "int32")), device=x.device)


@kernel("ShapeN", multi=True)
def _shape_n(node, args, rt):
    dtype = torch_dtype(node.attrs.get("out_type", "int32"))
    return [torch.tensor(list(x.shape), dtype=dtype, device=x.device) for x in args]


@kernel("Size")
def _size(node, args, rt):
    x = args[0]
    return torch.tensor(x.numel(), dtype=torch_dtype(node.attrs.get("out_type", "int32")), device=x.device)


@kernel("Rank")
def _rank(node, args, rt):
    return torch.tensor(args[0].dim(), dtype=torch.int32, device=args[0].device)


@kernel("Fill")
def _fill(node, args, rt):
    dims, value = _ints(args[0]), args[1]
    return value.reshape(()).expand(_created(dims, value.dtype, "Fill")).clone()


@kernel("Range")
def _range(node, args, rt):
    start, limit, delta = args
    dtype = torch_dtype(node.attrs.get("Tidx", "int32"))
    if dtype.is_floating_point:
        count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
        steps = torch.arange(_created([count], dtype, "Range")[0], dtype=dtype, device=start.device)
        return start.to(dtype) + steps * delta.to(dtype)
    if int(delta) == 0:
        raise ValueError("Range: delta must not be 0")
    _created([max(-(-(int(limit) - int(start)) // int(delta)), 0)], dtype, "Range")
    return torch.arange(int(start), int(limit), int(delta), dtype=dtype, device=start.device)


@kernel("GatherV2", "Gather", "ResourceGather")
def _gather(node, args, rt):
    params, indices = args[0], args[1]
    axis = _int(args[2]) if node.type == "GatherV2" else 0
    axis = _axis(axis, params.dim())
    flat = indices.reshape(-1).long()
    out = params.index_select(axis, flat)
    return out.reshape(tuple(params.shape[:axis]) + tuple(indices.shape) + tuple(params.shape[axis + 1:]))


@check("GatherV2", "ResourceGather")
def _check_gather(node):
    if int(node.attrs.get("batch_dims", 0) or 0):
        return f"batch_dims={node.attrs['batch_dims']}"
    return None


@kernel("OneHot")
def _one_hot(node, args, rt):
    indices, depth, on, off = args
    depth = _int(depth)
    _created([indices.numel(), depth], on.dtype, "OneHot")
    axis = int(node.attrs.get("axis", -1))
    hot = indices.long().unsqueeze(-1) == torch.arange(depth, device=indices.device)
    if axis != -1:
        hot = hot.movedim(-1, axis)
    return torch.where(hot, on, off)


@kernel("Where")
def _where(node, args, rt):
    return torch.nonzero(args[0]).to(torch.int64)


@kernel("Cumsum")
def _cumsum(node, args, rt):
    x, axis = args[0], _int(args[1])
    if node.attrs.get("reverse"):
        x = x.flip(axis)
    out = torch.cumsum(x, dim=axis)
    if node.attrs.get("exclusive"):
        out = out - x
    if node.attrs.get("reverse"):
        out = out.flip(axis)
    return out.to(args[0].dtype)


# ----------------------------------------------------------------------------------------------- reductions


def _reduce_axes(x, axes) -> list[int]:
    return sorted({_axis(a, x.dim()) for a in _ints(axes)})


def _reduction(fn):
    def run(node, args, rt):
        x, axes = args[0], _reduce_axes(args[0], args[1])
        if not axes:
            return x
        keep = bool(node.attrs.get("keep_dims", False))
        return fn(x, axes, keep)
    return run


def _mean(x, axes, keep):
    if _is_int(x):  # integer mean: integer sum divided (truncating) by the count
        count = 1
        for a in axes:
            count *= x.shape[a]
        return torch.div(x.sum(dim=axes, keepdim=keep), count, rounding_mode="trunc").to(x.dtype)
    return x.mean(dim=axes, keepdim=keep)


def _prod(x, axes, keep):
    out = x
    for a in sorted(axes, reverse=True):
        out = out.prod(dim=a, keepdim=keep)
    return out.to(x.dtype)


def _all(x, axes, keep):
    out = x
    for a in sorted(axes, reverse=True):
        out = out.all(dim=a, keepdim=keep)
    return out


def _any(x, axes, keep):
    out = x
    for a in sorted(axes, reverse=True):
        out = out.any(dim=a, keepdim=keep)
    return out


KERNELS.update({
    "Mean": _reduction(_mean),
    "Sum": _reduction(lambda x, axes, keep: x.sum(dim=axes, keepdim=keep).to(x.dtype)),
    "Max": _reduction(lambda x, axes, keep: x.amax(dim=axes, keepdim=keep)),
    "Min": _reduction(lambda x, axes, keep: x.amin(dim=axes, keepdim=keep)),
    "Prod": _reduction(_prod),
    "All": _reduction(_all),
    "Any": _reduction(_any),
})


@kernel("ArgMax", "ArgMin")
def _arg_max(node, args, rt):
    x, axis = args[0], _int(args[1])
    out = torch.argmax(x, dim=axis) if node.type == "ArgMax" else torch.argmin(x, dim=axis)
    return out.to(torch_dtype(node.attrs.get("output_type", "int64")))


# ----------------------------------------------------------------------------------------------- random


def _random_dtype(node) -> torch.dtype:
    return torch_dtype(node.attrs.get("dtype", "float32"))


@kernel("RandomUniform")
def _random_uniform(node, args, rt):
    dtype = _random_dtype(node)
    return torch.rand(_created(_ints(args[0]), dtype, node.type), dtype=dtype, device=rt.device(args[0]))


@kernel("RandomStandardNormal")
def _random_normal(node, args, rt):
    dtype = _random_dtype(node)
    return torch.randn(_created(_ints(args[0]), dtype, node.type), dtype=dtype, device=rt.device(args[0]))


@kernel("TruncatedNormal")
def _truncated_normal(node, args, rt):
    dtype = _random_dtype(node)
    out = torch.empty(_created(_ints(args[0]), dtype, node.type), dtype=dtype, device=rt.device(args[0]))
    return torch.nn.init.trunc_normal_(out, mean=0.0, std=1.0, a=-2.0, b=2.0)


@kernel("RandomUniformInt")
def _random_uniform_int(node, args, rt):
    shape, lo, hi = _ints(args[0]), _int(args[1]), _int(args[2])
    dtype = torch_dtype(node.attrs.get("Tout", "int32"))
    return torch.randint(lo, hi, _created(shape, dtype, node.type), dtype=dtype, device=rt.device(args[0]))
