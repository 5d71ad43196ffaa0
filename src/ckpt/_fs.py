"""The file-system calls ckpt makes when it writes, in one place: the seam the fault-injection tests wrap.

Every step of a save that changes the file system (creating, writing, fsyncing, closing, renaming and deleting
files, creating directories, opening the directory lock) goes through one of the primitives below, and the helpers
at the bottom are built only from them. ``tests/faults.py`` replaces the primitives to record the sequence of steps
a save makes, to kill the process at each one, and to make each one fail; nothing else may call ``os`` directly to
change files while saving.

The primitives look ``os`` functions up at call time, so patching ``os`` itself also still works.

Links and special files. ckpt never writes through a symbolic link: every file it creates is opened with
``O_CREAT | O_EXCL | O_NOFOLLOW`` under a fresh temporary name and renamed into place (a rename replaces a link at
the final name, it does not write to the link's target), and the lock file is opened with ``O_NOFOLLOW`` and
refused when it is a link or not a regular file. The checkpoint *directory* may itself be a link (or lie below
one): that is common and legitimate, and paths through it are followed. For reading, a link to a regular file is
fine (checkpoints are often linked in), but ckpt reads only regular files: :func:`open_regular` refuses a named
pipe, a device, a socket or a directory (reached through a link or not) with a ckpt error naming the file, without
ever blocking on it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
from typing import BinaryIO

from .errors import CheckpointError, CorruptCheckpointError

__all__ = ["PRIMITIVES", "TMP_MARKER", "create", "write", "fsync", "close", "replace", "unlink", "makedirs",
           "open_dir", "open_lock", "write_all", "fsync_dir", "start_writeback", "write_atomic", "temporary_name",
           "create_scratch", "open_regular", "open_read", "check_regular"]

#: The names of the primitives (what a fault-injection harness wraps).
PRIMITIVES = ("makedirs", "open_lock", "create", "write", "fsync", "close", "replace", "unlink", "open_dir")

TMP_MARKER = ".tmp-"  # temporary files of an unfinished save are named f"{final}{TMP_MARKER}{8 hex digits}"
WRITE_CHUNK = 1 << 30  # bytes per write call: below Linux's 2 GiB - 4 KiB cap on a single write
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # missing on Windows, where links need privileges to create
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NEW_FILE = os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC  # O_EXCL alone already refuses any existing link
# A directory fsync that fails with these means "not supported here" (some network and FUSE file systems), not
# "your data is not durable"; any other error is reported.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.EROFS, getattr(errno, "ENOTSUP", errno.EINVAL),
                          getattr(errno, "EOPNOTSUPP", errno.EINVAL)}
# Opening a directory fails with these where that is impossible or not allowed (Windows: EACCES).
_DIR_OPEN_UNSUPPORTED = _DIR_FSYNC_UNSUPPORTED | {errno.EACCES, errno.EPERM, errno.EISDIR}


# ---------------------------------------------------------------------------------------------------- primitives


def makedirs(path: str) -> None:
    """Create directory ``path`` and its parents if missing."""
    os.makedirs(path, exist_ok=True)


def open_lock(path: str) -> int:
    """Open (creating if needed) the lock file ``path`` for reading and writing; returns the descriptor.

    Never through a link (a dangling one would create a file elsewhere, a live one would get the holder record
    written over its target's first bytes), and only a regular file (non-blocking, so a FIFO cannot hang us).

    Raises:
        CheckpointError: ``path`` is a symbolic link, or exists and is not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise CheckpointError(f"{path}: the lock file is a symbolic link; ckpt never writes through links. "
                                  "Remove the link (nothing but ckpt uses this file) and save again",
                                  path=path) from None
        if exc.errno == errno.EISDIR or os.path.isdir(path):
            raise CheckpointError(f"{path}: the lock file is a directory, not a regular file; remove it and save "
                                  "again", path=path) from None
        raise
    return _regular_and_blocking(fd, lambda mode: CheckpointError(
        f"{path}: the lock file is {_kind(mode)}, not a regular file; remove it and save again", path=path))


def create(path: str) -> int:
    """Create ``path``, which must not exist (not even as a dangling link), for writing; returns the descriptor."""
    return os.open(path, os.O_WRONLY | _NEW_FILE, 0o644)


def write(fd: int, data) -> int:
    """One ``write(2)``; returns the number of bytes written (possibly fewer than given)."""
    return os.write(fd, data)


def fsync(fd: int) -> None:
    os.fsync(fd)


def close(fd: int) -> None:
    os.close(fd)


def replace(src: str, dst: str) -> None:
    """Atomically rename ``src`` to ``dst``, replacing ``dst`` if it exists."""
    os.replace(src, dst)


def unlink(path: str) -> None:
    os.unlink(path)


def open_dir(path: str) -> int:
    """Open directory ``path`` read-only (to fsync it); returns the descriptor.

    A link to a directory is followed: the checkpoint directory may legitimately be one. ``O_DIRECTORY`` makes
    anything else (a FIFO included) fail at once instead of blocking.
    """
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)


