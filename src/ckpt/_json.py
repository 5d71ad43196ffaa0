"""Bounded JSON for ckpt's own records (the metadata tensor of a checkpoint): refuse what is too large or nested
too deeply *before* parsing, so a hostile file gives an error instead of a ``RecursionError`` or a huge
allocation, and whatever walks the parsed record afterwards (tree rebuilding, name maps) stays within the
interpreter's recursion limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "MAX_BYTES", "RECORD_FORMAT", "depth", "loads", "encode_record"]

#: Deepest nesting of arrays and objects accepted. A saved tree spends two levels per container level, and
#: ``save`` refuses records deeper than this, so everything ckpt writes reads back.
MAX_DEPTH = 256
#: Largest record accepted (a tree spec is ~100 bytes per tensor: a million tensors fit).
MAX_BYTES = 256 * 1024 * 1024
#: Version of the checkpoint record's layout (its ``"format"`` field).
RECORD_FORMAT = 1

# A JSON string, written so the regex engine does not backtrack per character: brackets inside strings do not
# nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_CHUNK = 1 << 20
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in the JSON text ``raw`` (outside strings); memory per 1 MiB chunk."""
    stripped = _STRING.sub(b'""', raw)
    deepest = level = 0
    for start in range(0, len(stripped), _CHUNK):
        steps = _OPEN[np.frombuffer(stripped, np.uint8, count=min(_CHUNK, len(stripped) - start), offset=start)]
        running = np.cumsum(steps, dtype=np.int64)
        if running.size:
            deepest = max(deepest, level + int(running.max()))
            level += int(running[-1])
    return deepest


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """Parse UTF-8 JSON text, refusing (``ValueError``) text larger than ``max_bytes`` or nested deeper than
    ``max_depth`` before parsing it."""
    if len(raw) > max_bytes:
        raise ValueError(f"{len(raw)} bytes, more than the {max_bytes} a ckpt record may have")
    found = depth(raw)
    if found > max_depth:
        raise ValueError(f"nested {found} levels deep, more than the {max_depth} a ckpt record may have")
    return json.loads(raw.decode("utf-8"))


def encode_record(record: dict) -> bytes:
    """ckpt's record as a checkpoint stores it (the ``_CKPT_METADATA`` string tensor): ``record`` plus
    ``"format"``, as UTF-8 JSON with sorted keys. The one encoder, used by ``ckpt.save`` and by conversions to a
    TensorFlow bundle; what :func:`loads` would refuse is refused here, before anything is written
    (``InvalidStateError``)."""
    from .errors import InvalidStateError

    try:
        encoded = json.dumps({**record, "format": RECORD_FORMAT}, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidStateError(f"metadata must be JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_BYTES or depth(encoded) > MAX_DEPTH:
        raise InvalidStateError(f"the state and metadata are nested too deeply or too large to record (at most "
                                f"{MAX_DEPTH} levels of JSON, {MAX_BYTES} bytes; a container level "
                                f"of the state takes two)")
    return encoded
