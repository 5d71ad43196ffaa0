"""The `.index` file: a LevelDB-style immutable sorted table (docs/format.md sections 1.1 to 1.3).

Layout::

    [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer: 48 bytes]

The writer reproduces TensorFlow's ``TableBuilder`` byte for byte (256 KiB blocks, restart interval 16 for data
blocks and 1 for the index block, no compression, masked CRC32C trailers). The reader verifies every block it
touches and answers point lookups through the index block and the restart array, so fetching one key from a
table of 100,000 entries reads one index block and one data block.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator

from ..errors import CheckpointError, ChecksumMismatchError, CorruptCheckpointError, UnsupportedError
from ._crc import crc32c, mask, unmask
from ._varint import VarintError, decode_varint, encode_varint

# TensorFlow's table options (xla/tsl/lib/io/table_options.h); the bundle writer uses them unchanged.
BLOCK_SIZE = 256 * 1024  # bytes: a data block is flushed once its size estimate reaches this
RESTART_INTERVAL = 16  # entries between restart points in data blocks
INDEX_RESTART_INTERVAL = 1  # every index entry is a restart point

FOOTER_SIZE = 48  # bytes: two block handles, zero padding, 8-byte magic
MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC32C
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1

_U32 = struct.Struct("<I")


# --------------------------------------------------------------------------------------------------- writing


class _BlockBuilder:
    """Builds one block: prefix-compressed entries, then the restart array (docs/format.md section 1.2)."""

    __slots__ = ("restart_interval", "buf", "restarts", "counter", "last_key")

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    @property
    def empty(self) -> bool:
        return not self.buf

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            last = self.last_key
            limit = min(len(last), len(key))
            if limit:  # length of the common prefix, from the highest differing byte of the XOR (no byte loop)
                diff = int.from_bytes(last[:limit], "big") ^ int.from_bytes(key[:limit], "big")
                shared = limit - (diff.bit_length() + 7) // 8
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        buf = self.buf
        unshared, vlen = len(key) - shared, len(value)
        if shared < 0x80 and unshared < 0x80 and vlen < 0x80:
            buf += bytes((shared, unshared, vlen))
        else:
            buf += encode_varint(shared)
            buf += encode_varint(unshared)
            buf += encode_varint(vlen)
        buf += key[shared:]
        buf += value
        self.last_key = key
        self.counter += 1

    def finish(self) -> bytes:
        self.buf += struct.pack(f"<{len(self.restarts)}I", *self.restarts)
        self.buf += _U32.pack(len(self.restarts))
        return bytes(self.buf)


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's ``FindShortestSeparator``: a short key k with start <= k < limit."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n:
        byte = start[i]
        if byte < 0xFF and byte + 1 < limit[i]:
            return start[:i] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB's ``FindShortSuccessor``: a short key >= ``key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _encode_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


class TableWriter:
    """Builds a complete table in memory; :meth:`finish` returns its bytes.

    Keys must be added in strictly increasing bytewise order. Not thread-safe.
    """

    def __init__(self) -> None:
        self._out = bytearray()
        self._data = _BlockBuilder(RESTART_INTERVAL)
        self._index = _BlockBuilder(INDEX_RESTART_INTERVAL)
        self._meta = _BlockBuilder(RESTART_INTERVAL)
        self._last_key = b""
        self._num_entries = 0
        self._pending_handle: bytes | None = None

    def add(self, key: bytes, value: bytes) -> None:
        if self._num_entries > 0:
            if key <= self._last_key:
                raise ValueError(f"table keys must be strictly increasing: {key!r} after {self._last_key!r}")
            if len(key) + len(value) >= 2 * BLOCK_SIZE:
                self._flush()
        if self._pending_handle is not None:
            self._index.add(_shortest_separator(self._last_key, key), self._pending_handle)
            self._pending_handle = None
        self._last_key = key
        self._num_entries += 1
        self._data.add(key, value)
        if self._data.size_estimate() >= BLOCK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self._data.empty:
            return
        self._pending_handle = self._write_block(self._data)

    def _write_block(self, block: _BlockBuilder) -> bytes:
        contents = block.finish()
        block.reset()
        offset = len(self._out)
        self._out += contents
        crc = crc32c(b"\x00", crc32c(contents))
        self._out += b"\x00" + _U32.pack(mask(crc))
        return _encode_handle(offset, len(contents))

    def finish(self) -> bytes:
        self._flush()
        meta_handle = self._write_block(self._meta)
        if self._pending_handle is not None:
            self._index.add(_short_successor(self._last_key), self._pending_handle)
            self._pending_handle = None
        index_handle = self._write_block(self._index)
        handles = meta_handle + index_handle
        self._out += handles + b"\x00" * (FOOTER_SIZE - 8 - len(handles))
        self._out += struct.pack("<II", MAGIC & 0xFFFFFFFF, MAGIC >> 32)
        return bytes(self._out)


# --------------------------------------------------------------------------------------------------- reading


class _Block:
    """One verified block: the entry area and its restart offsets."""

    __slots__ = ("data", "end", "restarts")

    def __init__(self, data: bytes, end: int, restarts: tuple[int, ...]) -> None:
        self.data = data
        self.end = end
        self.restarts = restarts


class TableReader:
    """Reads a table from any buffer (``bytes`` or a read-only ``mmap``).

    Opening reads only the footer and the index block. Data blocks are read, checksum-verified and cached when a
    lookup or an iteration reaches them. Safe to use from several threads for reading.

    Args:
        buf: The whole file's contents.
        path: The file name, used in error messages.
    """

    _CACHE_BLOCKS = 16  # data blocks kept parsed for repeated point lookups (at most 4 MiB)

    def __init__(self, buf, path: str = "<memory>") -> None:
        self._buf = buf
        self.path = path
        size = len(buf)
        if size < FOOTER_SIZE:
            raise CorruptCheckpointError(
                f"{path}: file is too short to be an sstable ({size} bytes; the footer alone is {FOOTER_SIZE})",
                path=path, expected=f">= {FOOTER_SIZE} bytes", found=f"{size} bytes")
        footer = bytes(buf[size - FOOTER_SIZE:])
        lo, hi = struct.unpack_from("<II", footer, FOOTER_SIZE - 8)
        magic = lo | (hi << 32)
        if magic != MAGIC:
            raise CorruptCheckpointError(
                f"{path}: not an sstable (bad magic number 0x{magic:016x}, expected 0x{MAGIC:016x}); "
                "is this really a checkpoint .index file?",
                path=path, offset=size - 8, expected=f"0x{MAGIC:016x}", found=f"0x{magic:016x}")
        try:
            pos = 0
            meta_off, pos = decode_varint(footer, pos, 40)
            meta_size, pos = decode_varint(footer, pos, 40)
            index_off, pos = decode_varint(footer, pos, 40)
            index_size, pos = decode_varint(footer, pos, 40)
        except VarintError as exc:
            raise CorruptCheckpointError(f"{path}: malformed table footer ({exc})", path=path,
                                         offset=size - FOOTER_SIZE) from None
        self._limit = size - FOOTER_SIZE
        self._meta_handle = (meta_off, meta_size)  # TensorFlow never reads it; only scan() checks it
        index = self._read_block(index_off, index_size, what="index block")
        keys: list[bytes] = []
        handles: list[tuple[int, int]] = []
        for key, value in self._block_entries(index, "index block"):
            try:
                off, p = decode_varint(value, 0)
                length, p = decode_varint(value, p)
            except VarintError as exc:
                raise CorruptCheckpointError(f"{path}: malformed block handle in the index block ({exc})",
                                             path=path) from None
            keys.append(key)
            handles.append((off, length))
        if keys != sorted(keys):
            raise CorruptCheckpointError(f"{path}: index block keys are out of order", path=path)
        self._index_keys = keys
        self._index_handles = handles
        self._cache: dict[int, _Block] = {}

    # ------------------------------------------------------------------ blocks

    def _read_block(self, offset: int, size: int, *, what: str) -> _Block:
        path = self.path
        if offset + size + BLOCK_TRAILER_SIZE > self._limit:
            raise CorruptCheckpointError(
                f"{path}: {what} at offset {offset} (size {size}) runs past the end of the table "
                f"({self._limit} bytes before the footer); the file is truncated or corrupt",
                path=path, offset=offset, expected=f"<= {self._limit}", found=offset + size + BLOCK_TRAILER_SIZE)
        end = offset + size
        data = bytes(self._buf[offset:end])
        kind = self._buf[end]
        (stored,) = _U32.unpack_from(self._buf, end + 1)
        actual = crc32c(bytes([kind]), crc32c(data))
        if unmask(stored) != actual:
            raise ChecksumMismatchError(
                f"{path}: checksum mismatch in the {what} at offset {offset} "
                f"(stored 0x{unmask(stored):08x}, computed 0x{actual:08x}); the file is corrupt",
                path=path, offset=offset, expected=f"0x{unmask(stored):08x}", found=f"0x{actual:08x}")
        if kind == SNAPPY_COMPRESSION:
            raise UnsupportedError(
                f"{path}: the {what} is Snappy-compressed (a checkpoint written by TensorFlow before 1.1); "
                "ckpt does not read compressed tables. Re-save it with TensorFlow 1.x to get an uncompressed index.",
                path=path)
        if kind != NO_COMPRESSION:
            raise CorruptCheckpointError(f"{path}: unknown block compression type {kind} in the {what}",
                                         path=path, offset=end, expected="0", found=kind)
        if size < 4:
            raise CorruptCheckpointError(f"{path}: {what} at offset {offset} is too short ({size} bytes)",
                                         path=path, offset=offset)
        (num_restarts,) = _U32.unpack_from(data, size - 4)
        if num_restarts == 0 or num_restarts > (size - 4) // 4:
            raise CorruptCheckpointError(
                f"{path}: {what} at offset {offset} claims {num_restarts} restart points, impossible in {size} bytes",
                path=path, offset=offset)
        restarts_start = size - 4 - 4 * num_restarts
        restarts = struct.unpack_from(f"<{num_restarts}I", data, restarts_start)
        if any(r > restarts_start for r in restarts):
            raise CorruptCheckpointError(f"{path}: {what} at offset {offset} has a restart point past its entries",
                                         path=path, offset=offset)
        return _Block(data, restarts_start, restarts)

    def _data_block(self, i: int) -> _Block:
        block = self._cache.get(i)
        if block is None:
            off, size = self._index_handles[i]
            block = self._read_block(off, size, what=f"data block {i}")
            if len(self._cache) >= self._CACHE_BLOCKS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = block
        return block

    def _decode_entry(self, block: _Block, pos: int, last_key: bytes, what: str) -> tuple[bytes, int, int, int]:
        """Return (key, value_start, value_end, next_pos) of the entry at ``pos``."""
        data, end = block.data, block.end
        try:
            shared, pos = decode_varint(data, pos, end)
            unshared, pos = decode_varint(data, pos, end)
            vlen, pos = decode_varint(data, pos, end)
        except VarintError as exc:
            raise CorruptCheckpointError(f"{self.path}: malformed entry in the {what} ({exc})",
                                         path=self.path) from None
        if shared > len(last_key) or pos + unshared + vlen > end:
            raise CorruptCheckpointError(
                f"{self.path}: malformed entry in the {what} (shared={shared}, unshared={unshared}, "
                f"value={vlen} bytes do not fit)", path=self.path)
        key = last_key[:shared] + data[pos:pos + unshared]
        vstart = pos + unshared
        return key, vstart, vstart + vlen, vstart + vlen

    def _block_entries(self, block: _Block, what: str) -> Iterator[tuple[bytes, bytes]]:
        pos = 0
        key = b""
        data = block.data
        while pos < block.end:
            key, vs, ve, pos = self._decode_entry(block, pos, key, what)
            yield key, data[vs:ve]

    # ------------------------------------------------------------------ public

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or None. Reads at most one data block."""
        i = bisect.bisect_left(self._index_keys, key)
        if i >= len(self._index_keys):
            return None
        block = self._data_block(i)
        what = f"data block {i}"
        # Binary search the restart points (their keys are stored whole) for the last one <= key.
        lo, hi = 0, len(block.restarts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            rkey, _, _, _ = self._decode_entry(block, block.restarts[mid], b"", what)
            if rkey <= key:
                lo = mid
            else:
                hi = mid - 1
        pos = block.restarts[lo]
        last = b""
        while pos < block.end:
            last, vs, ve, pos = self._decode_entry(block, pos, last, what)
            if last == key:
                return block.data[vs:ve]
            if last > key:
                return None
        return None

    def items(self, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Yield every ``(key, value)`` with ``key >= start`` in sorted order."""
        first = bisect.bisect_left(self._index_keys, start) if start else 0
        for i in range(first, len(self._index_keys)):
            off, size = self._index_handles[i]
            block = self._read_block(off, size, what=f"data block {i}")
            for key, value in self._block_entries(block, f"data block {i}"):
                if key >= start:
                    yield key, value

    def scan(self) -> Iterator[tuple[bytes, bytes] | CheckpointError]:
        """Every ``(key, value)`` of every data block in order, with each problem yielded in its place instead of
        raised: a block that fails its checksum or does not parse is reported and the rest is still read; keys
        out of order are reported. The metaindex block, which lookups never read, is checked first."""
        try:
            self._read_block(*self._meta_handle, what="metaindex block")
        except CheckpointError as exc:
            yield exc
        last: bytes | None = None
        for i, (off, size) in enumerate(self._index_handles):
            what = f"data block {i}"
            try:
                block = self._read_block(off, size, what=what)
            except CheckpointError as exc:
                yield exc
                continue
            entries = self._block_entries(block, what)
            while True:
                try:
                    key, value = next(entries)
                except StopIteration:
                    break
                except CheckpointError as exc:
                    yield exc
                    break
                if last is not None and key <= last:
                    yield CorruptCheckpointError(
                        f"{self.path}: keys out of order in the {what} ({key[:64]!r} after {last[:64]!r})",
                        path=self.path, offset=off)
                    continue
                last = key
                yield key, value

    @property
    def num_blocks(self) -> int:
        """Number of data blocks (useful to check that a lookup did not read them all)."""
        return len(self._index_keys)