# ---------------------------------------------------------------------------------------------------- helpers


def create_scratch(path: str) -> int:
    """Create ``path`` (a fresh temporary name) for reading and writing, private to the user; returns the
    descriptor. Like :func:`create`, never through a link and never over an existing file. Scratch files of a
    conversion are not steps of a save, so this is not a primitive."""
    return os.open(path, os.O_RDWR | _NEW_FILE, 0o600)


def create_new(path: str, mode: int = 0o644) -> int:
    """Create ``path`` for writing with permissions ``mode``, never through a link and never over an existing
    file; returns the descriptor. For files that are not steps of a save (extracted archive members), so this is
    not a primitive."""
    return os.open(path, os.O_WRONLY | _NEW_FILE, mode)


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> str:
    """A fresh private directory in ``parent`` (``tempfile.mkdtemp``: created with O_EXCL semantics, mode 0700)."""
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)


def _regular_and_blocking(fd: int, refuse) -> int:
    """``fd`` (opened non-blocking) if it is a regular file, made blocking; otherwise closed and ``refuse(mode)``
    raised. The check is on the descriptor, so a file swapped after a path check is still caught."""
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(path: str, mode: int) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path}: is {_kind(mode)}, not a regular file; ckpt reads only regular files (a symbolic link to one is "
        "fine)", path=path, expected="a regular file", found=_kind(mode))


def open_regular(path: str | os.PathLike) -> int:
    """Open ``path`` read-only if it is a regular file (links are followed); returns a blocking descriptor.

    Every file ckpt reads is opened here, so that a named pipe, a device or a directory in a checkpoint's place is
    refused instead of blocking forever (a FIFO) or being read without end (``/dev/zero``). The type is checked
    before opening (a device is never opened), the open is non-blocking, and ``fstat`` checks the file actually
    opened, so a swap in between is caught too.

    Raises:
        CorruptCheckpointError: ``path`` is not a regular file (the message says what it is).
        FileNotFoundError, PermissionError, ...: as ``open`` would.
    """
    path = os.fspath(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC | getattr(os, "O_BINARY", 0))
    return _regular_and_blocking(fd, lambda mode: _not_regular(path, mode))


def open_read(path: str | os.PathLike) -> BinaryIO:
    """:func:`open_regular` as a buffered binary file object (use it as ``with open_read(path) as f:``)."""
    return os.fdopen(open_regular(path), "rb")


def check_regular(path: str | os.PathLike) -> None:
    """Raise as :func:`open_regular` does unless ``path`` is a regular file. For readers that must hand a path to
    another library (h5py, ``torch.load(mmap=True)``), checked just before they open it."""
    os.close(open_regular(path))


def temporary_name(final: str) -> str:
    """A fresh temporary name beside ``final`` that sweeps recognise as a leftover of an unfinished save."""
    return f"{final}{TMP_MARKER}{secrets.token_hex(4)}"


def write_all(fd: int, data) -> int:
    """Write every byte of ``data`` (in chunks, retrying short writes). Returns the number of bytes."""
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        view = view[write(fd, view[:WRITE_CHUNK]):]
    return total


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None  # resolved on first use: libc's sync_file_range, or False where there is none


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``nbytes`` at ``offset`` of ``fd`` to disk now, without waiting (Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; a no-op elsewhere or on any error).

    A save calls this after each large write it will fsync, so the disk works while the next bytes are copied and
    the final fsync has little left to wait for. Not a step of the save: it changes nothing a crash could observe
    (the fsync that follows is what makes the data durable), so the fault-injection harness leaves it alone.
    """
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                func = ctypes.CDLL(None, use_errno=True).sync_file_range
                func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                func.restype = ctypes.c_int
                _sync_file_range = func
            except (OSError, AttributeError):
                pass
    if _sync_file_range:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)  # failures only lose the head start


def fsync_dir(path: str) -> None:
    """fsync directory ``path`` so that renames and deletions inside it survive a power loss.

    A no-op where directories cannot be opened (Windows) or do not support fsync; any other failure (EIO, ENOSPC)
    raises, because then what was just renamed may not be durable.
    """
    try:
        fd = open_dir(path or ".")
    except OSError as exc:
        if exc.errno in _DIR_OPEN_UNSUPPORTED:
            return  # directories cannot be opened here (Windows, some FUSE file systems): nothing to fsync
        raise
    try:
        fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        close(fd)


def write_atomic(path: str, data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file, write, fsync, close, rename, fsync directory.

    Readers see the old or the new content, never a mix. On failure the temporary file is removed and ``path`` is
    unchanged (unless the failure was the final directory fsync: the new content is then in place but may not
    survive a power loss, and the error is raised).
    """
    tmp = temporary_name(path)
    fd = create(tmp)
    try:
        try:
            write_all(fd, data)
            if sync:
                fsync(fd)
        finally:
            close(fd)
        replace(tmp, path)
    except BaseException:
        try:
            unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(os.path.dirname(path))
