"""Writing TensorFlow's checkpoint V2 "tensor bundle" (docs/format.md sections 1.4 to 2.6). The public face is
:mod:`ckpt.tf.bundle`.

Writing is crash-safe at the level of one bundle: data and index go to temporary names, are fsync'd, and are renamed
into place data first and index last, so a ``.index`` file only ever appears next to complete data; then the
directory is fsync'd. A write that fails removes everything it created, including files it already renamed into
place. Every file-system call goes through ``ckpt._fs`` (the seam the fault-injection tests wrap). (Updating the
``checkpoint`` state file, retention and locking live above this module.)
"""

from __future__ import annotations

import os
import secrets
import struct
import sys
from collections.abc import Sequence

import numpy as np

from .. import _fs, _seam
from .._fs import TMP_MARKER
from ..errors import DTypeNotSupportedError
from . import dtypes as _dtypes
from ._crc import crc32c, mask
from ._varint import encode_varint
from ._write_workers import _SMALL_PAYLOAD, _Shard, _WriteWorker
from .bundle_reader import (BUNDLE_VERSION, HEADER_KEY, _crc_pool, _encode_name, _fixed_lengths, data_filename,
                            index_filename)
from .dtypes import DType
from .protos import tensor_bundle_pb2
from .slices import encode_slice_key, is_slice_key
from .table import TableWriter

__all__ = ["BundleWriter", "encode_strings"]


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise DTypeNotSupportedError(f"string tensors hold str or bytes, not {type(value).__name__}")


def encode_strings(array: np.ndarray) -> tuple[bytes, int]:
    """The data-file payload of a string tensor and its unmasked CRC32C (docs/format.md section 2.2)."""
    items = [_as_bytes(v) for v in array.reshape(-1).tolist()]
    lengths = [len(b) for b in items]
    len_crc = crc32c(_fixed_lengths(lengths))
    masked = struct.pack("<I", mask(len_crc))
    body = b"".join(items)
    payload = b"".join(encode_varint(n) for n in lengths) + masked + body
    crc = crc32c(body, crc32c(masked, len_crc))
    return payload, crc

_LITTLE = ("<", "|", "=") if sys.byteorder == "little" else ("<", "|")  # byte orders written as they are
#: Payloads at least this large have their CRC32C computed in a helper thread while they are being written
#: (both the CRC library and ``write`` release the GIL), so the checksum costs no extra time.
_CRC_OVERLAP = 4 << 20


def _write_crc(raw: np.ndarray) -> int:
    """The CRC thread's share of a large save: the payload's CRC32C."""
    _seam.point("write.crc")
    return crc32c(raw)


#: Several data shards are written by parallel threads (at most this many, and no more than CPUs).
_PARALLEL_WRITES = True
_MAX_WRITE_THREADS = 8


_ENTRY_HEADS: dict[tuple[int, tuple[int, ...]], bytes] = {}  # (dtype, shape) -> encoded dtype and shape fields


def _encode_entry(dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int, masked_crc: int) -> bytes:
    """A whole tensor's ``BundleEntryProto``, serialized exactly as protobuf does (fields in number order, zero
    scalars omitted, the shape always present), without building a message object."""
    head = _ENTRY_HEADS.get((dtype, shape))
    if head is None:
        dims = b"".join(b"\x12" + _dim(d) for d in shape)
        head = (b"\x08" + encode_varint(dtype) if dtype else b"") + b"\x12" + encode_varint(len(dims)) + dims
        if len(_ENTRY_HEADS) >= 4096:
            _ENTRY_HEADS.clear()
        _ENTRY_HEADS[(dtype, shape)] = head
    out = [head]
    if shard:
        out.append(b"\x18" + encode_varint(shard))
    if offset:
        out.append(b"\x20" + encode_varint(offset))
    if size:
        out.append(b"\x28" + encode_varint(size))
    if masked_crc:
        out.append(b"\x35" + masked_crc.to_bytes(4, "little"))
    return b"".join(out)


def _dim(d: int) -> bytes:
    body = b"\x08" + encode_varint(d) if d else b""
    return encode_varint(len(body)) + body


