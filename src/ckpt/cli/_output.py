"""Helpers shared by every command: escaping untrusted names, sizes, tables fitted to the terminal, JSON, argparse
number types, and the progress bar (:class:`Progress`, :func:`progress_wanted`, :func:`add_quiet_option`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
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


def add_wide_option(parser: argparse.ArgumentParser) -> None:
    """``--wide``: never shorten table cells to the terminal's width."""
    parser.add_argument("--wide", "-w", action="store_true",
                        help="print long names in full instead of shortening them to the terminal's width")


def output_width(out: TextIO, wide: bool = False) -> int | None:
    """Columns a table printed to ``out`` must fit in: the terminal's width when ``out`` is a terminal (or
    ``COLUMNS`` is set), else None (a pipe or a file gets every cell in full, as does ``--wide``)."""
    if wide:
        return None
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty and not os.environ.get("COLUMNS", "").strip():
        return None
    return shutil.get_terminal_size().columns


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with ``...`` (both ends of a name tell)."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    keep = width - 3
    return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2:]


#: A column is never shortened below this many characters.
MIN_COLUMN = 12


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], *, right: Sequence[int] = (),
          out: TextIO | None = None, wide: bool = False) -> None:
    """Print an aligned text table; columns listed in ``right`` are right-aligned.

    On a terminal, the widest left-aligned columns are shortened (middle replaced by ``...``) until a row fits
    its width; ``wide=True`` (``--wide``), a pipe or a file print every cell in full."""
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    limit = output_width(out, wide)
    if limit is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - limit
        shrinkable = [i for i in range(len(widths)) if i not in right]
        while excess > 0:
            i = max(shrinkable, key=lambda j: widths[j], default=None)
            if i is None or widths[i] <= max(MIN_COLUMN, len(headers[i])):
                break
            widths[i] -= 1
            excess -= 1

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else shorten(c, w).ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths))]
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


# ---------------------------------------------------------------------------------------- argparse number types


def _number(kind: type, text: str, minimum: float, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value) or value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0 (``--precision``); anything else is a usage error (exit status 2)."""
    return _number(int, text, 0, "an integer >= 0")


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1 (``--depth``)."""
    return _number(int, text, 1, "an integer >= 1")


def nonnegative_float(text: str) -> float:
    """argparse ``type=``: a finite number >= 0 (``--atol``, ``--rtol``)."""
    return _number(float, text, 0.0, "a finite number >= 0")


# ---------------------------------------------------------------------------------------------------- progress

#: Seconds a task runs before its bar appears: commands that finish sooner draw nothing.
PROGRESS_DELAY = 0.5


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (alias ``--no-progress``): no progress bar. Shared by every command that draws one."""
    parser.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bar (also: CKPT_NO_PROGRESS=1; never drawn with --json or when stderr is "
                             "not a terminal)")


def progress_wanted(args: argparse.Namespace | None = None) -> bool:
    """Whether a command should draw a progress bar: stderr is a terminal, and neither ``--quiet``, ``--json`` nor
    ``CKPT_NO_PROGRESS=1`` says otherwise."""
    if args is not None and (getattr(args, "quiet", False) or getattr(args, "json", False)):
        return False
    if os.environ.get("CKPT_NO_PROGRESS", "").strip() not in ("", "0"):
        return False
    return _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr closed or replaced by something without isatty
        return False


class Progress:
    """A byte-count progress bar on stderr; does nothing when disabled.

    Call it as ``bar(done, total, name)`` (the ``progress=`` callback of ``ckpt.convert``, ``ckpt.verify`` and
    ``ckpt.diff``) or advance it with ``bar.update(n)``. Uses tqdm when it is installed, else a plain one-line bar.
    Nothing is drawn before :data:`PROGRESS_DELAY` seconds. Use it as a context manager (the bar is removed on
    exit) from one thread.

    Example:
        >>> with Progress("fetch", total=size, enabled=progress_wanted(args)) as bar:   # doctest: +SKIP
        ...     for chunk in chunks:
        ...         bar.update(len(chunk))
    """

    def __init__(self, desc: str, *, total: int | None = None, enabled: bool = True) -> None:
        self.desc = desc
        self.total = total
        self.enabled = enabled
        self.done = 0
        self._tqdm: Any = None
        self._plain_drawn = False
        self._start = time.monotonic()
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._tqdm = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, delay=PROGRESS_DELAY,
                          leave=False, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, name: str = "") -> None:
        if not self.enabled:
            return
        if total != self.total:
            self.total = total
            if self._tqdm is not None:
                self._tqdm.total = total
        self.update(done - self.done, name)

    def update(self, n: int, name: str = "") -> None:
        """Add ``n`` bytes done; ``name`` (what is being worked on) is shown beside the bar."""
        if not self.enabled:
            return
        self.done += n
        if self._tqdm is not None:
            if name:
                self._tqdm.set_postfix_str(_label(name), refresh=False)
            self._tqdm.update(n)
            return
        self._plain(name)

    def _plain(self, name: str) -> None:
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if now - self._start < PROGRESS_DELAY or (now - self._last < 0.1 and not finished):
            return
        self._last = now
        columns = shutil.get_terminal_size().columns - 1
        if self.total:
            filled = int(20 * min(self.done, self.total) / self.total)
            percent = 100 * min(self.done, self.total) // self.total
            head = (f"{self.desc} [{'#' * filled}{'.' * (20 - filled)}] {percent:3d}% "
                    f"{human_bytes(self.done)}/{human_bytes(self.total)}")
        else:
            head = f"{self.desc} {human_bytes(self.done)}"
        line = f"{head} {_label(name)}" if name else head
        sys.stderr.write("\r" + line[:columns].ljust(columns))
        sys.stderr.flush()
        self._plain_drawn = True

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        if self._plain_drawn:
            columns = shutil.get_terminal_size().columns - 1
            sys.stderr.write("\r" + " " * columns + "\r")
            sys.stderr.flush()
            self._plain_drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label(name: str) -> str:
    label = "".join(ch if ch.isprintable() else "?" for ch in name)
    return label if len(label) <= 40 else "..." + label[-37:]
