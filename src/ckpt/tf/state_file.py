"""The ``checkpoint`` state file and finding the newest complete checkpoint in a directory (docs/format.md section 3).

The file is a text-format ``CheckpointState``. ckpt writes it atomically (temporary file, fsync, rename) with
paths relative to the directory, so a directory can be moved or copied. When reading, a relative path is joined
to the directory; an absolute path that no longer exists (the directory came from another machine) is looked up
by its base name inside the directory. A missing, empty or garbled file is not an error: ``latest`` then scans
the directory for complete checkpoints. ``latest(..., verify=True)`` also reads every candidate completely and
skips, with a warning, the ones that do not verify.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

from google.protobuf import text_format

from .. import _fs
from ..errors import CorruptCheckpointError, CorruptCheckpointWarning
from .bundle import TMP_MARKER, check_bundle, index_filename
from .protos import checkpoint_state_pb2
from .table import FOOTER_SIZE

__all__ = ["CheckpointState", "read_state", "write_state", "resolve", "latest", "find_checkpoints", "is_complete",
           "STATE_FILENAME"]

STATE_FILENAME = "checkpoint"
_STEP_RE = re.compile(r"-(\d+)$")


@dataclass
class CheckpointState:
    """Contents of a ``checkpoint`` file, with paths as written (relative or absolute).

    Attributes:
        model_checkpoint_path: The newest checkpoint's prefix.
        all_model_checkpoint_paths: Every listed prefix, oldest first (the newest is last).
        all_model_checkpoint_timestamps: Save times in seconds since the epoch, when recorded.
        last_preserved_timestamp: TensorFlow 2's bookkeeping for ``keep_checkpoint_every_n_hours``.
    """

    model_checkpoint_path: str = ""
    all_model_checkpoint_paths: list[str] = field(default_factory=list)
    all_model_checkpoint_timestamps: list[float] = field(default_factory=list)
    last_preserved_timestamp: float = 0.0

    def to_text(self) -> str:
        proto = checkpoint_state_pb2.CheckpointState(
            model_checkpoint_path=self.model_checkpoint_path,
            all_model_checkpoint_paths=self.all_model_checkpoint_paths,
            all_model_checkpoint_timestamps=self.all_model_checkpoint_timestamps,
            last_preserved_timestamp=self.last_preserved_timestamp)
        return text_format.MessageToString(proto)

    @classmethod
    def from_text(cls, text: str, path: str = "checkpoint") -> CheckpointState:
        """Parse the text format.

        Raises:
            CorruptCheckpointError: the text does not parse.
        """
        proto = checkpoint_state_pb2.CheckpointState()
        try:
            text_format.Parse(text, proto)
        except (text_format.ParseError, UnicodeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{path}: not a valid checkpoint state file ({exc})", path=path) from None
        return cls(proto.model_checkpoint_path, list(proto.all_model_checkpoint_paths),
                   list(proto.all_model_checkpoint_timestamps), proto.last_preserved_timestamp)


def read_state(directory: str | os.PathLike, *, filename: str = STATE_FILENAME) -> CheckpointState | None:
    """Read ``directory/checkpoint``; None when it is missing.

    Raises:
        CorruptCheckpointError: the file exists but does not parse.
    """
    path = os.path.join(os.fspath(directory), filename)
    try:
        with _fs.open_read(path) as f:
            # A state file is small; refuse to slurp a huge garbage file. (read(n) allocates n bytes up front, so
            # ask only for what the file holds, plus one byte to notice a file over the cap.)
            raw = f.read(min(os.fstat(f.fileno()).st_size, 16 * 1024 * 1024) + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if len(raw) > 16 * 1024 * 1024:
        raise CorruptCheckpointError(f"{path}: too large to be a checkpoint state file", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{path}: not a valid checkpoint state file ({exc})", path=path) from None
    return CheckpointState.from_text(text, path)


def write_state(directory: str | os.PathLike, state: CheckpointState, *, filename: str = STATE_FILENAME,
                sync: bool = True) -> str:
    """Atomically replace ``directory/checkpoint`` with ``state``. Returns the file's path.

    The text goes to a temporary file that is fsync'd, renamed over the old file, and then the directory is
    fsync'd (``sync=False`` skips both fsyncs). Readers see the old or the new file, never a mix.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, filename)
    _fs.write_atomic(path, state.to_text().encode("utf-8"), sync=sync)
    return path


