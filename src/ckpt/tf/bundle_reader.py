"""Reading TensorFlow's checkpoint V2 "tensor bundle": ``PREFIX.index`` + ``PREFIX.data-SSSSS-of-NNNNN``
(docs/format.md sections 1.4 to 2.6). The public face is :mod:`ckpt.tf.bundle`.

The index maps each tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C); the
data files hold the raw payloads. Everything read from a file is checked before it is trusted: sizes against shape
times item size and against the data file's length (so a forged header cannot cause a huge allocation), and
payload CRCs when a tensor is read. Also here: the file names, the name encoding and the CRC helper thread, which
the writer (:mod:`ckpt.tf.bundle_writer`) shares.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _fs, _seam
from ..errors import (CheckpointError, ChecksumMismatchError, CheckpointNotFoundError, CorruptCheckpointError,
                      UnsupportedError)
from . import dtypes as _dtypes
from ._crc import crc32c, unmask
from ._varint import VarintError, decode_varint
from .dtypes import DType
from .protos import tensor_bundle_pb2
from .slices import encode_slice_key, is_slice_key
from .table import TableReader

__all__ = ["TensorEntry", "BundleReader", "BundleCheck", "check_bundle", "data_filename", "index_filename"]

HEADER_KEY = b""
BUNDLE_VERSION = 1  # kTensorBundleVersion: written as producer; readers must accept min_consumer <= this
MAX_RANK = 254  # TensorFlow's TensorShape limit; deeper shapes in a file are corrupt
# Data files mapped when a bundle is opened, so that a reader keeps working if the checkpoint is deleted later
# (POSIX). Each map holds a file descriptor, so bundles with more shards map the rest on first use.
_EAGER_SHARDS = 256


def index_filename(prefix: str) -> str:
    return f"{prefix}.index"


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def _decode_name(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class TensorEntry(NamedTuple):
    """What the index says about one tensor.

    Attributes:
        name: Tensor name (the bundle key).
        dtype: Its data type.
        shape: Its full shape.
        shard: Data file number.
        offset: Byte offset of the payload in that data file.
        size: Payload size in bytes (0 for the full entry of a partitioned tensor).
        crc32c: Unmasked CRC32C of the payload.
        slices: For a partitioned tensor, the stored pieces as ``((start, length), ...)`` per dimension
            (length -1 for a whole dimension); empty otherwise.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[tuple[int, int], ...], ...] = ()

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes the tensor occupies in memory once read (payload bytes for strings)."""
        if self.dtype.is_string or not self.dtype.itemsize:
            return self.size
        return self.num_elements * self.dtype.itemsize
# ====================================================================================================== reading


class BundleReader:
    """Random access to the tensors of one bundle.

    Opening reads the index footer, index block and header only, and memory-maps the data files (without reading
    them), so that on POSIX systems a reader keeps working when the checkpoint's files are deleted or replaced
    after it was opened. Tensors are read on demand; POD tensors come back as read-only views of a memory-mapped
    data file (copied only when byte-swapping is needed). Reading from several threads is safe.

    Args:
        prefix: The checkpoint prefix (``.../model.ckpt-30``).
        verify_checksums: Check each tensor's CRC32C when it is read (default). Turning it off saves one pass over
            the bytes on trusted local files; sizes and block checksums are always checked.
    """

    def __init__(self, prefix: str | os.PathLike, *, verify_checksums: bool = True) -> None:
        self.prefix = os.fspath(prefix)
        self.verify_checksums = verify_checksums
        self.index_path = index_filename(self.prefix)
        self._lock = threading.Lock()
        self._maps: dict[int, tuple[mmap.mmap | bytes, int]] = {}
        self._ids: dict[int, tuple[int, int]] = {}  # shard -> (st_dev, st_ino) of the file mapped
        self._fds: dict[int, int] = {}  # shard -> descriptor for read_into (the same file as the map)
        self._closed = False
        try:
            with _fs.open_read(self.index_path) as f:
                size = os.fstat(f.fileno()).st_size
                self._index_buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint index at {self.index_path}", path=self.index_path,
                                          tried=[self.index_path]) from None
        self._table = TableReader(self._index_buf, self.index_path)
        raw = self._table.get(HEADER_KEY)
        if raw is None:
            raise CorruptCheckpointError(f"{self.index_path}: the bundle header entry (key \"\") is missing",
                                         path=self.index_path, key="")
        header = tensor_bundle_pb2.BundleHeaderProto()
        try:
            header.ParseFromString(raw)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise CorruptCheckpointError(f"{self.index_path}: malformed bundle header ({exc})",
                                         path=self.index_path, key="") from None
        v = header.version
        if v.producer < 0 or v.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in v.bad_consumers:
            raise UnsupportedError(
                f"{self.index_path}: bundle version producer={v.producer} min_consumer={v.min_consumer} "
                f"bad_consumers={list(v.bad_consumers)} is not readable by a version-{BUNDLE_VERSION} reader",
                path=self.index_path)
        if header.num_shards <= 0 or header.num_shards > 100_000:
            raise CorruptCheckpointError(
                f"{self.index_path}: implausible number of data shards {header.num_shards}",
                path=self.index_path, key="", expected="1..100000", found=header.num_shards)
        self.num_shards = header.num_shards
        self.big_endian = header.endianness == tensor_bundle_pb2.BundleHeaderProto.BIG
        if self.num_shards <= _EAGER_SHARDS:
            for shard in range(self.num_shards):
                try:
                    buf, size, self._ids[shard] = _map_file(data_filename(self.prefix, shard, self.num_shards),
                                                            ident=True)
                    self._maps[shard] = (buf, size)
                except (OSError, CorruptCheckpointError):
                    pass  # reported, with the tensor that needs it, when a tensor of this shard is read

    # ------------------------------------------------------------------ index

    def data_files(self) -> list[str]:
        return [data_filename(self.prefix, i, self.num_shards) for i in range(self.num_shards)]

    def names(self) -> Iterator[str]:
        """Tensor names in sorted order (slice entries and the header hidden)."""
        for key, _ in self._table.items(b"\x01"):
            yield _decode_name(key)

    def entries(self) -> Iterator[TensorEntry]:
        """Every tensor's entry in sorted name order."""
        for key, value in self._table.items(b"\x01"):
            yield self._parse_entry(key, value)

    def entry(self, name: str) -> TensorEntry | None:
        """The entry for ``name``, or None. Reads at most one index data block."""
        key = _encode_name(name)
        if not key or is_slice_key(key):
            return None
        value = self._table.get(key)
        return None if value is None else self._parse_entry(key, value)

    def _parse_entry(self, key: bytes, value: bytes, name: str | None = None) -> TensorEntry:
        name = name or _decode_name(key)
        path = self.index_path
        try:
            proto = _parse_entry_proto(value)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise CorruptCheckpointError(f"{path}: malformed entry for tensor {name!r} ({exc})",
                                         path=path, key=name) from None
        shard_id, offset, size = proto.shard_id, proto.offset, proto.size
        shape_proto = proto.shape
        shape = tuple([d.size for d in shape_proto.dim])
        dtype = _dtypes.from_enum(proto.dtype)
        if dtype is None:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} has unknown dtype number {proto.dtype}",
                                         path=path, key=name, found=proto.dtype)
        if shape_proto.unknown_rank:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} has a shape of unknown rank", path=path, key=name)
        count = 1
        for d in shape:  # TensorShape's checks: no negative sizes; the element count must fit in int64
            if d < 0 or count * d >= 1 << 63:
                raise CorruptCheckpointError(
                    f"{path}: tensor {name!r} has an invalid shape {list(shape)} (a negative size, or an element "
                    "count that overflows int64)", path=path, key=name, found=list(shape))
            count *= d
        if len(shape) > MAX_RANK:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} has an invalid shape {list(shape)}",
                                         path=path, key=name, found=list(shape))
        if offset < 0 or size < 0 or not 0 <= shard_id < self.num_shards:
            raise CorruptCheckpointError(
                f"{path}: tensor {name!r} points outside the checkpoint (shard {shard_id} of "
                f"{self.num_shards}, offset {offset}, size {size})", path=path, key=name)
        slices = tuple([self._parse_slice(name, shape, sl) for sl in proto.slices]) if proto.slices else ()
        entry = TensorEntry(name, dtype, shape, shard_id, offset, size, unmask(proto.crc32c), slices)
        if not slices and dtype.is_pod:
            expected = count * dtype.itemsize
            if size != expected:
                raise CorruptCheckpointError(
                    f"{path}: tensor {name!r} stores {size} bytes but its shape {list(shape)} of "
                    f"{dtype.name} needs {expected}", path=path, key=name, expected=expected, found=size)
        elif not slices and dtype.is_string and size < 4 + count:
            # Each element needs at least a 1-byte length, plus the 4-byte length checksum.
            raise CorruptCheckpointError(
                f"{path}: string tensor {name!r} stores {size} bytes, too few for {count} "
                "elements", path=path, key=name, expected=f">= {4 + count}", found=size)
        return entry

    def _parse_slice(self, name: str, shape: tuple[int, ...], proto) -> tuple[tuple[int, int], ...]:
        extents = list(proto.extent)
        if len(extents) > len(shape):
            raise CorruptCheckpointError(f"{self.index_path}: slice of {name!r} has more dimensions than the tensor",
                                         path=self.index_path, key=name)
        out = []
        for dim, size in enumerate(shape):
            if dim >= len(extents):
                out.append((0, -1))
                continue
            ext = extents[dim]
            length = ext.length if ext.HasField("length") else -1
            if ext.start < 0 or (length == -1 and ext.start != 0) or length < -1 or \
                    (length >= 0 and ext.start + length > size):
                raise CorruptCheckpointError(
                    f"{self.index_path}: slice ({ext.start}, {length}) of {name!r} is outside dimension {dim} "
                    f"of size {size}", path=self.index_path, key=name)
            out.append((ext.start, length))
        return tuple(out)

    # ------------------------------------------------------------------ data

    def _shard(self, shard: int, name: str) -> tuple[mmap.mmap | bytes, int]:
        with self._lock:
            found = self._maps.get(shard)
            if found is not None:
                return found
            path = data_filename(self.prefix, shard, self.num_shards)
            try:
                buf, size, self._ids[shard] = _map_file(path, ident=True)
            except FileNotFoundError:
                raise CorruptCheckpointError(
                    f"{path}: data file is missing (tensor {name!r} is stored in it); the checkpoint is incomplete",
                    path=path, key=name) from None
            except CorruptCheckpointError as exc:  # not a regular file
                raise CorruptCheckpointError(f"{exc} (tensor {name!r} is stored in it)", path=path, key=name,
                                             expected=exc.expected, found=exc.found) from None
            self._maps[shard] = (buf, size)
            return buf, size

    def _payload(self, entry: TensorEntry, verify: bool | None = None) -> memoryview:
        buf, file_size = self._shard(entry.shard, entry.name)
        self._check_bounds(entry, file_size)
        view = memoryview(buf)[entry.offset:entry.offset + entry.size]
        if (self.verify_checksums if verify is None else verify) and not entry.dtype.is_string:
            self._check_crc(entry, crc32c(view))
        return view

    def _check_bounds(self, entry: TensorEntry, file_size: int) -> None:
        if entry.offset + entry.size > file_size:
            path = data_filename(self.prefix, entry.shard, self.num_shards)
            raise CorruptCheckpointError(
                f"{path}: tensor {entry.name!r} needs bytes {entry.offset}..{entry.offset + entry.size} but the "
                f"file has {file_size}; it is truncated", path=path, key=entry.name, offset=entry.offset,
                expected=entry.offset + entry.size, found=file_size)

    def _check_crc(self, entry: TensorEntry, actual: int) -> None:
        if actual != entry.crc32c:
            path = data_filename(self.prefix, entry.shard, self.num_shards)
            raise ChecksumMismatchError(
                f"{path}: checksum mismatch for tensor {entry.name!r} (stored 0x{entry.crc32c:08x}, computed "
                f"0x{actual:08x}); the data file is corrupt", path=path, key=entry.name, offset=entry.offset,
                expected=f"0x{entry.crc32c:08x}", found=f"0x{actual:08x}")

    def _fd(self, shard: int) -> int | None:
        """A descriptor of the data file that is mapped for ``shard`` (None if that file cannot be opened again,
        e.g. because it was deleted or replaced since the bundle was opened)."""
        with self._lock:
            fd = self._fds.get(shard)
            ident = self._ids.get(shard)
        if fd is not None or ident is None or not hasattr(os, "preadv"):
            return fd
        try:
            fd = _fs.open_regular(data_filename(self.prefix, shard, self.num_shards))
        except (OSError, CorruptCheckpointError):
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)
            return None
        with self._lock:
            if shard in self._fds or self._closed:
                os.close(fd)
                return self._fds.get(shard)
            self._fds[shard] = fd
        return fd

    def _direct(self, entry: TensorEntry, out: np.ndarray) -> bool:
        """Whether ``entry``'s bytes can go straight from the file into ``out`` (no conversion needed)."""
        dtype = entry.dtype
        return (not entry.slices and dtype.is_pod and dtype.native and dtype.numpy is not None
                and (not self.big_endian or dtype.itemsize == 1) and out.flags.c_contiguous
                and out.flags.writeable and out.dtype == dtype.numpy and out.dtype.isnative
                and out.nbytes == entry.size)

    def read_into(self, entry: TensorEntry, out: np.ndarray) -> None:
        """Read tensor ``entry`` into the existing array ``out`` (of the tensor's shape); see :meth:`read_many_into`.

        Raises:
            ValueError: ``out`` has another shape.
            CorruptCheckpointError: as :meth:`read_entry`.
        """
        self.read_many_into([(entry, out)])

    def read_many_into(self, pairs: Sequence[tuple[TensorEntry, np.ndarray]]) -> None:
        """Read each ``(entry, out)`` tensor into its existing array ``out`` (of the tensor's shape).

        Where ``out`` is C-contiguous, writable and of the tensor's dtype (a POD tensor of a little-endian bundle),
        the bytes go straight from the data file into ``out``'s memory with ``preadv``: tensors that are adjacent
        in the file are read by one call (up to 1,024 of them, 2 MiB at a time, large tensors in 2 MiB pieces), so
        thousands of small tensors cost a few system calls, and the CRC32C of each piece is computed in a helper
        thread while the next piece is read. Other targets are filled by copying what :meth:`read_entry` returns.

        Every tensor is read before a checksum mismatch is raised (as ``ChecksumMismatchError`` naming the first
        bad tensor), so the targets then hold the corrupt bytes.

        Raises:
            ValueError: an ``out`` has another shape (checked before anything is read).
            CorruptCheckpointError: as :meth:`read_entry`.
        """
        by_shard: dict[int, list[tuple[TensorEntry, np.ndarray]]] = {}
        copied = []
        for entry, out in pairs:
            if out.shape != entry.shape:
                raise ValueError(f"tensor {entry.name!r} has shape {list(entry.shape)}, the target "
                                 f"{list(out.shape)}")
            if self._direct(entry, out):
                by_shard.setdefault(entry.shard, []).append((entry, out))
            else:
                copied.append((entry, out))
        for entry, out in copied:
            out[...] = self.read_entry(entry)
        for shard, items in by_shard.items():
            fd = self._fd(shard)
            if fd is None:
                for entry, out in items:
                    out[...] = self.read_entry(entry)
                continue
            _, file_size = self._shard(shard, items[0][0].name)
            for entry, _ in items:
                self._check_bounds(entry, file_size)
            items.sort(key=_by_offset)
            self._preadv_all(fd, items)

    def _preadv_all(self, fd: int, items: list[tuple[TensorEntry, np.ndarray]]) -> None:
        """Fill each target of ``items`` (sorted by offset, bounds checked) from ``fd``, batching adjacent tensors
        into ``preadv`` calls; checksums are verified piece by piece, in file order (see :class:`_PieceChecks`).

        Ownership: the calling thread writes the targets (``preadv``) and owns each piece until it hands it to the
        checks; the checks only read it, and the calling thread never writes it again. Every check has finished
        when this returns or raises, so no helper thread reads a target afterwards. (The gap scratch buffer
        ``_GAP`` is written by concurrent readers at once, and never read.)
        """
        checks = _PieceChecks(items) if self.verify_checksums else None
        try:
            for offset, buffers, pieces, nbytes in _read_plan(items):
                self._preadv_exactly(fd, buffers, offset, nbytes, items[pieces[0][0]][0])
                _seam.point("read.piece")
                if checks is not None:
                    checks.add(pieces, overlap=nbytes >= _CRC_OVERLAP_READ and len(pieces) <= 64)
        finally:
            if checks is not None:
                checks.settle()
        if checks is not None and checks.bad is not None:
            self._check_crc(items[checks.bad][0], checks.crcs[checks.bad])

    def _preadv_exactly(self, fd: int, buffers: list, offset: int, nbytes: int, first: TensorEntry) -> None:
        got = os.preadv(fd, buffers, offset)
        while got < nbytes:  # a short read: continue where it stopped (the file was bounds-checked)
            if got <= 0:
                path = data_filename(self.prefix, first.shard, self.num_shards)
                raise CorruptCheckpointError(f"{path}: the data file ends early (reading tensor {first.name!r} "
                                             f"at offset {offset})", path=path, key=first.name, offset=offset)
            offset += got
            nbytes -= got
            while got >= len(buffers[0]):
                got -= len(buffers[0])
                buffers = buffers[1:]
            buffers = [buffers[0][got:]] + buffers[1:]
            got = os.preadv(fd, buffers, offset)

    def read(self, name: str) -> np.ndarray:
        """Read tensor ``name``.

        Returns:
            A NumPy array. POD tensors are read-only views of the memory-mapped file; strings are ``object``
            arrays of ``bytes``; partitioned tensors are assembled from their slices.

        Raises:
            CheckpointNotFoundError: no tensor of that name.
            CorruptCheckpointError: the stored bytes do not check out.
            UnsupportedError: a resource or variant tensor.
        """
        entry = self.entry(name)
        if entry is None:
            raise CheckpointNotFoundError(f"{self.prefix}: no tensor named {name!r}", path=self.prefix, key=name)
        return self.read_entry(entry)

    def read_entry(self, entry: TensorEntry) -> np.ndarray:
        if entry.dtype.numpy is None:
            raise UnsupportedError(
                f"{self.prefix}: tensor {entry.name!r} has dtype {entry.dtype.name}, which has no array value "
                "ckpt can produce", path=self.prefix, key=entry.name)
        if entry.slices:
            return self._assemble(entry)
        view = self._payload(entry)
        if entry.dtype.is_string:
            return self._decode_strings(entry, view)
        array = np.frombuffer(view, dtype=entry.dtype.numpy, count=entry.num_elements).reshape(entry.shape)
        if self.big_endian and entry.dtype.itemsize > 1:
            array = _byteswapped(array)
        return array

    def _decode_strings(self, entry: TensorEntry, view: memoryview, verify: bool | None = None) -> np.ndarray:
        path = data_filename(self.prefix, entry.shard, self.num_shards)
        data = bytes(view)
        n = entry.num_elements
        lengths = []
        pos = 0
        try:
            for _ in range(n):
                length, pos = decode_varint(data, pos, len(data))
                lengths.append(length)
        except VarintError as exc:
            raise CorruptCheckpointError(f"{path}: string tensor {entry.name!r} has a malformed length ({exc})",
                                         path=path, key=entry.name, offset=entry.offset) from None
        if pos + 4 + sum(lengths) != len(data):
            raise CorruptCheckpointError(
                f"{path}: string tensor {entry.name!r} lengths add up to {pos + 4 + sum(lengths)} bytes but its "
                f"entry says {len(data)}", path=path, key=entry.name, expected=len(data),
                found=pos + 4 + sum(lengths))
        (stored_len_crc,) = struct.unpack_from("<I", data, pos)
        order = ">" if self.big_endian else "<"
        len_crc = crc32c(_fixed_lengths(lengths, order))
        if self.verify_checksums if verify is None else verify:
            if unmask(stored_len_crc) != len_crc:
                raise ChecksumMismatchError(
                    f"{path}: length checksum mismatch in string tensor {entry.name!r}", path=path, key=entry.name,
                    offset=entry.offset, expected=f"0x{unmask(stored_len_crc):08x}", found=f"0x{len_crc:08x}")
            actual = crc32c(data[pos:], len_crc)
            if actual != entry.crc32c:
                raise ChecksumMismatchError(
                    f"{path}: checksum mismatch for string tensor {entry.name!r} (stored 0x{entry.crc32c:08x}, "
                    f"computed 0x{actual:08x})", path=path, key=entry.name, offset=entry.offset,
                    expected=f"0x{entry.crc32c:08x}", found=f"0x{actual:08x}")
        out = np.empty(n, dtype=object)
        p = pos + 4
        for i, length in enumerate(lengths):
            out[i] = data[p:p + length]
            p += length
        return out.reshape(entry.shape)

    def _assemble(self, entry: TensorEntry) -> np.ndarray:
        """Build a partitioned tensor from its slice entries, after checking that they tile it exactly."""
        pieces = self._slice_parts(entry)
        # Read (and bounds-check) every slice before allocating, so a forged shape cannot cause a huge allocation.
        values = [(box, self.read_entry(part)) for box, part in pieces]
        out = np.empty(entry.shape, dtype=entry.dtype.numpy)
        for box, value in values:
            out[tuple(slice(s, s + n) for s, n in box)] = value
        return out

    def _slice_parts(self, entry: TensorEntry) -> list[tuple[tuple[tuple[int, int], ...], TensorEntry]]:
        """The slice entries of a partitioned tensor with their boxes, checked to tile it exactly."""
        path = self.index_path
        name = entry.name
        pieces = []
        covered = 0
        boxes = []
        for extents in entry.slices:
            box = tuple((s, d if n == -1 else n) for (s, n), d in zip(extents, entry.shape))
            key = encode_slice_key(_encode_name(name), extents)
            raw = self._table.get(key)
            if raw is None:
                raise CorruptCheckpointError(f"{path}: slice {list(extents)} of tensor {name!r} is listed but missing",
                                             path=path, key=name)
            part = self._parse_entry(key, raw, f"{name}[{_slice_spec(extents)}]")
            want = tuple(n for _, n in box)
            if part.shape != want or part.dtype != entry.dtype:
                raise CorruptCheckpointError(
                    f"{path}: slice {list(extents)} of tensor {name!r} has shape {list(part.shape)} "
                    f"{part.dtype.name}, expected {list(want)} {entry.dtype.name}", path=path, key=name)
            for other in boxes:
                if all(a < c + m and c < a + n for (a, n), (c, m) in zip(box, other)):
                    raise CorruptCheckpointError(f"{path}: slices of tensor {name!r} overlap", path=path, key=name)
            boxes.append(box)
            covered += part.num_elements
            pieces.append((box, part))
        if covered != entry.num_elements:
            raise CorruptCheckpointError(
                f"{path}: the slices of tensor {name!r} cover {covered} of its {entry.num_elements} elements",
                path=path, key=name, expected=entry.num_elements, found=covered)
        return pieces

    # ------------------------------------------------------------------ verification

    def check_entry(self, entry: TensorEntry) -> int:
        """Check one tensor completely without building its value: bounds, size, and checksums (always, whatever
        ``verify_checksums`` says), string lengths, and for a partitioned tensor every slice and how they tile it.

        Returns:
            The number of payload bytes checked.

        Raises:
            CorruptCheckpointError: what is wrong (``ChecksumMismatchError`` for a bad checksum).
        """
        if entry.slices:
            return sum(self.check_entry(part) for _, part in self._slice_parts(entry))
        view = self._payload(entry, verify=True)
        if entry.dtype.is_string:
            self._decode_strings(entry, view, verify=True)
        return entry.size

    def check(self, progress: Callable[[int, str], None] | None = None) -> BundleCheck:
        """Read the whole bundle and collect every problem instead of stopping at the first.

        Checks every index block's checksum (data blocks and the metaindex block too), that keys are sorted, every
        entry, that every data file exists, and every tensor as :meth:`check_entry` does. ``progress`` is called
        as ``progress(bytes_checked_so_far, key)`` after each tensor.
        """
        problems: list[CheckpointError] = []
        missing: dict[int, int] = {}  # shard -> tensors stored in it
        for shard, path in enumerate(self.data_files()):
            if shard not in self._maps and not os.path.isfile(path):
                missing[shard] = 0
        tensors = checked = 0
        for item in self._table.scan():
            if isinstance(item, CheckpointError):
                problems.append(item)
                continue
            key, value = item
            if key == HEADER_KEY or is_slice_key(key):
                continue  # slices are checked through the partitioned tensor that lists them
            try:
                entry = self._parse_entry(key, value)
                parts = [p for _, p in self._slice_parts(entry)] if entry.slices else [entry]
                if any(p.shard in missing for p in parts):
                    for p in parts:
                        if p.shard in missing:
                            missing[p.shard] += 1
                    continue
                checked += self.check_entry(entry)
                tensors += 1
                if progress is not None:
                    progress(checked, entry.name)
            except CheckpointError as exc:
                problems.append(exc)
            except OSError as exc:  # e.g. a data file that exists but cannot be opened
                path = getattr(exc, "filename", None) or self.prefix
                problems.append(CorruptCheckpointError(f"{path}: cannot be read ({exc.strerror or exc})", path=path,
                                                       key=_decode_name(key)))
        for shard, count in missing.items():
            path = data_filename(self.prefix, shard, self.num_shards)
            try:
                _fs.check_regular(path)  # there but not a regular file (a FIFO, a device, a directory)?
            except CorruptCheckpointError as exc:
                problems.append(CorruptCheckpointError(f"{exc} ({count} tensor(s) are stored in it)", path=path,
                                                       expected=exc.expected, found=exc.found))
                continue
            except OSError:
                pass
            problems.append(CorruptCheckpointError(
                f"{path}: data file is missing ({count} tensor(s) are stored in it); the checkpoint is incomplete",
                path=path))
        return BundleCheck(self.prefix, tuple(problems), tensors, checked)

    def close(self) -> None:
        """Release the memory maps. Arrays already returned stay valid (they keep their map alive)."""
        with self._lock:
            bufs = [b for b, _ in self._maps.values()] + [self._index_buf]
            self._maps.clear()
            fds, self._fds = list(self._fds.values()), {}
            self._closed = True
        for fd in fds:
            os.close(fd)
        for buf in bufs:
            if isinstance(buf, mmap.mmap):
                try:
                    buf.close()
                except BufferError:
                    pass  # an array still views it; the map is freed with the array

    def __del__(self) -> None:
        for fd in list(getattr(self, "_fds", {}).values()):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class BundleCheck:
    """What :meth:`BundleReader.check` found.

    Attributes:
        prefix: The bundle checked.
        problems: Every problem, as the error reading would raise (``path``, ``key`` and the message say where
            and what); empty when the bundle is intact.
        tensors: Tensors checked completely.
        bytes: Payload bytes checked.
    """

    prefix: str
    problems: tuple[CheckpointError, ...]
    tensors: int
    bytes: int

    @property
    def ok(self) -> bool:
        return not self.problems