def _pod_bytes(array: np.ndarray) -> np.ndarray:
    """A flat little-endian uint8 view of ``array`` (a copy only if it is not C-contiguous little-endian)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.uint8)


class BundleWriter:
    """Writes one bundle. Tensors are streamed to the data files as they are added; :meth:`finish` writes the index.

    Files go to temporary names (``...tmp-<random>``) until :meth:`finish` renames them into place, data first and
    index last; :meth:`abort` (or an exception inside a ``with`` block) removes them. Not thread-safe.

    Args:
        prefix: Checkpoint prefix to create.
        num_shards: Number of data files; tensors go to the least-filled one. Several shards are written by
            parallel threads (up to one per shard, at most the number of CPUs and 8), so the arrays given to
            :meth:`add` must not change until :meth:`finish` returns.
        sync: fsync files and the directory before returning from :meth:`finish` (durable on power loss):
            every data file and the index before any of them is renamed into place, the directory after.
        alignment: Pad each data file with zeros after every tensor up to a multiple of this many bytes, so each
            tensor starts aligned (TensorFlow's ``data_alignment``; entry sizes never include the padding and
            every reader ignores it). 1 (default): packed, byte-identical to TensorFlow's default.

    Small payloads (under 1 MiB) are gathered in a write buffer flushed in writes of 8 MiB or more; larger ones
    are written straight from the array's memory (``_fs.write_all`` loops below Linux's 2 GiB-per-write cap),
    their CRC32C computed in a helper thread while they are written.
    """

    def __init__(self, prefix: str | os.PathLike, *, num_shards: int = 1, sync: bool = True,
                 alignment: int = 1) -> None:
        if num_shards < 1:
            raise ValueError("num_shards must be at least 1")
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1:
            raise ValueError(f"alignment must be a positive number of bytes, not {alignment!r}")
        self.prefix = os.fspath(prefix)
        self.sync = sync
        self.alignment = alignment
        token = secrets.token_hex(4)
        self._token = token
        self._placed: list[str] = []  # final names already renamed into place (removed again on failure)
        self._shards: list[_Shard] = []
        # key -> the serialized BundleEntryProto of a whole tensor, or the proto of a partitioned one / a slice
        self._entries: dict[bytes, bytes | tensor_bundle_pb2.BundleEntryProto] = {}
        self._done = False
        self._single = num_shards == 1 and alignment == 1  # add()'s inlined path applies
        self._workers: list[_WriteWorker] = []
        try:
            for i in range(num_shards):
                final = data_filename(self.prefix, i, num_shards)
                self._shards.append(_Shard(f"{final}{TMP_MARKER}{token}", final, sync))
            if num_shards > 1 and _PARALLEL_WRITES:
                count = min(num_shards, os.cpu_count() or 1, _MAX_WRITE_THREADS)
                if count > 1:
                    self._workers = [_WriteWorker() for _ in range(count)]
                    for i, shard in enumerate(self._shards):
                        shard.worker = self._workers[i % count]
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ adding

    def _check_new(self, key: bytes, name: str) -> None:
        if self._done:
            raise RuntimeError("BundleWriter is already finished")
        if not key:
            raise ValueError("tensor names must not be empty (the empty key holds the bundle header)")
        if is_slice_key(key):
            raise ValueError(f"tensor name {name!r} must not start with a NUL byte")
        if key in self._entries:
            raise ValueError(f"tensor {name!r} was already added")

    def _write_payload(self, array: np.ndarray, dtype: DType, shard: _Shard | None = None):
        if shard is None:
            shards = self._shards
            shard = shards[0] if len(shards) == 1 else min(shards, key=lambda s: s.size)
        offset = shard.size
        if dtype.is_string:
            payload, crc = encode_strings(array)
            shard.write(payload)
            size = len(payload)
        else:
            raw = _pod_bytes(array)
            size = raw.nbytes
            if size >= _CRC_OVERLAP:
                # The CRC thread and the writer only read ``raw``; this thread waits for the CRC before returning,
                # and the writer (a worker thread, see _Shard) holds ``raw`` until finish() at the latest.
                pending = _crc_pool().submit(_write_crc, raw)  # computed while the bytes are being written
                try:
                    shard.write(raw)
                finally:
                    crc = pending.result()
            else:
                crc = crc32c(raw)
                shard.write(raw)
        if self.alignment > 1:
            shard.pad(self.alignment)  # the next tensor starts aligned; sizes never include the padding
        return (0 if len(self._shards) == 1 else self._shards.index(shard)), offset, size, crc

    def add(self, name: str, array, *, dtype: DType | None = None) -> None:
        """Append tensor ``name`` with the value ``array`` (anything ``np.asarray`` accepts).

        C-contiguous little-endian arrays are written straight from their memory (small ones through a write
        buffer); others are converted first.

        Args:
            dtype: Store as this TensorFlow type (e.g. a quantized type over its integer layout); inferred from
                the array by default.
        """
        key = name.encode("utf-8", "surrogateescape")
        if self._done or not key or key in self._entries or key[0] == 0:
            self._check_new(key, name)
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        np_dtype = array.dtype
        dtype = dtype or _dtypes.from_numpy(np_dtype)
        size = array.nbytes
        if (size < _SMALL_PAYLOAD and self._single and np_dtype.isbuiltin == 1 and np_dtype.byteorder in _LITTLE
                and array.flags.c_contiguous and not dtype.is_string):
            # The common small tensor, inlined: checksummed and appended to the write buffer from its memory.
            shard = self._shards[0]
            offset = shard.size
            crc = crc32c(array)
            shard.append_small(memoryview(array), size)
            self._entries[key] = _encode_entry(dtype.enum, array.shape, 0, offset, size, mask(crc))
            return
        shard, offset, size, crc = self._write_payload(array, dtype)
        self._entries[key] = _encode_entry(dtype.enum, array.shape, shard, offset, size, mask(crc))

    def add_slice(self, name: str, full_shape: Sequence[int], extents: Sequence[tuple[int, int]], array) -> None:
        """Append one slice of partitioned tensor ``name`` (TensorFlow's ``BundleWriter::AddSlice``).

        Args:
            full_shape: Shape of the whole tensor.
            extents: ``(start, length)`` per dimension; length -1 for a whole dimension.
            array: The slice's values.
        """
        array = np.asarray(array)
        dtype = _dtypes.from_numpy(array.dtype)
        full_shape = tuple(int(d) for d in full_shape)
        extents = tuple((int(s), int(n)) for s, n in extents)
        want = tuple(d if n == -1 else n for (_, n), d in zip(extents, full_shape))
        if len(extents) != len(full_shape) or array.shape != want:
            raise ValueError(f"slice {extents} of {name!r} {full_shape} needs an array of shape {want}, "
                             f"got {array.shape}")
        key = _encode_name(name)
        full = self._entries.get(key)
        if full is None:
            self._check_new(key, name)
            full = tensor_bundle_pb2.BundleEntryProto(dtype=dtype.enum)
            for d in full_shape:
                full.shape.dim.add(size=d)
            self._entries[key] = full
        elif isinstance(full, bytes) or not full.slices:
            raise ValueError(f"tensor {name!r} was already added whole")
        slice_key = encode_slice_key(key, extents)
        if slice_key in self._entries:
            raise ValueError(f"slice {extents} of {name!r} was already added")
        shard, offset, size, crc = self._write_payload(array, dtype)
        part = tensor_bundle_pb2.BundleEntryProto(dtype=dtype.enum, shard_id=shard, offset=offset, size=size,
                                                  crc32c=mask(crc))
        part.shape.SetInParent()
        for d in array.shape:
            part.shape.dim.add(size=d)
        self._entries[slice_key] = part
        proto_slice = full.slices.add()
        for start, length in extents:
            ext = proto_slice.extent.add(start=start)
            if length != -1:
                ext.length = length

    # ------------------------------------------------------------------ committing

    def index_bytes(self) -> bytes:
        header = tensor_bundle_pb2.BundleHeaderProto(num_shards=len(self._shards))
        header.version.producer = BUNDLE_VERSION
        table = TableWriter()
        table.add(HEADER_KEY, header.SerializeToString())
        for key in sorted(self._entries):
            value = self._entries[key]
            table.add(key, value if isinstance(value, bytes) else value.SerializeToString())
        return table.finish()

    def finish(self) -> list[str]:
        """Write the index and move every file into place. Returns the final file names, index last.

        Order: fsync and close each data file; write, fsync and close the index; rename the data files, then the
        index, into place; fsync the directory. If any step fails, every file this writer created is removed again
        (the index first, so the checkpoint never looks complete), and the error is raised.
        """
        if self._done:
            raise RuntimeError("BundleWriter is already finished")
        index_final = index_filename(self.prefix)
        index_tmp = f"{index_final}{TMP_MARKER}{self._token}"
        try:
            for shard in self._shards:
                shard.flush()
            self._stop_workers()  # every queued write done (the first error of any is raised)
            for shard in self._shards:
                if self.sync:
                    _fs.fsync(shard.fd)
                fd, shard.fd = shard.fd, -1
                _fs.close(fd)
            data = self.index_bytes()
            fd = _fs.create(index_tmp)
            try:
                _fs.write_all(fd, data)
                if self.sync:
                    _fs.fsync(fd)
            finally:
                _fs.close(fd)
            # An older checkpoint at the same prefix stops existing before its data files are replaced.
            if os.path.lexists(index_final):
                _fs.unlink(index_final)
            for shard in self._shards:
                _fs.replace(shard.tmp, shard.final)
                self._placed.append(shard.final)
            _fs.replace(index_tmp, index_final)
            self._placed.insert(0, index_final)
            if self.sync:
                _fs.fsync_dir(os.path.dirname(index_final))
        except BaseException:
            self.abort(extra=[index_tmp])
            raise
        self._done = True
        return [s.final for s in self._shards] + [index_final]

    def _stop_workers(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
        for shard in self._shards:
            shard.worker = None
        for worker in workers:
            worker.raise_error()

    def abort(self, extra: Sequence[str] = ()) -> None:
        """Close and delete every file this writer created (temporary or already renamed into place, the index
        first); nothing of this bundle is left behind."""
        self._done = True
        try:
            self._stop_workers()
        except BaseException:
            pass  # the error that made us abort is the one the caller sees
        for shard in self._shards:
            if shard.fd >= 0:
                fd, shard.fd = shard.fd, -1
                try:
                    _fs.close(fd)
                except OSError:
                    pass
        for path in self._placed + [s.tmp for s in self._shards] + list(extra):
            try:
                _fs.unlink(path)
            except OSError:
                pass
        self._placed = []

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._done:
            self.abort()
