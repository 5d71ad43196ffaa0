"""``ckpt.verify``: read a checkpoint, or a whole checkpoint directory, completely and list everything wrong with it.

Reading a tensor already checks what concerns that tensor (its bounds, size and CRC32C, the checksum of each index
block on the way). ``verify`` does that for every tensor of every checkpoint, without building any value, and
collects every problem instead of stopping at the first: a bad block checksum, an entry that does not parse, a
truncated or missing data file, a tensor whose bytes do not match their checksum (strings and partitioned tensors
included). For a directory it also checks the ``checkpoint`` state file and the ``Manager`` records, and reports
leftovers of interrupted saves (temporary files, data files without their index).

It only reads; it never changes or deletes anything. ``Manager.restore`` and ``ckpt.latest(..., verify=True)`` use
the same per-checkpoint check to fall back to the newest checkpoint that verifies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _fs, _json
from ._lock import LOCK_FILENAME
from ._paths import local_path
from .api import TEMPORARY_RE
from .errors import CheckpointError, CheckpointNotFoundError
from .tf.bundle import BundleReader, check_bundle, index_filename
from .tf.state_file import STATE_FILENAME, read_state, resolve
from .manager import RECORD_SUFFIX, read_record
from .reader import METADATA_KEY, resolve_checkpoint

__all__ = ["verify", "VerifyReport", "Problem"]

_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong.

    Attributes:
        file: The file involved (an ``.index``, a ``.data-*`` file, the state file, a record, a leftover).
        what: What is wrong, in words.
        tensor: The tensor involved, when there is one.
        checkpoint: The checkpoint prefix involved, when there is one.
    """

    file: Path
    what: str
    tensor: str | None = None
    checkpoint: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "tensor": self.tensor,
                "checkpoint": None if self.checkpoint is None else str(self.checkpoint), "what": self.what}

    def __str__(self) -> str:
        tensor = "" if self.tensor is None else f" tensor {self.tensor!r}:"
        return f"{self.file}:{tensor} {self.what}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` checked and found.

    Attributes:
        path: What was asked for (a checkpoint or a directory).
        checkpoints: Every checkpoint prefix checked.
        problems: Everything wrong, in the order found; empty when all is well.
        tensors: Tensors checked completely.
        bytes: Tensor payload bytes checked.
        busy: A save was in progress in the directory, so temporary files were not reported as leftovers.
    """

    path: Path
    checkpoints: tuple[Path, ...]
    problems: tuple[Problem, ...]
    tensors: int
    bytes: int
    busy: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``ckpt verify --json`` prints)."""
        return {"path": str(self.path), "ok": self.ok, "checkpoints": [str(p) for p in self.checkpoints],
                "tensors": self.tensors, "bytes": self.bytes, "busy": self.busy,
                "problems": [p.to_dict() for p in self.problems]}


def verify(path: str | os.PathLike) -> VerifyReport:
    """Check a checkpoint, or every checkpoint in a directory, completely.

    For one checkpoint (a prefix or one of its files): the index (footer, every block checksum, the metaindex
    block, key order, every entry), that every data file exists, and every tensor's bounds, size and checksum
    (strings' length checksums, each slice of a partitioned tensor and how the slices tile it), and ckpt's own
    metadata record.

    For a directory: every checkpoint the ``checkpoint`` state file lists and every other ``.index`` on disk, as
    above; that the state file parses and that what it lists exists; every ``Manager`` record
    (``*.manager.json``): that it parses and that what it lists exists; and leftovers of interrupted saves
    (temporary files, ``.data-*`` files whose ``.index`` is missing), unless a save holds the directory lock right
    now.

    Nothing is changed or deleted.

    Args:
        path: A checkpoint prefix, one of its files, or a directory.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True when nothing is wrong.

    Raises:
        CheckpointNotFoundError: ``path`` is neither a directory nor a checkpoint.

    Example:
        >>> report = ckpt.verify("runs/exp1")                      # doctest: +SKIP
        >>> for problem in report.problems:
        ...     print(problem)
        runs/exp1/ckpt-30.data-00000-of-00001: tensor 'model/w': checksum mismatch (stored 0x..., computed 0x...)
    """
    target = local_path(path, what="checkpoint")
    if os.path.isdir(target):
        return _verify_directory(target)
    prefix = resolve_checkpoint(target)
    problems: list[Problem] = []
    tensors, nbytes = _verify_checkpoint(prefix, problems)
    return VerifyReport(Path(target), (Path(prefix),), tuple(problems), tensors, nbytes)


def _verify_checkpoint(prefix: str, problems: list[Problem]) -> tuple[int, int]:
    """Add the problems of the checkpoint at ``prefix``; returns (tensors, bytes) checked."""
    result = check_bundle(prefix)
    for error in result.problems:
        problems.append(_problem(error, prefix))
    _check_record(prefix, problems)
    return result.tensors, result.bytes


