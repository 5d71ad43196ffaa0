"""Rendering helpers shared by every command: escaping untrusted names, sizes, tables, JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np


def escape(text: str) -> str:
    """Make a name read from a file safe to print: control characters and lone surrogates become escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a raw byte kept by surrogateescape
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], *, right: Sequence[int] = (),
          out: TextIO | None = None) -> None:
    """Print an aligned text table; columns listed in ``right`` are right-aligned."""
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(line(row), file=out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def array_to_json(array: np.ndarray) -> Any:
    """Nested lists of JSON values (strings for bytes, "NaN"/"Infinity" for non-finite floats)."""
    if array.dtype.kind not in "biufcOSU?":  # bfloat16, float8 ...: go through float32
        array = array.astype(np.float32)
    return _jsonable(array.tolist())


def print_json(data: Any, out: TextIO | None = None) -> None:
    json.dump(_jsonable(data), out or sys.stdout, indent=2, allow_nan=False)
    print(file=out or sys.stdout)