def check_bundle(prefix: str | os.PathLike, progress: Callable[[int, str], None] | None = None) -> BundleCheck:
    """Check the bundle at ``prefix`` completely (see :meth:`BundleReader.check`, which calls ``progress``);
    problems opening it (a missing or unreadable index) are reported the same way, never raised."""
    prefix = os.fspath(prefix)
    try:
        reader = BundleReader(prefix)
    except CheckpointError as exc:
        return BundleCheck(prefix, (exc,), 0, 0)
    except OSError as exc:
        path = index_filename(prefix)
        return BundleCheck(prefix, (CorruptCheckpointError(f"{path}: cannot be read ({exc})", path=path),), 0, 0)
    with reader:
        return reader.check(progress)


def _map_file(path: str, ident: bool = False):
    """A read-only map of the whole file and its size (``b""`` for an empty file, which cannot be mapped); with
    ``ident``, also the file's ``(st_dev, st_ino)``."""
    with _fs.open_read(path) as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return (buf, size, (st.st_dev, st.st_ino)) if ident else (buf, size)


_parse_entry_proto = tensor_bundle_pb2.BundleEntryProto.FromString


def _slice_spec(extents: Sequence[tuple[int, int]]) -> str:
    """TensorFlow's text form of a slice, e.g. ``0,2:-`` (names slice entries in messages)."""
    return ":".join("-" if n == -1 else f"{s},{n}" for s, n in extents)


