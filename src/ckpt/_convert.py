"""``ckpt.convert``: any supported checkpoint in, any writable format out, one tensor at a time.

There is no separate conversion code path: a conversion reads with the source format's reader and writes with the
destination format's writer (``ckpt.formats``), joined by a generator that reads, renames and casts one tensor
when the writer asks for it. Peak memory is therefore about one tensor (two while a cast copy exists), never the
model.

The steps:

1. **Plan** (no I/O beyond the source's index): choose the tensors (``include``/``exclude`` globs on the source
   names), rename them with the same rules as ``ckpt.restore(map=...)``, work out each cast, and check every
   tensor against what the destination can hold. All problems are raised together before a byte is written.
2. **Write**: stream ``(name, array)`` pairs into the writer, computing a CRC32C of each array's bytes on the way.
3. **Verify**: reopen what was written with the destination format's reader and compare names, dtypes, shapes and
   the CRC32C of every tensor. Any difference raises :class:`~ckpt.errors.CorruptCheckpointError`.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from . import formats as _formats
from ._paths import local_path
from .api import NameMap, _mapper
from .errors import CheckpointError, CorruptCheckpointError, UnsupportedError
from .tf._crc import crc32c
from .tf.object_graph import OBJECT_GRAPH_KEY
from .formats import dtype_name
from .reader import Reader

__all__ = ["convert", "ConvertResult", "parse_size", "CASTS"]


class _Casts(Mapping):
    """Name -> NumPy dtype; bfloat16 is looked up on use so that importing this module does not import ml_dtypes."""

    _NAMES = ("bfloat16", "float16", "float32", "float64")

    def __getitem__(self, name: str) -> np.dtype:
        if name not in self._NAMES:
            raise KeyError(name)
        if name == "bfloat16":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._NAMES)

    def __len__(self) -> int:
        return len(self._NAMES)


#: Target types for ``dtype=``; only floating-point tensors are cast.
CASTS: Mapping[str, np.dtype] = _Casts()
_FLOAT_NAMES = {"float16", "float32", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                "float8_e5m2fnuz", "float8_e4m3b11fnuz"}
# Progress is drawn only for conversions that last longer than this (seconds), at most this often.
_PROGRESS_AFTER = 0.5
_PROGRESS_EVERY = 0.1

Progress = Union[bool, Callable[[int, int, str], None], None]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote.

    Attributes:
        source: What was read.
        destination: What was written (the file, the safetensors index, or the TensorFlow prefix).
        format: The destination format.
        source_format: The source format.
        files: Every file written (an index last).
        tensors: Number of tensors written.
        bytes: Bytes of tensor data written.
        names: ``{destination name: source name}`` for every tensor written.
        skipped: Source names left out (by ``include``/``exclude``, by a name map, or the TensorFlow object graph
            when names changed).
        cast: Destination names whose dtype was changed by ``dtype=``.
        verified: True when the written result was read back and matched.
    """

    source: Path
    destination: Path
    format: str
    source_format: str
    files: tuple[Path, ...]
    tensors: int
    bytes: int
    names: dict[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    cast: tuple[str, ...] = ()
    verified: bool = False


@dataclass(frozen=True)
class _Item:
    source: str
    target: str
    dtype: str  # after the cast
    cast: np.dtype | None
    shape: tuple[int, ...]
    nbytes: int


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"500MiB"`` -> 524_288_000, ``"1024"`` -> 1024 (Hugging Face's units)."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6,
             "GB": 10**9, "TB": 10**12, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "B": 1}
    for unit, factor in units.items():
        if s.endswith(unit):
            number = s[: -len(unit)]
            break
    else:
        number, factor = s, 1
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 5GB, 500MB, 2GiB, 1048576)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * factor)


def is_floating(dtype: str) -> bool:
    return dtype in _FLOAT_NAMES


