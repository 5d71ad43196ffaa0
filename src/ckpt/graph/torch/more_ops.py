"""More TensorFlow operations for ``ckpt.graph.to_torch``, registered into ``ops.KERNELS`` on import.

Same conventions as ``ops``: TensorFlow's layouts are kept (NHWC/NDHWC data is permuted around the
``torch.nn.functional`` call and back), ``SAME`` padding puts the odd pixel at the end, average pools divide by the
number of real (unpadded) elements, and results keep TensorFlow's dtypes. Every kernel is built from differentiable
torch operations, so gradients are TensorFlow's where TensorFlow has them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ops import _axis, _created, _int, _ints, _pads, check, kernel, torch_dtype

__all__: list[str] = []


# ----------------------------------------------------------------------------------------------- element-wise


@kernel("DivNoNan")
def _div_no_nan(node, args, rt):
    x, y = args
    zero = y == 0
    # A safe divisor keeps the gradient of the masked-out quotient finite (0, as TensorFlow's gradient).
    safe = torch.where(zero, torch.ones_like(y), y)
    return torch.where(zero, torch.zeros_like(x / safe), x / safe)


# ----------------------------------------------------------------------------------------------- reordering


@kernel("ReverseV2")
def _reverse_v2(node, args, rt):
    x = args[0]
    dims = sorted({_axis(a, x.dim()) for a in _ints(args[1])})
    return torch.flip(x, dims) if dims else x


@kernel("ReverseSequence")
def _reverse_sequence(node, args, rt):
    x, lengths = args
    seq_dim = _axis(int(node.attrs["seq_dim"]), x.dim())
    batch_dim = _axis(int(node.attrs.get("batch_dim", 0) or 0), x.dim())
    lengths = lengths.to(torch.int64)
    n = x.shape[seq_dim]
    if lengths.dim() != 1 or lengths.shape[0] != x.shape[batch_dim]:
        raise ValueError(f"seq_lengths has shape {tuple(lengths.shape)}, expected [{x.shape[batch_dim]}]")
    if bool((lengths < 0).any()) or bool((lengths > n).any()):
        raise ValueError(f"seq_lengths must be in [0, {n}], got {lengths.tolist()}")
    # Position t of row b reads t' = len_b - 1 - t for t < len_b, itself otherwise.
    t = torch.arange(n, device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # [batch, seq]
    shape = [1] * x.dim()
    shape[batch_dim], shape[seq_dim] = x.shape[batch_dim], n
    if batch_dim > seq_dim:
        index = index.t()
        shape[seq_dim], shape[batch_dim] = n, x.shape[batch_dim]
    index = index.reshape(shape).expand(x.shape)
    return torch.gather(x, seq_dim, index)


@check("DepthToSpace", "SpaceToDepth")
def _check_depth_space(node):
    fmt = node.attrs.get("data_format", "NHWC")
    return None if fmt in ("NHWC", "NCHW") else f"data_format {fmt!r}"


def _block(node) -> int:
    size = int(node.attrs.get("block_size", 0))
    if size < 2:
        raise ValueError(f"block_size must be at least 2, got {size}")
    return size


@kernel("DepthToSpace")
def _depth_to_space(node, args, rt):
    x, bs = args[0], _block(node)
    nchw = node.attrs.get("data_format", "NHWC") == "NCHW"
    if nchw:  # the same element order as NHWC (TensorFlow's GPU kernel): only the layout differs
        x = x.permute(0, 2, 3, 1)
    n, h, w, c = x.shape
    if c % (bs * bs):
        raise ValueError(f"input depth {c} is not divisible by block_size * block_size = {bs * bs}")
    out = x.reshape(n, h, w, bs, bs, c // (bs * bs)).permute(0, 1, 3, 2, 4, 5).reshape(n, h * bs, w * bs,
                                                                                      c // (bs * bs))
    return out.permute(0, 3, 1, 2) if nchw else out


@kernel("SpaceToDepth")
def _space_to_depth(node, args, rt):
    x, bs = args[0], _block(node)
    nchw = node.attrs.get("data_format", "NHWC") == "NCHW"
    if nchw:
        x = x.permute(0, 2, 3, 1)
    n, h, w, c = x.shape
    if h % bs or w % bs:
        raise ValueError(f"Image width {w} and height {h} should be divisible by block_size: {bs}")
    out = x.reshape(n, h // bs, bs, w // bs, bs, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h // bs, w // bs,
                                                                                     bs * bs * c)
    return out.permute(0, 3, 1, 2) if nchw else out


def _block_args(block, pairs, x, what: str) -> tuple[list[int], list[tuple[int, int]]]:
    block = _ints(block)
    flat = _ints(pairs)
    m = len(block)
    if len(flat) != 2 * m or x.dim() < m + 1:
        raise ValueError(f"{what} must have shape [{m}, 2] for a block shape of {m} dimension(s) and an input of "
                         f"rank >= {m + 1}")
    if any(b < 1 for b in block) or any(p < 0 for p in flat):
        raise ValueError(f"block_shape must be positive and {what} non-negative, got {block} and {flat}")
    return block, [(flat[2 * i], flat[2 * i + 1]) for i in range(m)]


@kernel("SpaceToBatchND")
def _space_to_batch_nd(node, args, rt):
    x = args[0]
    block, pads = _block_args(args[1], args[2], x, "paddings")
    m = len(block)
    spatial = [x.shape[1 + i] + a + b for i, (a, b) in enumerate(pads)]
    if any(s % b for s, b in zip(spatial, block)):
        raise ValueError(f"padded spatial shape {spatial} is not divisible by block_shape {block}")
    _created([x.shape[0], *spatial, *x.shape[1 + m:]], x.dtype, "SpaceToBatchND")
    pad = []
    for a, b in reversed(pads):
        pad.extend([a, b])
    x = F.pad(x, [0, 0] * (x.dim() - 1 - m) + pad) if any(pad) else x
    rest = list(x.shape[1 + m:])
    shape = [x.shape[0]]
    for s, b in zip(spatial, block):
        shape += [s // b, b]
    x = x.reshape(shape + rest)
    # [batch, s1/b1, b1, ..., sM/bM, bM, rest] -> [b1, ..., bM, batch, s1/b1, ..., sM/bM, rest]
    order = [2 + 2 * i for i in range(m)] + [0] + [1 + 2 * i for i in range(m)]
    order += list(range(1 + 2 * m, x.dim()))
    x = x.permute(order)
    return x.reshape([shape[0] * math.prod(block)] + [s // b for s, b in zip(spatial, block)] + rest)


@kernel("BatchToSpaceND")
def _batch_to_space_nd(node, args, rt):
    x = args[0]
    block, crops = _block_args(args[1], args[2], x, "crops")
    m = len(block)
    prod = math.prod(block)
    if x.shape[0] % prod:
        raise ValueError(f"input batch {x.shape[0]} is not divisible by the product of block_shape {block}")
    batch = x.shape[0] // prod
    spatial = list(x.shape[1:1 + m])
    rest = list(x.shape[1 + m:])
    x = x.reshape(block + [batch] + spatial + rest)
    # [b1, ..., bM, batch, d1, ..., dM, rest] -> [batch, d1, b1, ..., dM, bM, rest]
    order = [m]
    for i in range(m):
        order += [m + 1 + i, i]
    order += list(range(2 * m + 1, x.dim()))
    x = x.permute(order).reshape([batch] + [d * b for d, b in zip(spatial, block)] + rest)
    for i, (a, b) in enumerate(crops):
        size = x.shape[1 + i]
        if a + b > size:
            raise ValueError(f"crops {[a, b]} are larger than dimension {1 + i} of size {size}")
        x = x.narrow(1 + i, a, size - a - b)
    return x


# ----------------------------------------------------------------------------------------------- 3-D convolution


def _ncdhw(node) -> bool:
    return node.attrs.get("data_format", "NDHWC").startswith("NC")


def _spatial3(values, nc: bool) -> list[int]:
    values = list(values) if values else [1] * 5
    return values[2:] if nc else values[1:-1]


def _to_ncdhw(x, nc: bool):
    return x if nc else x.permute(0, 4, 1, 2, 3)


def _from_ncdhw(x, nc: bool):
    return x if nc else x.permute(0, 2, 3, 4, 1)


def _pad3(x, pads, value: float = 0.0):
    flat = []
    for a, b in reversed(pads):
        flat.extend([a, b])
    return F.pad(x, flat, value=value) if any(flat) else x


@check("Conv3D", "Conv3DBackpropInputV2", "MaxPool3D", "AvgPool3D")
def _check_3d(node):
    padding = node.attrs.get("padding", "VALID")
    if padding not in ("SAME", "VALID"):
        return f"padding {padding!r}"
    fmt = node.attrs.get("data_format", "NDHWC")
    if fmt not in ("NDHWC", "NCDHW"):
        return f"data_format {fmt!r}"
    if node.type in ("MaxPool3D", "AvgPool3D"):
        nc = fmt == "NCDHW"
        for attr in ("ksize", "strides"):
            values = list(node.attrs.get(attr) or [1] * 5)
            if len(values) != 5 or values[0] != 1 or values[1 if nc else 4] != 1:
                return "pooling over the batch or channel dimension"
    return None


@kernel("Conv3D")
def _conv3d(node, args, rt):
    x, w = args
    nc = _ncdhw(node)
    strides = _spatial3(node.attrs.get("strides"), nc)
    dilations = _spatial3(node.attrs.get("dilations"), nc)
    xs = _to_ncdhw(x, nc)
    pads = _pads(node, xs.shape[2:], w.shape[:3], strides, dilations, nc)
    xs = _pad3(xs, pads)
    groups = xs.shape[1] // w.shape[3]
    out = F.conv3d(xs, w.permute(4, 3, 0, 1, 2), stride=strides, dilation=dilations, groups=groups)
    return _from_ncdhw(out, nc)


@kernel("Conv3DBackpropInputV2")
def _conv3d_backprop_input(node, args, rt):
    sizes, w, dy = args
    nc = _ncdhw(node)
    sizes = _ints(sizes)
    in_dhw = sizes[2:] if nc else sizes[1:4]
    strides = _spatial3(node.attrs.get("strides"), nc)
    dilations = _spatial3(node.attrs.get("dilations"), nc)
    pads = _pads(node, in_dhw, w.shape[:3], strides, dilations, nc)
    full = F.conv_transpose3d(_to_ncdhw(dy, nc), w.permute(4, 3, 0, 1, 2), stride=strides, dilation=dilations)
    # The transposed convolution covers the padded input: cut the padding off, zero-fill what it never reached.
    for axis, ((before, _), size) in enumerate(zip(pads, in_dhw)):
        dim = 2 + axis
        if full.shape[dim] < before + size:
            extra = before + size - full.shape[dim]
            full = F.pad(full, [0, 0] * (full.dim() - dim - 1) + [0, extra])
        full = full.narrow(dim, before, size)
    return _from_ncdhw(full, nc)


def _pool3d_params(node, x):
    nc = _ncdhw(node)
    ksize = _spatial3(node.attrs.get("ksize"), nc)
    strides = _spatial3(node.attrs.get("strides"), nc)
    xs = _to_ncdhw(x, nc)
    pads = _pads(node, xs.shape[2:], ksize, strides, (1, 1, 1), nc)
    return nc, ksize, strides, xs, pads


@kernel("MaxPool3D")
def _max_pool3d(node, args, rt):
    nc, ksize, strides, xs, pads = _pool3d_params(node, args[0])
    xs = _pad3(xs, pads, value=-math.inf)  # padding never wins a max
    return _from_ncdhw(F.max_pool3d(xs, ksize, strides), nc)


@kernel("AvgPool3D")
def _avg_pool3d(node, args, rt):
    nc, ksize, strides, xs, pads = _pool3d_params(node, args[0])
    if not any(p for pair in pads for p in pair):
        return _from_ncdhw(F.avg_pool3d(xs, ksize, strides), nc)
    # TensorFlow averages over the real elements of each window only.
    sums = F.avg_pool3d(_pad3(xs, pads), ksize, strides, divisor_override=1)
    ones = torch.ones((1, 1) + tuple(xs.shape[2:]), dtype=xs.dtype, device=xs.device)
    counts = F.avg_pool3d(_pad3(ones, pads), ksize, strides, divisor_override=1)
    return _from_ncdhw(sums / counts, nc)


# ----------------------------------------------------------------------------------------------- top k


@kernel("TopKV2", "TopK", multi=True)
def _top_k(node, args, rt):
    x = args[0]
    k = _int(args[1]) if node.type == "TopKV2" else int(node.attrs.get("k", 0))
    if k < 0:
        raise ValueError(f"Need k >= 0, got {k}")
    if x.dim() < 1 or x.shape[-1] < k:
        raise ValueError(f"input must have at least k columns. Had {x.shape[-1] if x.dim() else 0}, needed {k}")
    # A stable descending sort: equal values keep index order, lower index first (TensorFlow's order). With
    # sorted=False TensorFlow's order is unspecified; the same k elements are returned, sorted.
    order = torch.sort(x.detach(), dim=-1, descending=True, stable=True).indices[..., :k]
    index_type = torch_dtype(node.attrs.get("index_type") or "int32")
    return [torch.gather(x, -1, order), order.to(index_type)]