def _byteswapped(array: np.ndarray) -> np.ndarray:
    """A native-order copy of a big-endian array (complex values swap each half)."""
    size = array.dtype.itemsize // (2 if array.dtype.kind == "c" else 1)
    raw = array.view(f"u{size}").byteswap()
    return raw.view(array.dtype)


def _fixed_lengths(lengths: Sequence[int], order: str = "<") -> bytes:
    """String lengths as fixed-width integers: the input of the length checksum (docs/format.md section 2.2)."""
    if all(n <= 0xFFFFFFFF for n in lengths):
        return np.asarray(lengths, dtype=f"{order}u4").tobytes()
    return b"".join(struct.pack(f"{order}Q" if n > 0xFFFFFFFF else f"{order}I", n) for n in lengths)


#: ``read_many_into`` reads at most this many bytes per ``preadv`` call (large tensors in pieces of this size), so
#: the CRC thread checksums one piece while the next is read; at most ``_IOV_MAX`` tensors per call.
_READ_CHUNK = 2 << 20  # small enough that a piece is still in cache when it is checksummed
_IOV_MAX = 1024
_CRC_OVERLAP_READ = 1 << 20  # reads this large are checksummed in the CRC thread, overlapped with the next
#: Gaps between tensors up to this size (alignment padding) are read into a scratch buffer instead of splitting
#: the ``preadv`` call.
_MAX_GAP = 64 << 10
_GAP = bytearray(_MAX_GAP)