def _selected(name: str, include: Sequence[str] | None, exclude: Sequence[str] | None) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude))


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def plan(reader: Reader, dst_format: str, *, map: NameMap | None = None, dtype: str | None = None,
         include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None,
         ) -> tuple[list[_Item], list[str]]:
    """The tensors to write and the source names left out; raises once listing every problem."""
    fn, _ = _mapper(map)
    include, exclude = _as_list(include), _as_list(exclude)
    cast_to = None
    if dtype is not None:
        if dtype not in CASTS:
            raise ValueError(f"dtype must be one of {', '.join(CASTS)}, not {dtype!r}")
        cast_to = CASTS[dtype]
    writer = _formats.get(dst_format)
    keep_graph = dst_format == "tensorflow" and map is None and reader.names == "raw"
    items: list[_Item] = []
    skipped: list[str] = []
    problems: list[str] = []
    targets: dict[str, str] = {}
    for name in reader.keys():
        if not _selected(name, include, exclude):
            skipped.append(name)
            continue
        if name == OBJECT_GRAPH_KEY and reader.format == "tensorflow" and not keep_graph:
            skipped.append(name)  # describes the source's keys; meaningless once names or the format change
            continue
        target = fn(name)
        if target is None:
            skipped.append(name)
            continue
        if target in targets:
            problems.append(f"{target!r}: the name map gives this name to both {targets[target]!r} and {name!r}")
            continue
        targets[target] = name
        info = reader.info(name)
        new_dtype, cast = info.dtype, None
        if cast_to is not None and is_floating(info.dtype) and info.dtype != dtype_name(cast_to):
            new_dtype, cast = dtype_name(cast_to), cast_to
        problem = writer.check(target, new_dtype)
        if problem:
            problems.append(f"{name!r}" + (f" (as {target!r})" if target != name else "") + f": {problem}")
            continue
        nbytes = info.nbytes if cast is None else info.num_elements * cast.itemsize
        items.append(_Item(name, target, new_dtype, cast, info.shape, nbytes))
    if problems:
        listing = "\n  ".join(problems[:50]) + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50
                                                 else "")
        raise UnsupportedError(
            f"cannot convert {reader.prefix} to {dst_format} ({len(problems)} problem(s); nothing was written):\n"
            f"  {listing}\nhint: leave tensors out with exclude=[...] / --exclude GLOB, or rename them with a map",
            path=reader.prefix)
    return items, skipped


def _remove(files: Sequence[Path]) -> None:
    for file in files:
        try:
            os.unlink(file)
        except OSError:
            pass


def checksum(array: np.ndarray) -> int:
    """CRC32C of an array's values: little-endian C-order bytes, or the elements with their lengths for strings."""
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        crc = 0
        for value in array.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            crc = crc32c(len(data).to_bytes(8, "little") + data, crc)
        return crc
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return crc32c(array.reshape(-1).view(np.uint8)) if array.size else 0


