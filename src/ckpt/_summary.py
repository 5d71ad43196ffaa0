"""Per-scope totals of a checkpoint: "what layers are in this file" (``ckpt inspect --summary``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .formats import TensorInfo

__all__ = ["ScopeSummary", "scope_of", "summarize"]


@dataclass(frozen=True)
class ScopeSummary:
    """Totals for the tensors under one name prefix.

    Attributes:
        scope: The prefix (``model``, ``optimizer``, ``model/encoder`` with ``depth=2``).
        tensors: How many tensors.
        parameters: Their element count.
        bytes: Their size in bytes.
        dtypes: The dtypes seen, sorted.
    """

    scope: str
    tensors: int
    parameters: int
    bytes: int
    dtypes: tuple[str, ...] = field(default_factory=tuple)


def scope_of(name: str, depth: int = 1) -> str:
    """The first ``depth`` parts of ``name``, split on ``/`` (or on ``.`` for names without ``/``, like PyTorch's
    ``encoder.layers.0.weight``), never the last part: ``optimizer/2`` is in ``optimizer`` at any depth. A name
    of one part is its own scope (``global_step``)."""
    sep = "/" if "/" in name else "."
    parts = name.split(sep)
    keep = min(depth, len(parts) - 1)
    return sep.join(parts[:keep]) if keep > 0 else name


def summarize(infos: Iterable[TensorInfo], depth: int = 1) -> list[ScopeSummary]:
    """Group tensors by :func:`scope_of` and total them, largest scopes (by bytes) first."""
    totals: dict[str, list] = {}
    for info in infos:
        scope = scope_of(info.name, depth)
        entry = totals.setdefault(scope, [0, 0, 0, set()])
        entry[0] += 1
        entry[1] += info.num_elements
        entry[2] += info.nbytes
        entry[3].add(info.dtype)
    out = [ScopeSummary(scope, n, p, b, tuple(sorted(d))) for scope, (n, p, b, d) in totals.items()]
    out.sort(key=lambda s: (-s.bytes, s.scope))
    return out
