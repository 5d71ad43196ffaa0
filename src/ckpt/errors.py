"""Every exception ckpt raises, grouped by area.

All of them derive from :class:`CheckpointError` and, where one fits, from the
matching built-in type, so ``except FileNotFoundError`` and ``except ValueError`` keep working. Errors carry
structured fields (``path``, ``key``, ``offset``, ``expected``, ``found``) that tools can read instead of parsing
the message.

The top-level package re-exports the base class and the three a user typically catches: ``ckpt.CheckpointError``,
``ckpt.CheckpointNotFoundError``, ``ckpt.CorruptCheckpointError`` and ``ckpt.UnsupportedError``; everything else is
reached as ``ckpt.errors.<Name>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "ChecksumMismatchError",
    "UnsupportedError",
    "DTypeNotSupportedError",
    "InvalidStateError",
    "StateMismatchError",
    "UnsupportedOperationsError",
    "FeedError",
    "OperationNotFoundError",
    "DownloadError",
    "UnsafeArchiveError",
    "LockTimeoutError",
    "CorruptCheckpointWarning",
]


class CheckpointError(Exception):
    """Base class of every ckpt error.

    Attributes:
        path: The file or prefix involved, when there is one.
        key: The tensor name involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.key = key

    def __str__(self) -> str:
        return self.message



class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint (or no tensor of that name) where one was asked for.

    The message names what was tried and what exists instead.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None,
                 tried: list[str] | None = None, available: list[str] | None = None) -> None:
        super().__init__(message, path=path, key=key)
        self.tried = list(tried or [])
        self.available = list(available or [])


class CorruptCheckpointError(CheckpointError, ValueError):
    """A file is damaged: truncated, a bad checksum, a malformed record, a size that does not add up.

    Attributes:
        offset: Byte offset in ``path`` where the problem was found, when known.
        expected: What the format requires there.
        found: What the file holds instead.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None,
                 offset: int | None = None, expected: Any = None, found: Any = None) -> None:
        super().__init__(message, path=path, key=key)
        self.offset = offset
        self.expected = expected
        self.found = found


class ChecksumMismatchError(CorruptCheckpointError):
    """A stored CRC32C does not match the bytes it covers."""


class UnsupportedError(CheckpointError, ValueError):
    """A valid file that uses a feature ckpt does not handle (Snappy blocks, variant tensors, ...)."""


class DTypeNotSupportedError(UnsupportedError, TypeError):
    """A dtype (or Python type) that cannot be stored in, or read from, a checkpoint."""


class InvalidStateError(CheckpointError, TypeError):
    """The state passed to ``save`` cannot be saved; the message lists every problem at once."""


class StateMismatchError(CheckpointError, ValueError):
    """A strict restore found names or shapes that do not match; nothing was modified.

    Attributes:
        missing: State names with no value in the checkpoint.
        unexpected: Checkpoint names nothing in the state asked for.
        mismatched: ``"name: why"`` for shape or dtype differences.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, missing: list[str] | None = None,
                 unexpected: list[str] | None = None, mismatched: list[str] | None = None) -> None:
        super().__init__(message, path=path)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class OperationNotFoundError(CheckpointError, KeyError):
    """A graph has no operation (or tensor) of the name asked for.

    Attributes:
        available: The closest names that do exist.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None,
                 available: list[str] | None = None) -> None:
        super().__init__(message, path=path, key=key)
        self.available = list(available or [])


# ---------------------------------------------------------------------------------------------- downloads


class DownloadError(CheckpointError, OSError):
    """``ckpt.fetch`` could not download a URL (no connection, an HTTP error, an interrupted transfer).

    Attributes:
        retryable: Whether trying again may help (a partial download is kept and resumed).
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, retryable: bool = False) -> None:
        super().__init__(message, path=path)
        self.retryable = retryable


class UnsafeArchiveError(CorruptCheckpointError):
    """An archive member ``ckpt.fetch`` refuses to extract: an absolute path, ``..``, a link leading outside, a
    device file, or more files or bytes than allowed. ``key`` names the member; nothing was extracted."""


# ---------------------------------------------------------------------------------------------- concurrency


class LockTimeoutError(CheckpointError, TimeoutError):
    """Another process is saving into the same directory and did not finish within ``lock_timeout``.

    Attributes:
        holder_pid: Process id of the holder, as it recorded it in the lock file (None when unknown).
        holder_host: Host name of the holder, when known.
        waited: Seconds spent waiting.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, holder_pid: int | None = None,
                 holder_host: str | None = None, waited: float = 0.0) -> None:
        super().__init__(message, path=path)
        self.holder_pid = holder_pid
        self.holder_host = holder_host
        self.waited = waited


# ---------------------------------------------------------------------------------------------- warnings


class UnsupportedOperationsError(UnsupportedError):
    """The outputs need operations ``to_torch`` cannot run.

    Attributes:
        operations: ``{op type (or "type: reason"): [names of the operations]}`` for every problem found.
        outputs: The requested outputs.
        paths: ``{operation name: [fetch, consumer, ..., operation]}``: how a fetch reaches each one.
    """

    def __init__(self, message: str, *, operations: dict[str, list[str]], outputs: Sequence[str],
                 path: str | None = None, paths: dict[str, list[str]] | None = None) -> None:
        super().__init__(message, path=path)
        self.operations = operations
        self.outputs = list(outputs)
        self.paths = dict(paths or {})


class FeedError(CheckpointError, ValueError):
    """A fed value does not fit its tensor, a placeholder was not fed, or a fetch cannot be computed."""


class CorruptCheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one that verifies (``Manager.restore``,
    ``ckpt.latest(..., verify=True)``)."""