def resolve(directory: str, recorded: str) -> str:
    """Turn a path from the state file into a usable prefix (see module docstring)."""
    direct = recorded if os.path.isabs(recorded) else os.path.join(directory, recorded)
    if os.path.exists(index_filename(direct)):
        return direct
    # Written on another machine or from another working directory: look for it beside the state file.
    moved = os.path.join(directory, os.path.basename(recorded))
    return moved if os.path.exists(index_filename(moved)) else direct


def is_complete(prefix: str) -> bool:
    """True when ``prefix.index`` looks like a whole table and every data file it names exists.

    This is a cheap check (no checksums): it reads the index's header entry and stats the data files.
    """
    from .bundle import BundleReader  # local: bundle imports this module's neighbours only

    try:
        if os.path.getsize(index_filename(prefix)) < FOOTER_SIZE:
            return False
        with BundleReader(prefix) as reader:
            return all(os.path.exists(p) for p in reader.data_files())
    except (OSError, CorruptCheckpointError, ValueError):
        return False


def _step_of(prefix: str) -> int | None:
    m = _STEP_RE.search(os.path.basename(prefix))
    return int(m.group(1)) if m else None


def find_checkpoints(directory: str | os.PathLike) -> list[str]:
    """Complete checkpoints found on disk in ``directory``, oldest first.

    Ordered by step number when every name ends in ``-<step>``, else by the index file's modification time.
    Temporary files of unfinished saves are ignored.
    """
    return _ordered([p for p in _indexed(os.fspath(directory)) if is_complete(p)])


def _indexed(directory: str) -> list[str]:
    """Prefixes of every ``.index`` file in ``directory`` (complete or not; temporaries excluded)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n[: -len(".index")]) for n in names
            if n.endswith(".index") and TMP_MARKER not in n]


def _ordered(found: list[str]) -> list[str]:
    """Oldest first: by step when every name ends in ``-<step>``, else by the index file's modification time."""
    steps = [_step_of(p) for p in found]
    if found and all(s is not None for s in steps):
        return [p for _, p in sorted(zip(steps, found))]

    def mtime(p: str) -> float:
        try:
            return os.stat(index_filename(p)).st_mtime_ns
        except OSError:
            return 0

    return sorted(found, key=lambda p: (mtime(p), p))


def latest(directory: str | os.PathLike, *, filename: str = STATE_FILENAME, verify: bool = False) -> str | None:
    """The newest complete checkpoint prefix in ``directory``, or None.

    The state file is trusted first (its newest entry that is complete on disk); when it is missing, empty,
    garbled, or names nothing that exists, the directory is scanned.

    Args:
        verify: Also read each candidate completely (every block and tensor checksum, see
            ``BundleReader.check``) and skip the ones with a problem, with a ``CorruptCheckpointWarning`` naming
            each skipped checkpoint and why. Candidates are the state file's entries, newest first, then the other
            complete checkpoints on disk, newest first. Costs one read of each candidate's data.
    """
    directory = os.fspath(directory)
    try:
        state = read_state(directory, filename=filename)
    except CorruptCheckpointError:
        state = None
    recorded: list[str] = []
    if state is not None:
        recorded = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path:
            recorded.append(state.model_checkpoint_path)
    listed = dict.fromkeys(resolve(directory, entry) for entry in reversed(recorded))  # newest first, no repeats
    if not verify:
        for prefix in listed:
            if is_complete(prefix):
                return prefix
        found = find_checkpoints(directory)
        return found[-1] if found else None
    # Here an index that does not even open is a candidate too, so that it is named in the warning.
    candidates = [p for p in listed if os.path.exists(index_filename(p))]
    candidates += [p for p in reversed(_ordered(_indexed(directory))) if p not in listed]
    skipped = []
    for prefix in candidates:
        result = check_bundle(prefix)
        if result.ok:
            if skipped:
                warnings.warn(f"ckpt.latest: skipped {_describe(skipped)}; using {prefix}", CorruptCheckpointWarning,
                              stacklevel=3)
            return prefix
        skipped.append((prefix, result.problems[0]))
    if skipped:
        warnings.warn(f"ckpt.latest: no checkpoint in {directory} verifies: {_describe(skipped)}",
                      CorruptCheckpointWarning, stacklevel=3)
    return None


def _describe(skipped: list[tuple[str, Exception]]) -> str:
    return "; ".join(f"{prefix} ({problem})" for prefix, problem in skipped)

