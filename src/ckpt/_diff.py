"""``ckpt.diff``: compare two checkpoints of any formats, tensor by tensor.

Names only in one side, dtype and shape changes, and for common tensors whether they are equal, the largest
absolute and relative difference and the norm of the change. Tensors are compared in chunks of
``_CHUNK`` elements in float64, so memory stays bounded however large a tensor is; both sides are opened lazily.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._paths import local_path
from .tf.object_graph import OBJECT_GRAPH_KEY
from .reader import Reader

__all__ = ["diff", "DiffResult", "TensorDiff"]

_CHUNK = 1 << 20  # elements compared at a time: 8 MiB per float64 temporary


@dataclass(frozen=True)
class TensorDiff:
    """How one tensor present in both checkpoints compares.

    Attributes:
        name: The tensor.
        dtype_a, dtype_b: dtype names on each side.
        shape_a, shape_b: shapes on each side.
        equal: Same dtype, shape and values (NaN equals NaN in the same place).
        close: Within ``atol + rtol * |b|`` everywhere (and same shape); False when shapes differ.
        max_abs: Largest ``|a - b|`` (None when not numeric or shapes differ).
        max_rel: Largest ``|a - b| / |b|`` over elements where ``b != 0`` (inf where only ``b`` is zero).
        norm: ``||a - b||_2``, the size of the change.
        mismatched: Number of elements outside the tolerance.
    """

    name: str
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    equal: bool
    close: bool
    max_abs: float | None = None
    max_rel: float | None = None
    norm: float | None = None
    mismatched: int = 0

    @property
    def dtype_changed(self) -> bool:
        return self.dtype_a != self.dtype_b

    @property
    def shape_changed(self) -> bool:
        return tuple(self.shape_a) != tuple(self.shape_b)


@dataclass(frozen=True)
class DiffResult:
    """The comparison of checkpoints ``a`` and ``b``.

    Attributes:
        a, b: What was compared.
        only_a: Names only in ``a``; only_b: names only in ``b``.
        tensors: Every common tensor, the largest changes first (shape/dtype changes, then by norm of the change).
        atol, rtol: The tolerances used.
    """

    a: Path
    b: Path
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    tensors: list[TensorDiff] = field(default_factory=list)
    atol: float = 0.0
    rtol: float = 0.0

    @property
    def changed(self) -> list[TensorDiff]:
        """Common tensors that are not within tolerance (including dtype or shape changes)."""
        return [t for t in self.tensors if not t.close or t.dtype_changed or t.shape_changed]

    @property
    def equal(self) -> bool:
        """Same names, dtypes and shapes, and every value within tolerance."""
        return not (self.only_a or self.only_b or self.changed)


def _numeric(array: np.ndarray) -> np.ndarray | None:
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "c":
        return array
    if kind == "V":  # bfloat16, float8 ... from ml_dtypes
        try:
            return array.astype(np.float32)
        except (TypeError, ValueError):
            return None
    return None


def _compare(name: str, a: np.ndarray, b: np.ndarray, da: str, db: str, atol: float, rtol: float) -> TensorDiff:
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if shape_a != shape_b:
        return TensorDiff(name, da, db, shape_a, shape_b, equal=False, close=False)
    na, nb = _numeric(a), _numeric(b)
    if na is None or nb is None:
        same = a.shape == b.shape and bool(np.all(a == b)) if a.size else True
        return TensorDiff(name, da, db, shape_a, shape_b, equal=same and da == db, close=same,
                          mismatched=0 if same else int(np.sum(a != b)))
    fa, fb = na.reshape(-1), nb.reshape(-1)
    complex_ = fa.dtype.kind == "c" or fb.dtype.kind == "c"
    work = np.complex128 if complex_ else np.float64
    max_abs = max_rel = 0.0
    sq = 0.0
    mismatched = 0
    exact = True
    for start in range(0, fa.size, _CHUNK):
        x = fa[start:start + _CHUNK].astype(work)
        y = fb[start:start + _CHUNK].astype(work)
        both_nan = np.isnan(x) & np.isnan(y)
        same = (x == y) | both_nan
        exact = exact and bool(same.all())
        delta = np.where(same, 0, np.abs(x - y)).astype(np.float64)
        finite = np.where(np.isnan(delta), np.inf, delta)
        if finite.size:
            max_abs = max(max_abs, float(finite.max()))
        ay = np.abs(y).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(delta == 0, 0.0, np.where(ay == 0, np.inf, finite / np.where(ay == 0, 1, ay)))
        if rel.size:
            max_rel = max(max_rel, float(rel.max()))
        with np.errstate(over="ignore", invalid="ignore"):
            sq += float(np.sum(np.square(finite)))
        outside = ~(same | (finite <= atol + rtol * ay))
        mismatched += int(outside.sum())
    norm = math.sqrt(sq) if math.isfinite(sq) else math.inf
    return TensorDiff(name, da, db, shape_a, shape_b, equal=exact and da == db, close=mismatched == 0,
                      max_abs=max_abs, max_rel=max_rel, norm=norm, mismatched=mismatched)


def _dtype(reader: Reader, name: str) -> str:
    return reader.info(name).dtype


def diff(a: str | os.PathLike, b: str | os.PathLike, *, atol: float = 0.0, rtol: float = 0.0,
         names: str = "raw", include: Sequence[str] | None = None,
         progress: Callable[[int, int, str], None] | None = None) -> DiffResult:
    """Compare two checkpoints of any supported formats.

    Args:
        a, b: Checkpoints ``ckpt.Reader`` opens (TensorFlow, safetensors, PyTorch, ``.npz``, Keras).
        atol, rtol: Values count as equal when ``|a - b| <= atol + rtol * |b|`` (NumPy's ``isclose``); the
            default is exact equality (NaN equals NaN).
        names: ``"raw"`` or ``"clean"`` names on both sides (``"clean"`` lines a TensorFlow 2 checkpoint up with a
            file converted from it with clean names). TensorFlow's ``_CHECKPOINTABLE_OBJECT_GRAPH`` is compared
            only when both sides have it (a conversion leaves it out).
        include: Only compare names matching one of these globs.
        progress: Called as ``progress(done_bytes, total_bytes, name)`` after each tensor compared (bytes of
            ``a``'s common tensors), e.g. to draw a progress bar.

    Returns:
        A :class:`DiffResult`; ``result.equal`` is True when nothing differs beyond the tolerance.

    Example:
        >>> ckpt.diff("tf/ckpt-3", "model.safetensors", names="clean").equal       # doctest: +SKIP
        True
    """
    import fnmatch

    a, b = local_path(a, what="checkpoint"), local_path(b, what="checkpoint")
    with Reader(a, names=names) as ra, Reader(b, names=names) as rb:
        keys_a, keys_b = set(ra.keys()), set(rb.keys())
        # TensorFlow's object graph describes the bundle's own keys; a conversion drops it, so it only counts
        # when both sides have one.
        if (OBJECT_GRAPH_KEY in keys_a) != (OBJECT_GRAPH_KEY in keys_b):
            keys_a.discard(OBJECT_GRAPH_KEY)
            keys_b.discard(OBJECT_GRAPH_KEY)
        if include:
            keys_a = {k for k in keys_a if any(fnmatch.fnmatchcase(k, p) for p in include)}
            keys_b = {k for k in keys_b if any(fnmatch.fnmatchcase(k, p) for p in include)}
        results = []
        common = sorted(keys_a & keys_b)
        total = sum(ra.info(name).nbytes for name in common) if progress is not None else 0
        done = 0
        for name in common:
            da, db = _dtype(ra, name), _dtype(rb, name)
            ia, ib = ra.info(name), rb.info(name)
            if tuple(ia.shape) != tuple(ib.shape):
                results.append(TensorDiff(name, da, db, tuple(ia.shape), tuple(ib.shape), equal=False, close=False))
            else:
                results.append(_compare(name, np.asarray(ra[name]), np.asarray(rb[name]), da, db, atol, rtol))
            if progress is not None:
                done += ia.nbytes
                progress(done, total, name)
        results.sort(key=lambda t: (not (t.shape_changed or t.dtype_changed),
                                    -(t.norm if t.norm is not None else (0.0 if t.close else math.inf)),
                                    -(t.max_abs or 0.0), t.name))
        return DiffResult(ra.path, rb.path, sorted(keys_a - keys_b), sorted(keys_b - keys_a), results, atol, rtol)