def _by_offset(item: tuple[TensorEntry, np.ndarray]) -> int:
    return item[0].offset


def _byte_view(array: np.ndarray) -> memoryview:
    """A flat writable byte view of a C-contiguous array."""
    if array.dtype.isbuiltin == 1 and array.size:
        return memoryview(array).cast("B")
    return memoryview(array.reshape(-1).view(np.uint8))  # ml_dtypes types have no buffer format


def _read_plan(items: list[tuple[TensorEntry, np.ndarray]]) -> Iterator[tuple[int, list, list, int]]:
    """Group ``items`` (sorted by offset) into ``preadv`` calls: ``(file offset, buffers, pieces, bytes)`` where
    ``pieces`` lists ``(item index, view of its target, is the tensor's last piece)`` in file order."""
    offset = end = 0
    buffers: list = []
    pieces: list = []
    for i, (entry, out) in enumerate(items):
        size = entry.size
        if buffers and (entry.offset < end or entry.offset - end > _MAX_GAP or len(buffers) >= _IOV_MAX - 1
                        or end - offset + size > _READ_CHUNK):
            yield offset, buffers, pieces, end - offset
            buffers, pieces = [], []
        if not buffers:
            offset = end = entry.offset
        elif entry.offset > end:
            buffers.append(memoryview(_GAP)[:entry.offset - end])
            end = entry.offset
        view = _byte_view(out)
        pos = 0
        while True:
            take = min(size - pos, _READ_CHUNK - (end - offset))
            piece = view[pos:pos + take] if take != size else view
            buffers.append(piece)
            pos += take
            end += take
            pieces.append((i, piece, pos == size))
            if pos == size:
                break
            yield offset, buffers, pieces, end - offset
            buffers, pieces = [], []
            offset = end
    if buffers:
        yield offset, buffers, pieces, end - offset