class _Bar:
    """A plain one-line progress bar on stderr, drawn only once a conversion has run for a moment."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total = max(total, 1)
        self.callback = progress if callable(progress) else None
        if progress is None:
            progress = sys.stderr.isatty()
        self.enabled = bool(progress) and self.callback is None
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, name: str) -> None:
        if self.callback is not None:
            self.callback(done, self.total, name)
            return
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < _PROGRESS_AFTER or (now - self.last < _PROGRESS_EVERY and done < self.total):
            return
        self.last = now
        width = 30
        filled = int(width * done / self.total)
        label = "".join(ch if ch.isprintable() else "?" for ch in name)
        if len(label) > 40:
            label = "..." + label[-37:]
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done // self.total:3d}% "
                f"{done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {label}")
        sys.stderr.write(line.ljust(100)[:120])
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\r" + " " * 120 + "\r")
            sys.stderr.flush()


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, format: str | None = None,
            map: NameMap | None = None, dtype: str | None = None, include: str | Sequence[str] | None = None,
            exclude: str | Sequence[str] | None = None, shard_size: int | str | None = None,
            progress: Progress = None, names: str = "raw", source_format: str | None = None,
            verify: bool = True, sync: bool = True) -> ConvertResult:
    """Convert a checkpoint between formats, streaming tensor by tensor, and verify the result.

    Args:
        src: Any checkpoint ``ckpt.Reader`` opens (format detected from the content).
        dst: Where to write: a ``.safetensors`` file, a ``.pt``/``.bin``/``.pth`` file, an ``.npz`` file, or
            otherwise a TensorFlow checkpoint prefix.
        format: The destination format, overriding the suffix: ``"safetensors"``, ``"torch"``, ``"numpy"`` or
            ``"tensorflow"``.
        map: Rename tensors exactly as ``ckpt.restore(map=...)`` does: a list of ``(regex, replacement)`` rules
            (the first that matches rewrites the name; an empty result drops the tensor), a dict
            ``{source name: destination name}`` (only the names it lists are converted), or a callable (None
            drops a name).
        dtype: ``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"float64"``: cast floating-point tensors to it;
            integer, boolean and string tensors are left alone.
        include: Glob(s) over source names; only matching tensors are converted.
        exclude: Glob(s) over source names to leave out (after ``include``).
        shard_size: For safetensors: the largest shard (bytes, or a string like ``"5GB"``); writes Hugging Face's
            ``model-0000N-of-0000M.safetensors`` plus ``model.safetensors.index.json``.
        progress: None: a progress bar on stderr when it is a terminal; True/False: force it on/off; a callable
            ``(done_bytes, total_bytes, name)`` to be told instead.
        names: ``"raw"`` or ``"clean"`` source names (see ``ckpt.Reader``); ``"clean"`` turns TensorFlow 2 keys
            like ``model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`` into ``model/dense/kernel``.
        source_format: Skip detection of the source's format.
        verify: Read the result back and compare every tensor (default).
        sync: fsync what is written.

    Returns:
        A :class:`ConvertResult`.

    Raises:
        UnsupportedError: some tensor cannot be written in the destination format (all are listed; nothing is
            written).
        CorruptCheckpointError: the written result does not read back equal.

    Example:
        >>> ckpt.convert("tf_model/ckpt-3", "model.safetensors", names="clean",
        ...              map=[(r"^model/", "")], exclude="optimizer/*")           # doctest: +SKIP
    """
    src, dst = local_path(src, what="checkpoint"), local_path(dst, what="destination")
    dst_format = _formats.destination_format(dst, format)
    if dst_format == "keras":
        raise UnsupportedError("ckpt reads Keras .weights.h5 files but does not write them; choose another "
                               "destination format", path=dst)
    size = parse_size(shard_size) if shard_size is not None else None
    if size is not None and dst_format != "safetensors":
        raise UnsupportedError(f"shard_size applies to safetensors destinations, not {dst_format}", path=dst)
    writer = _formats.get(dst_format)
    with Reader(src, names=names, format=source_format) as reader:
        _refuse_same_file(reader, dst)
        items, skipped = plan(reader, dst_format, map=map, dtype=dtype, include=include, exclude=exclude)
        bar = _Bar(sum(item.nbytes for item in items), progress)
        sums: dict[str, int] = {}

        def stream() -> Iterator[tuple[str, np.ndarray]]:
            done = 0
            for item in items:
                array = reader[item.source]
                if item.cast is not None:
                    array = np.asarray(array).astype(item.cast)
                sums[item.target] = checksum(array)
                done += item.nbytes
                bar.update(done, item.target)
                yield item.target, array
                del array

        try:
            files = writer.write(dst, stream(), metadata=reader.metadata or None, shard_size=size, sync=sync)
        finally:
            bar.close()
        source_path, source_format_name = reader.path, reader.format
    destination = files[-1] if dst_format == "safetensors" and files[-1].name.endswith(".index.json") else \
        (Path(dst) if dst_format == "tensorflow" else files[0])
    if verify:
        try:
            _verify(destination, dst_format, items, sums)
        except BaseException:
            _remove(files)  # a failed conversion leaves nothing behind
            raise
    return ConvertResult(
        source=source_path, destination=destination, format=dst_format, source_format=source_format_name,
        files=tuple(files), tensors=len(items), bytes=sum(item.nbytes for item in items),
        names={item.target: item.source for item in items}, skipped=tuple(skipped),
        cast=tuple(item.target for item in items if item.cast is not None), verified=verify)


def _refuse_same_file(reader: Reader, dst: str) -> None:
    candidates = [dst, dst + ".index"]
    sources = [reader.prefix, reader.prefix + ".index"]
    for a in candidates:
        for b in sources:
            try:
                if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
                    raise CheckpointError(f"the destination {dst} is the source checkpoint; write somewhere else",
                                          path=dst)
            except OSError:
                pass


def _verify(destination: Path, fmt: str, items: list[_Item], sums: dict[str, int]) -> None:
    problems = []
    with Reader(destination, format=fmt) as written:
        found = set(written.keys())
        wanted = {item.target for item in items}
        for name in sorted(wanted - found):
            problems.append(f"{name!r}: missing from the result")
        for name in sorted(found - wanted):
            problems.append(f"{name!r}: in the result but was not written")
        for item in items:
            if item.target not in found:
                continue
            info = written.info(item.target)
            if info.dtype != item.dtype or tuple(info.shape) != tuple(item.shape):
                problems.append(f"{item.target!r}: written as {item.dtype}{list(item.shape)}, reads back as "
                                f"{info.dtype}{list(info.shape)}")
                continue
            actual = checksum(written[item.target])
            if actual != sums.get(item.target):
                problems.append(f"{item.target!r}: values differ after writing (crc32c 0x{sums.get(item.target, 0):08x}"
                                f" written, 0x{actual:08x} read back)")
    if problems:
        raise CorruptCheckpointError(f"{destination}: verification after writing failed:\n  " + "\n  ".join(problems),
                                     path=destination)