def _check_record(prefix: str, problems: list[Problem]) -> None:
    """ckpt's metadata tensor, when there is one, must hold a JSON object (read problems are check_bundle's)."""
    try:
        with BundleReader(prefix) as reader:
            entry = reader.entry(METADATA_KEY)
            if entry is None or not entry.dtype.is_string or entry.shape != ():
                return
            if entry.size > _json.MAX_BYTES:
                raise ValueError(f"{entry.size} bytes, more than the {_json.MAX_BYTES} a ckpt record may have")
            raw = reader.read_entry(entry).reshape(()).item()
        record = _json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except CheckpointError:
        return  # already reported by check_bundle
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        problems.append(Problem(Path(index_filename(prefix)), f"malformed ckpt metadata ({exc})", METADATA_KEY,
                                Path(prefix)))


def _problem(error: CheckpointError, prefix: str) -> Problem:
    file = error.path or index_filename(prefix)
    message = str(error)
    for lead in (f"{file}: ", f"{prefix}: "):
        if message.startswith(lead):
            message = message[len(lead):]
            break
    return Problem(Path(file), message, error.key or None, Path(prefix))


def _verify_directory(directory: str) -> VerifyReport:
    problems: list[Problem] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot list {directory}: {exc.strerror or exc}", path=directory) from None
    present = set(names)

    # The state file: it parses, and what it lists exists.
    prefixes: list[str] = []
    state_path = os.path.join(directory, STATE_FILENAME)
    try:
        state = read_state(directory)
    except CheckpointError as exc:
        state = None
        problems.append(Problem(Path(state_path), _strip(str(exc), state_path)))
    if state is not None:
        listed = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path and state.model_checkpoint_path not in listed:
            listed.append(state.model_checkpoint_path)
        if not state.model_checkpoint_path and listed:
            problems.append(Problem(Path(state_path), "model_checkpoint_path is empty but checkpoints are listed"))
        for recorded in listed:
            prefix = resolve(directory, recorded)
            if not os.path.exists(index_filename(prefix)):
                problems.append(Problem(Path(state_path), f"lists {recorded!r}, but {index_filename(prefix)} does "
                                                          "not exist", checkpoint=Path(prefix)))
            elif prefix not in prefixes:
                prefixes.append(prefix)

    # Every index on disk (a complete-looking checkpoint), whether listed or not.
    for name in names:
        if name.endswith(".index") and not TEMPORARY_RE.match(name):
            prefix = os.path.join(directory, name[: -len(".index")])
            if prefix not in prefixes:
                prefixes.append(prefix)

    # Manager records: they parse, and what they list exists.
    for name in names:
        if name.endswith(RECORD_SUFFIX) and not TEMPORARY_RE.match(name):
            manager_name = name[: -len(RECORD_SUFFIX)]
            record_path = Path(directory, name)
            try:
                record = read_record(directory, manager_name)
            except CheckpointError as exc:
                problems.append(Problem(record_path, _strip(str(exc), str(record_path))))
                continue
            for step, info in sorted((record.checkpoints if record else {}).items()):
                if not os.path.exists(index_filename(info.prefix)):
                    problems.append(Problem(record_path, f"lists step {step}, but {index_filename(info.prefix)} "
                                                         "does not exist", checkpoint=Path(info.prefix)))

    tensors = nbytes = 0
    for prefix in prefixes:
        t, b = _verify_checkpoint(prefix, problems)
        tensors += t
        nbytes += b

    # Leftovers of interrupted saves, unless a save is running right now (its temporaries are not leftovers).
    busy = _lock_held(directory)
    if not busy:
        for name in names:
            if TEMPORARY_RE.match(name):
                problems.append(Problem(Path(directory, name), "temporary file left over by an interrupted save; "
                                                               "the next save into this directory removes it"))
                continue
            match = _DATA_RE.match(name)
            if match and f"{match['prefix']}.index" not in present:
                problems.append(Problem(Path(directory, name), f"data file without its index "
                                                               f"({match['prefix']}.index is missing): left over by "
                                                               "an interrupted save or a partial deletion"))
    for prefix in prefixes:
        _check_stray_shards(prefix, present, directory, problems)
    return VerifyReport(Path(directory), tuple(Path(p) for p in prefixes), tuple(problems), tensors, nbytes, busy)


def _check_stray_shards(prefix: str, present: set[str], directory: str, problems: list[Problem]) -> None:
    """Data files of ``prefix`` with another shard count than its index says (left by an overwrite)."""
    base = os.path.basename(prefix)
    try:
        with BundleReader(prefix) as reader:
            mine = {os.path.basename(p) for p in reader.data_files()}
    except (CheckpointError, OSError):
        return
    for name in sorted(present):
        match = _DATA_RE.match(name)
        if match and match["prefix"] == base and name not in mine:
            problems.append(Problem(Path(directory, name), f"data file not part of {base} (its index names "
                                                           f"{len(mine)} data file(s))", checkpoint=Path(prefix)))


def _lock_held(directory: str) -> bool:
    """True when a save holds the directory lock (probed without creating or changing anything)."""
    try:
        import fcntl
    except ImportError:
        return False
    path = os.path.join(directory, LOCK_FILENAME)
    try:
        fd = _fs.open_regular(path)  # never blocks: a FIFO here is refused, not opened
    except (OSError, CheckpointError):
        return False  # no lock file (or not one a save could hold): nobody is saving
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock, if we got it
    return False


def _strip(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message

