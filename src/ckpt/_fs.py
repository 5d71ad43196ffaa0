"""The file-system calls ckpt makes when it writes, in one place: the seam the fault-injection tests wrap.

Every step of a save that changes the file system (creating, writing, fsyncing, closing, renaming and deleting
files, creating directories, opening the directory lock) goes through one of the primitives below, and the helpers
at the bottom are built only from them. ``tests/faults.py`` replaces the primitives to record the sequence of steps
a save makes, to kill the process at each one, and to make each one fail; nothing else may call ``os`` directly to
change files while saving.

The primitives look ``os`` functions up at call time, so patching ``os`` itself also still works.
"""

from __future__ import annotations

import errno
import os
import secrets
import sys

__all__ = ["PRIMITIVES", "TMP_MARKER", "create", "write", "fsync", "close", "replace", "unlink", "makedirs",
           "open_dir", "open_lock", "write_all", "fsync_dir", "start_writeback", "write_atomic", "temporary_name"]

#: The names of the primitives (what a fault-injection harness wraps).
PRIMITIVES = ("makedirs", "open_lock", "create", "write", "fsync", "close", "replace", "unlink", "open_dir")

TMP_MARKER = ".tmp-"  # temporary files of an unfinished save are named f"{final}{TMP_MARKER}{8 hex digits}"
WRITE_CHUNK = 1 << 30  # bytes per write call: below Linux's 2 GiB - 4 KiB cap on a single write
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
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
    """Open (creating if needed) the lock file ``path`` for reading and writing; returns the descriptor."""
    return os.open(path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)


def create(path: str) -> int:
    """Create ``path``, which must not exist, for writing; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644)


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
    """Open directory ``path`` read-only (to fsync it); returns the descriptor."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


# ---------------------------------------------------------------------------------------------------- helpers


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
