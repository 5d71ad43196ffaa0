"""TFRecord framing and TensorBoard events files (docs/format.md section 7).

A record is ``uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)``, all
little-endian; an events file is a sequence of records, each a serialized ``Event``, the first one carrying
``file_version: "brain.Event:2"``. There is no header or footer, so a file cut short just loses its last record:
the reader reports that as corruption instead of guessing.

Files are written under a temporary name and renamed into place, so TensorBoard (which polls the directory) never
sees half a record.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import _fs
from ..errors import ChecksumMismatchError, CorruptCheckpointError
from ._crc import crc32c, mask, unmask
from .protos import event_pb2

__all__ = ["frame_record", "read_records", "read_events", "write_events", "events_filename", "FILE_VERSION",
           "looks_like_records"]

FILE_VERSION = "brain.Event:2"
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
#: Largest record accepted when reading; protobuf messages cannot exceed 2 GiB anyway.
MAX_RECORD_BYTES = (1 << 31) - 1


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", mask(crc32c(length))) + bytes(data) + _FOOTER.pack(mask(crc32c(data)))


def looks_like_records(buf: bytes) -> bool:
    """True when ``buf`` starts with a well-formed TFRecord header (its length CRC checks out)."""
    if len(buf) < _HEADER.size:
        return False
    length, masked = _HEADER.unpack_from(buf, 0)
    return unmask(masked) == crc32c(buf[:8]) and length <= MAX_RECORD_BYTES


def read_records(buf: bytes, *, path: str = "<bytes>", truncated_ok: bool = False) -> Iterator[bytes]:
    """Yield the payload of each record in ``buf``, checking both CRCs.

    With ``truncated_ok``, a last record cut short (a file still being written) ends the iteration quietly; a bad
    CRC anywhere is still an error.

    Raises:
        CorruptCheckpointError: a truncated record or a length beyond the end of the buffer.
        ChecksumMismatchError: a CRC does not match.
    """
    pos, end = 0, len(buf)
    while pos < end:
        if end - pos < _HEADER.size:
            if truncated_ok:
                return
            raise CorruptCheckpointError(f"{path}: truncated record header at byte {pos}", path=path, offset=pos,
                                         expected=_HEADER.size, found=end - pos)
        length, masked = _HEADER.unpack_from(buf, pos)
        if unmask(masked) != crc32c(buf[pos:pos + 8]):
            raise ChecksumMismatchError(f"{path}: corrupted record length at byte {pos}", path=path, offset=pos)
        start = pos + _HEADER.size
        if length > end - start - _FOOTER.size:
            if truncated_ok:
                return
            raise CorruptCheckpointError(
                f"{path}: record at byte {pos} claims {length} bytes but only {max(end - start - 4, 0)} remain",
                path=path, offset=pos, expected=length, found=max(end - start - 4, 0))
        data = buf[start:start + length]
        (stored,) = _FOOTER.unpack_from(buf, start + length)
        if unmask(stored) != crc32c(data):
            raise ChecksumMismatchError(f"{path}: corrupted record data at byte {pos}", path=path, offset=pos)
        yield bytes(data)
        pos = start + length + _FOOTER.size


def read_events(path: str | os.PathLike) -> Iterator[event_pb2.Event]:
    """Yield the ``Event`` messages of an events file.

    Raises:
        CorruptCheckpointError: bad framing or a record that is not an Event.
    """
    path = os.fspath(path)
    with _fs.open_read(path) as f:
        buf = f.read()
    for i, data in enumerate(read_records(buf, path=path)):
        event = event_pb2.Event()
        try:
            event.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError
            raise CorruptCheckpointError(f"{path}: record {i} is not an Event ({exc})", path=path) from None
        yield event


def events_filename(logdir: str | os.PathLike, *, wall_time: float | None = None, suffix: str = "") -> Path:
    """``<logdir>/events.out.tfevents.<%010d seconds>.<hostname><suffix>``, as TensorFlow's EventsWriter names it."""
    seconds = int(time.time() if wall_time is None else wall_time)
    return Path(logdir) / f"events.out.tfevents.{seconds:010d}.{socket.gethostname()}{suffix}"


def write_events(logdir: str | os.PathLike, events: Iterable[event_pb2.Event], *, suffix: str = "",
                 writer: str = "ckpt") -> Path:
    """Write a new events file in ``logdir`` (created if needed): the ``file_version`` record, then ``events``.

    Args:
        logdir: Directory TensorBoard will be pointed at.
        events: Events to write after the version record, in order.
        suffix: Appended to the file name (TensorFlow 2 writers use ``.v2``).
        writer: Recorded in the first event's ``source_metadata``.

    Returns:
        The path of the new file. An existing file of the same name is never overwritten; a counter is appended.
    """
    now = time.time()
    os.makedirs(logdir, exist_ok=True)
    first = event_pb2.Event(wall_time=float(int(now)), file_version=FILE_VERSION)
    first.source_metadata.writer = writer
    payload = b"".join(frame_record(e.SerializeToString()) for e in [first, *events])
    target = events_filename(logdir, wall_time=now, suffix=suffix)
    n = 0
    while target.exists():
        n += 1
        target = events_filename(logdir, wall_time=now, suffix=f"{suffix}.{n}")
    tmp = target.with_name(f".ckpt-events.tmp-{secrets.token_hex(4)}")  # no "tfevents": TensorBoard skips it
    fd = _fs.create(str(tmp))  # never through a link, never over an existing file
    try:
        try:
            _fs.write_all(fd, payload)
            _fs.fsync(fd)
        finally:
            _fs.close(fd)
        _fs.replace(str(tmp), str(target))
    except BaseException:
        try:
            _fs.unlink(str(tmp))
        except OSError:
            pass
        raise
    return target