class _PieceChecks:
    """The CRC32C chains of the tensors of one ``_preadv_all`` call, extended piece by piece in file order.

    A tensor larger than one read piece has its CRC chained across its pieces (``crcs[i]``), so its pieces must be
    checked in order, each after the previous one has finished. That order is kept by ownership, not timing:
    ``crcs`` and ``bad`` belong to the one check running now, and checks run one at a time. :meth:`add` first takes
    the state back from a check handed to the CRC thread (:meth:`settle` waits for it), then runs the new check
    itself or hands it to the CRC thread; so at most one check is in flight, and whichever thread runs it, it
    starts after every earlier piece's check ended.
    """

    __slots__ = ("items", "crcs", "bad", "_pending")

    def __init__(self, items: list[tuple[TensorEntry, np.ndarray]]) -> None:
        self.items = items
        self.crcs = [0] * len(items)
        self.bad: int | None = None  # index of the first tensor whose checksum is wrong
        self._pending = None  # the CRC thread's future while it owns the state

    def add(self, pieces: list[tuple[int, memoryview, bool]], overlap: bool) -> None:
        """Check ``pieces`` (just read), in the CRC thread if ``overlap`` (it then runs while the next is read)."""
        self.settle()
        if overlap:
            self._pending = _crc_pool().submit(self._check, pieces)
        else:
            self._check(pieces)

    def settle(self) -> None:
        """Wait for the check in the CRC thread, if any: the state is the caller's again."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _check(self, pieces: list[tuple[int, memoryview, bool]]) -> None:
        _seam.point("read.check")
        crcs = self.crcs
        for i, piece, last in pieces:
            crc = crc32c(piece, crcs[i])
            crcs[i] = crc
            if last and crc != self.items[i][0].crc32c and self.bad is None:
                self.bad = i

_crc_pool_lock = threading.Lock()
_crc_pool_executor = None


def _crc_pool():
    """One helper thread for CRC32C computations overlapped with I/O (tasks run in submission order).

    Shared by every reader and writer of the process. Its tasks only read the buffers they are given and never wait
    for anything, and each submitter waits for its own task before it reuses or returns what the task reads."""
    global _crc_pool_executor
    if _crc_pool_executor is None:
        with _crc_pool_lock:
            if _crc_pool_executor is None:
                from concurrent.futures import ThreadPoolExecutor

                _crc_pool_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-crc")
    return _crc_pool_executor
