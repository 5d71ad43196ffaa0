"""Hostile and damaged checkpoint files: every failure is a clear ckpt error, never a crash, hang or huge allocation.

Forged files are built from scratch with ``struct``, ``TableWriter`` and the bundle protos, or by damaging copies of
the TensorFlow-written golden files in ``tests/data``. Every error must be a :class:`ckpt.CheckpointError` whose
message names the file involved (and the tensor, where there is one).
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import struct
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ckpt
from ckpt.errors import (CheckpointError, CheckpointNotFoundError, ChecksumMismatchError, CorruptCheckpointError,
                         UnsupportedError)
from ckpt.tf import bundle, bundle_reader, table
from ckpt.tf._crc import crc32c, mask
from ckpt.tf._varint import encode_varint
from ckpt.tf.bundle import BundleWriter, encode_strings
from ckpt.tf.protos import tensor_bundle_pb2
from ckpt.tf.slices import encode_slice_key
from ckpt.tf.table import FOOTER_SIZE, MAGIC, TableWriter
from counting import LinesRun

DATA = Path(__file__).parent / "data"
GOLDEN_DIRS = ["tf1_saver", "tf1_adam", "tf1_sharded", "dtypes", "tf2_checkpoint", "tf2_plain"]
EMPTY_BLOCK = struct.pack("<II", 0, 1)  # no entries, one restart at 0


# ============================================================================================ forging helpers


def copy_golden(tmp_path: Path, name: str) -> Path:
    """A private copy of a golden folder (tests/data is never modified)."""
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest)
    return dest


def header_proto(num_shards: int = 1, endianness: int = 0) -> tensor_bundle_pb2.BundleHeaderProto:
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=num_shards, endianness=endianness)
    header.version.producer = 1
    return header


def entry_proto(dtype: int, shape, *, offset: int = 0, size: int = 0, payload: bytes | None = None,
                crc: int | None = None, shard: int = 0) -> tensor_bundle_pb2.BundleEntryProto:
    """A BundleEntryProto; the CRC is computed from ``payload`` unless given."""
    if crc is None:
        crc = mask(crc32c(payload or b""))
    entry = tensor_bundle_pb2.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size, crc32c=crc)
    entry.shape.SetInParent()
    for d in shape:
        entry.shape.dim.add(size=d)
    return entry


def write_bundle(prefix: Path, entries: dict, data: bytes | list[bytes] | None = b"", *, header=None) -> Path:
    """Write ``prefix.index`` holding the header and ``entries`` (key -> proto or raw bytes), plus data file(s)."""
    header = header if header is not None else header_proto(1 if not isinstance(data, list) else len(data))
    table = TableWriter()
    table.add(b"", header if isinstance(header, bytes) else header.SerializeToString())
    for key in sorted(entries, key=lambda k: k if isinstance(k, bytes) else k.encode()):
        value = entries[key]
        table.add(key if isinstance(key, bytes) else key.encode(),
                  value if isinstance(value, bytes) else value.SerializeToString())
    Path(f"{prefix}.index").write_bytes(table.finish())
    shards = data if isinstance(data, list) else [data]
    for i, payload in enumerate(shards):
        if payload is not None:
            Path(f"{prefix}.data-{i:05d}-of-{len(shards):05d}").write_bytes(payload)
    return prefix


def raw_entry(key: bytes, value: bytes, shared: int = 0) -> bytes:
    return encode_varint(shared) + encode_varint(len(key)) + encode_varint(len(value)) + key + value


def raw_block(entries: bytes, restarts=(0,)) -> bytes:
    return entries + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def with_trailer(contents: bytes, kind: int = 0, crc: int | None = None) -> bytes:
    if crc is None:
        crc = mask(crc32c(bytes([kind]), crc32c(contents)))
    return contents + bytes([kind]) + struct.pack("<I", crc)


def footer(handles: bytes) -> bytes:
    return handles.ljust(FOOTER_SIZE - 8, b"\x00") + struct.pack("<II", MAGIC & 0xFFFFFFFF, MAGIC >> 32)


def raw_table(data_contents: bytes, *, kind: int = 0, index_value: bytes | None = None,
              index_contents: bytes | None = None, index_kind: int = 0, handles: bytes | None = None) -> bytes:
    """A table assembled byte by byte: one data block, the empty metaindex block, an index block, the footer."""
    out = bytearray(with_trailer(data_contents, kind))
    if index_value is None:
        index_value = encode_varint(0) + encode_varint(len(data_contents))
    meta_off = len(out)
    out += with_trailer(EMPTY_BLOCK)
    if index_contents is None:
        index_contents = raw_block(raw_entry(b"\xff", index_value))
    index_off = len(out)
    out += with_trailer(index_contents, index_kind)
    if handles is None:
        handles = (encode_varint(meta_off) + encode_varint(len(EMPTY_BLOCK)) + encode_varint(index_off)
                   + encode_varint(len(index_contents)))
    out += footer(handles)
    return bytes(out)


def header_entry() -> bytes:
    return raw_entry(b"", header_proto().SerializeToString())


def read_everything(path) -> dict:
    """What a user does: open, list, read every tensor (and the metadata)."""
    with ckpt.Reader(path) as reader:
        values = {name: reader[name] for name in reader.keys()}
        reader.shapes()
        reader.metadata
    return values


def assert_error(exc_info, *, file, tensor: str | None = None) -> CheckpointError:
    """The error names ``file`` (and ``tensor``) in its message and carries them as fields."""
    exc = exc_info.value
    assert isinstance(exc, CheckpointError)
    message = str(exc)
    assert str(file) in message, message
    assert exc.path == str(file)
    if tensor is not None:
        assert repr(tensor) in message, message
        assert exc.key == tensor
    return exc


# ============================================================================================ guard: legal files


class TestMinimalLegalFiles:
    """The checks below must not reject the smallest legal checkpoints."""

    def test_single_scalar(self, tmp_path):
        prefix = write_bundle(tmp_path / "one", {"x": entry_proto(1, [], size=4, payload=b"\x00\x00\x80\x3f")},
                              b"\x00\x00\x80\x3f")
        values = read_everything(prefix)
        assert values == {"x": np.float32(1.0)}
        assert values["x"].shape == () and values["x"].dtype == np.float32

    def test_header_only_bundle_has_no_tensors(self, tmp_path):
        prefix = write_bundle(tmp_path / "none", {}, b"")
        assert read_everything(prefix) == {}

    def test_empty_string_tensors(self, tmp_path):
        with BundleWriter(tmp_path / "s", sync=False) as writer:
            writer.add("scalar", np.asarray(b"", dtype=object))
            writer.add("one_empty", np.asarray([b""], dtype=object))
            writer.add("no_elements", np.empty((0,), dtype=object))
            writer.finish()
        values = read_everything(tmp_path / "s")
        assert values["scalar"].shape == () and values["scalar"].item() == b""
        assert values["one_empty"].tolist() == [b""]
        assert values["no_elements"].shape == (0,)
        # A zero-element string tensor still stores the 4-byte length checksum mask(0) (docs/format.md section 2.2).
        payload, _ = encode_strings(np.empty((0,), dtype=object))
        assert payload == bytes.fromhex("d8ea82a2")

    def test_zero_element_tensors(self, tmp_path):
        # An empty tensor has size 0 and an offset that may equal the next tensor's (docs/format.md section 2.1).
        entries = {"empty": entry_proto(1, [0, 3], offset=4, size=0),
                   "z": entry_proto(9, [2, 0, 5], offset=4, size=0),
                   "after": entry_proto(3, [], offset=0, size=4, payload=b"\x07\x00\x00\x00")}
        prefix = write_bundle(tmp_path / "z", entries, b"\x07\x00\x00\x00")
        values = read_everything(prefix)
        assert values["empty"].shape == (0, 3) and values["empty"].dtype == np.float32
        assert values["z"].shape == (2, 0, 5) and values["z"].dtype == np.int64
        assert values["after"] == 7

    def test_golden_files_read_cleanly(self):
        for name in GOLDEN_DIRS:
            assert read_everything(DATA / name), name


# ============================================================================================ the .index file


class TestTruncatedIndex:
    def test_every_truncation_of_a_small_index(self, tmp_path):
        prefix = tmp_path / "t"
        ckpt.save({"a": np.float32(1.5), "b": np.arange(3, dtype=np.int64)}, prefix, sync=False)
        index = Path(f"{prefix}.index")
        whole = index.read_bytes()
        assert len(whole) > 100
        for cut in range(len(whole)):
            index.write_bytes(whole[:cut])
            with pytest.raises(CorruptCheckpointError) as exc_info:
                read_everything(prefix)
            assert_error(exc_info, file=index)
        index.write_bytes(whole)
        assert read_everything(prefix)["a"] == np.float32(1.5)

    def test_every_truncation_of_a_tensorflow_index(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_adam")
        index = folder / "model.ckpt-3.index"
        whole = index.read_bytes()
        for cut in range(0, len(whole), 3):
            index.write_bytes(whole[:cut])
            with pytest.raises(CorruptCheckpointError) as exc_info:
                read_everything(folder / "model.ckpt-3")
            assert_error(exc_info, file=index)

    def test_too_short_message(self, tmp_path):
        index = tmp_path / "x.index"
        index.write_bytes(b"\x00" * 47)
        with pytest.raises(CorruptCheckpointError, match="too short to be an sstable") as exc_info:
            ckpt.Reader(tmp_path / "x")
        assert_error(exc_info, file=index)


def test_bad_magic_number(tmp_path):
    folder = copy_golden(tmp_path, "tf1_saver")
    index = folder / "model.ckpt-30.index"
    raw = bytearray(index.read_bytes())
    raw[-8:] = b"LevelDB!"
    index.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="not an sstable") as exc_info:
        ckpt.Reader(folder / "model.ckpt-30")
    exc = assert_error(exc_info, file=index)
    assert exc.offset == len(raw) - 8
    assert exc.expected == "0xdb4775248b80fb57"


def test_a_text_file_named_index(tmp_path):
    (tmp_path / "notes.index").write_text("this is not a checkpoint\n" * 10)
    with pytest.raises(CorruptCheckpointError, match="not an sstable"):
        ckpt.Reader(tmp_path / "notes")


class TestBadVarints:
    @pytest.mark.parametrize("handles", [
        b"\xff" * 40,  # a varint longer than 10 bytes
        b"\x80" * 9 + b"\x7f" + b"\x00" * 30,  # 10 bytes, but more than 64 bits
        (b"\x80" * 9 + b"\x01") * 3 + b"\x80" * 10,  # the 4th varint runs into the magic number
    ], ids=["too-long", "overflow", "truncated"])
    def test_footer_handles(self, tmp_path, handles):
        index = tmp_path / "f.index"
        index.write_bytes(raw_table(raw_block(header_entry()), handles=handles))
        with pytest.raises(CorruptCheckpointError, match="malformed table footer") as exc_info:
            ckpt.Reader(tmp_path / "f")
        assert_error(exc_info, file=index)

    @pytest.mark.parametrize("handles", [
        encode_varint(0) + encode_varint(8) + encode_varint(10 ** 12) + encode_varint(14),
        encode_varint(0) + encode_varint(8) + encode_varint(0) + encode_varint(2 ** 63),
    ], ids=["offset-past-end", "huge-size"])
    def test_footer_handle_outside_the_file(self, tmp_path, handles):
        index = tmp_path / "f.index"
        index.write_bytes(raw_table(raw_block(header_entry()), handles=handles))
        with pytest.raises(CorruptCheckpointError, match="runs past the end") as exc_info:
            ckpt.Reader(tmp_path / "f")
        assert_error(exc_info, file=index)

    @pytest.mark.parametrize("value", [b"\x80", b"\x00", b"\xff" * 11], ids=["truncated", "half", "too-long"])
    def test_index_block_handle(self, tmp_path, value):
        index = tmp_path / "h.index"
        index.write_bytes(raw_table(raw_block(header_entry()), index_value=value))
        with pytest.raises(CorruptCheckpointError, match="block handle") as exc_info:
            ckpt.Reader(tmp_path / "h")
        assert_error(exc_info, file=index)

    def test_index_block_handle_pointing_outside(self, tmp_path):
        index = tmp_path / "h.index"
        index.write_bytes(raw_table(raw_block(header_entry()), index_value=encode_varint(5000) + encode_varint(99)))
        with pytest.raises(CorruptCheckpointError, match="runs past the end") as exc_info:
            ckpt.Reader(tmp_path / "h")
        assert_error(exc_info, file=index)

    @pytest.mark.parametrize("entry", [
        b"\xff" * 12,  # shared_bytes varint too long
        b"\x00\x80",  # unshared_bytes cut off by the restart array
        b"\x00\x00" + b"\xff" * 11,  # value_length varint too long
        b"\x05\x01\x01ab",  # shares 5 bytes with the (empty) previous key
        b"\x00\x01\x7fa",  # value runs past the entries
    ], ids=["shared", "unshared", "value-length", "shared-too-big", "value-overrun"])
    def test_block_entries(self, tmp_path, entry):
        index = tmp_path / "b.index"
        index.write_bytes(raw_table(raw_block(entry)))
        with pytest.raises(CorruptCheckpointError, match="malformed entry") as exc_info:
            ckpt.Reader(tmp_path / "b")
        assert_error(exc_info, file=index)

    def test_bad_entry_after_a_good_header_fails_on_listing(self, tmp_path):
        index = tmp_path / "b.index"
        # The header is found by the point lookup (which stops early); listing reaches the broken entry.
        index.write_bytes(raw_table(raw_block(header_entry() + b"\x00\x01" + b"\xff" * 11)))
        reader = ckpt.Reader(tmp_path / "b")
        with pytest.raises(CorruptCheckpointError, match="malformed entry") as exc_info:
            reader.keys()
        assert_error(exc_info, file=index)

    @pytest.mark.parametrize("payload", [b"\x80" * 8, b"\xff" * 11 + b"\x00" * 4],
                             ids=["truncated", "too-long"])
    def test_string_lengths(self, tmp_path, payload):
        prefix = write_bundle(tmp_path / "s", {"s": entry_proto(7, [1], size=len(payload), payload=payload)},
                              payload)
        reader = ckpt.Reader(prefix)
        with pytest.raises(CorruptCheckpointError, match="malformed length") as exc_info:
            reader["s"]
        assert_error(exc_info, file=f"{prefix}.data-00000-of-00001", tensor="s")


class TestBlocks:
    def test_block_crc_mismatch(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        index = folder / "model.ckpt-30.index"
        raw = bytearray(index.read_bytes())
        raw[0x30] ^= 0x01  # inside the data block (docs/format.md section 1.6: the block is bytes 0..0x53)
        index.write_bytes(bytes(raw))
        with pytest.raises(ChecksumMismatchError, match="checksum mismatch in the data block") as exc_info:
            ckpt.Reader(folder / "model.ckpt-30")
        assert_error(exc_info, file=index)
        assert exc_info.value.offset == 0

    def test_index_block_crc_mismatch(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        index = folder / "model.ckpt-30.index"
        raw = bytearray(index.read_bytes())
        raw[0x73 + 1] ^= 0x80  # the index block's stored CRC
        index.write_bytes(bytes(raw))
        with pytest.raises(ChecksumMismatchError, match="index block") as exc_info:
            ckpt.Reader(folder / "model.ckpt-30")
        assert_error(exc_info, file=index)

    def test_metaindex_block_is_never_read(self, tmp_path):
        # TensorFlow never reads the metaindex block (docs/format.md section 1.3); damaging it must not matter.
        folder = copy_golden(tmp_path, "tf1_saver")
        index = folder / "model.ckpt-30.index"
        raw = bytearray(index.read_bytes())
        raw[0x58] ^= 0xFF
        index.write_bytes(bytes(raw))
        assert read_everything(folder / "model.ckpt-30")["global_step"] == 30

    def test_snappy_compressed_data_block(self, tmp_path):
        index = tmp_path / "snappy.index"
        index.write_bytes(raw_table(raw_block(header_entry()), kind=1))  # valid CRC over contents + type byte 1
        with pytest.raises(UnsupportedError, match="Snappy") as exc_info:
            ckpt.Reader(tmp_path / "snappy")
        assert_error(exc_info, file=index)
        assert not isinstance(exc_info.value, CorruptCheckpointError)

    def test_snappy_compressed_index_block(self, tmp_path):
        index = tmp_path / "snappy.index"
        index.write_bytes(raw_table(raw_block(header_entry()), index_kind=1))
        with pytest.raises(UnsupportedError, match="Snappy") as exc_info:
            ckpt.Reader(tmp_path / "snappy")
        assert_error(exc_info, file=index)

    @pytest.mark.parametrize("kind", [2, 7, 0xFF])
    def test_unknown_compression_type(self, tmp_path, kind):
        index = tmp_path / "c.index"
        index.write_bytes(raw_table(raw_block(header_entry()), kind=kind))
        with pytest.raises(CorruptCheckpointError, match=f"unknown block compression type {kind}") as exc_info:
            ckpt.Reader(tmp_path / "c")
        assert_error(exc_info, file=index)
        assert exc_info.value.found == kind

    @pytest.mark.parametrize("contents", [
        header_entry() + struct.pack("<I", 0),  # zero restarts
        header_entry() + struct.pack("<I", 0xFFFFFFFF),  # four billion restarts in a tiny block
        struct.pack("<II", 0, 3),  # three restarts claimed, room for one
    ], ids=["zero", "huge", "too-many"])
    def test_impossible_num_restarts(self, tmp_path, contents):
        index = tmp_path / "r.index"
        index.write_bytes(raw_table(contents))
        with LinesRun() as work, pytest.raises(CorruptCheckpointError, match="restart points") as exc_info:
            ckpt.Reader(tmp_path / "r")
        assert work.lines < 2000, work.lines  # about 300: the count is checked before any restart is read
        assert_error(exc_info, file=index)

    def test_restart_offset_past_the_entries(self, tmp_path):
        index = tmp_path / "r.index"
        index.write_bytes(raw_table(raw_block(header_entry(), restarts=(0, 5000))))
        with pytest.raises(CorruptCheckpointError, match="restart point past its entries") as exc_info:
            ckpt.Reader(tmp_path / "r")
        assert_error(exc_info, file=index)

    def test_block_shorter_than_its_restart_count(self, tmp_path):
        index = tmp_path / "r.index"
        index.write_bytes(raw_table(b"\x01\x00"))
        with pytest.raises(CorruptCheckpointError, match="too short") as exc_info:
            ckpt.Reader(tmp_path / "r")
        assert_error(exc_info, file=index)

    def test_index_keys_out_of_order(self, tmp_path):
        index = tmp_path / "o.index"
        handle = encode_varint(0) + encode_varint(len(raw_block(header_entry())))
        index_contents = raw_block(raw_entry(b"z", handle) + raw_entry(b"a", handle), restarts=(0, 6))
        index.write_bytes(raw_table(raw_block(header_entry()), index_contents=index_contents))
        with pytest.raises(CorruptCheckpointError, match="out of order") as exc_info:
            ckpt.Reader(tmp_path / "o")
        assert_error(exc_info, file=index)


# ============================================================================================ header and entries


class TestHeader:
    def test_missing_header_entry(self, tmp_path):
        table = TableWriter()
        table.add(b"x", entry_proto(1, [], size=4, payload=b"\x00" * 4).SerializeToString())
        index = tmp_path / "nohdr.index"
        index.write_bytes(table.finish())
        (tmp_path / "nohdr.data-00000-of-00001").write_bytes(b"\x00" * 4)
        with pytest.raises(CorruptCheckpointError, match="header entry") as exc_info:
            ckpt.Reader(tmp_path / "nohdr")
        assert_error(exc_info, file=index)

    def test_empty_table(self, tmp_path):
        index = tmp_path / "empty.index"
        index.write_bytes(TableWriter().finish())
        with pytest.raises(CorruptCheckpointError, match="header entry") as exc_info:
            ckpt.Reader(tmp_path / "empty")
        assert_error(exc_info, file=index)

    def test_garbage_header(self, tmp_path):
        write_bundle(tmp_path / "g", {}, b"", header=b"\xff\xff\xff\xff")
        with pytest.raises(CorruptCheckpointError, match="malformed bundle header") as exc_info:
            ckpt.Reader(tmp_path / "g")
        assert_error(exc_info, file=tmp_path / "g.index")

    @pytest.mark.parametrize("num_shards", [0, -1, 10 ** 9])
    def test_implausible_num_shards(self, tmp_path, num_shards):
        write_bundle(tmp_path / "n", {}, b"", header=header_proto(num_shards))
        with pytest.raises(CorruptCheckpointError, match="number of data shards") as exc_info:
            ckpt.Reader(tmp_path / "n")
        assert_error(exc_info, file=tmp_path / "n.index")

    def test_future_version(self, tmp_path):
        header = header_proto()
        header.version.min_consumer = 7
        write_bundle(tmp_path / "v", {}, b"", header=header)
        with pytest.raises(UnsupportedError, match="min_consumer=7") as exc_info:
            ckpt.Reader(tmp_path / "v")
        assert_error(exc_info, file=tmp_path / "v.index")


class TestEntries:
    def read_one(self, tmp_path, entry, data=b"\x00" * 64, name="t"):
        prefix = write_bundle(tmp_path / "e", {name: entry}, data)
        return prefix, lambda: read_everything(prefix)

    def test_entry_outside_its_data_file(self, tmp_path):
        payload = b"\x01\x02\x03\x04\x05\x06\x07\x08"
        prefix, read = self.read_one(tmp_path, entry_proto(3, [2], offset=10, size=8, payload=payload),
                                     data=b"\x00" * 12)
        with pytest.raises(CorruptCheckpointError, match="truncated") as exc_info:
            read()
        exc = assert_error(exc_info, file=f"{prefix}.data-00000-of-00001", tensor="t")
        assert exc.expected == 18 and exc.found == 12

    @pytest.mark.parametrize("dtype,shape,size", [
        (1, [3], 8),  # float32 [3] needs 12 bytes
        (2, [], 4),  # a double is 8 bytes
        (9, [2, 2], 33),
        (1, [0], 4),  # nothing to store, but 4 bytes claimed
    ])
    def test_size_does_not_match_shape(self, tmp_path, dtype, shape, size):
        prefix, read = self.read_one(tmp_path, entry_proto(dtype, shape, size=size))
        with pytest.raises(CorruptCheckpointError, match="stores .* bytes but its shape") as exc_info:
            read()
        exc = assert_error(exc_info, file=f"{prefix}.index", tensor="t")
        assert exc.found == size

    @pytest.mark.parametrize("shape,size", [
        ([2 ** 30] * 3, 2 ** 62),  # 2**90 elements: overflows int64
        ([2 ** 62, 2 ** 62, 0], 0),  # zero elements, but the running count overflows (TensorShape rejects it)
        ([2 ** 20] * 3, 2 ** 62),  # 2**60 float32 elements: plausible count, far beyond the 64-byte file
        ([2 ** 31] * 2, 2 ** 63 - 1),
        ([3] * 200, 0),
    ], ids=["overflow", "overflow-with-zero", "exceeds-file", "int64-max-size", "rank-200"])
    def test_forged_huge_shape_does_not_allocate(self, tmp_path, shape, size):
        prefix, read = self.read_one(tmp_path, entry_proto(1, shape, size=size))
        tracemalloc.start()
        try:
            with LinesRun() as work, pytest.raises(CorruptCheckpointError) as exc_info:
                read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, f"peak allocation {peak} bytes"
        assert work.lines < 5000, work.lines  # 450-820 (rank 200): nothing loops over the forged sizes
        assert "'t'" in str(exc_info.value) and str(prefix) in str(exc_info.value)
        assert not isinstance(exc_info.value, MemoryError)

    def test_forged_huge_string_tensor_does_not_allocate(self, tmp_path):
        prefix, read = self.read_one(tmp_path, entry_proto(7, [2 ** 40], size=2 ** 41))
        tracemalloc.start()
        try:
            with pytest.raises(CorruptCheckpointError) as exc_info:
                read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024
        assert_error(exc_info, file=f"{prefix}.data-00000-of-00001", tensor="t")

    def test_forged_huge_partitioned_tensor_does_not_allocate(self, tmp_path):
        # The slices tile the full shape exactly, but the single slice's bytes are not in the (tiny) data file.
        full = tensor_bundle_pb2.BundleEntryProto(dtype=1)
        for d in [2 ** 20] * 3:
            full.shape.dim.add(size=d)
        proto_slice = full.slices.add()
        for d in [2 ** 20] * 3:
            proto_slice.extent.add(start=0, length=d)
        entries = {b"w": full, encode_slice_key(b"w", [(0, 2 ** 20)] * 3): entry_proto(1, [2 ** 20] * 3,
                                                                                         size=2 ** 62)}
        prefix = write_bundle(tmp_path / "p", entries, b"\x00" * 64)
        reader = ckpt.Reader(prefix)
        assert reader.shapes() == {"w": (2 ** 20,) * 3}
        tracemalloc.start()
        try:
            with pytest.raises(CorruptCheckpointError) as exc_info:
                reader["w"]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, f"peak allocation {peak} bytes"
        assert str(prefix) in str(exc_info.value) and "'w[" in str(exc_info.value)

    @pytest.mark.parametrize("dim", [-1, -5, -(2 ** 63)])
    def test_negative_dims(self, tmp_path, dim):
        prefix, read = self.read_one(tmp_path, entry_proto(1, [2, dim], size=8))
        with pytest.raises(CorruptCheckpointError, match="invalid shape") as exc_info:
            read()
        assert_error(exc_info, file=f"{prefix}.index", tensor="t")

    def test_unknown_rank(self, tmp_path):
        entry = entry_proto(1, [], size=4)
        entry.shape.unknown_rank = True
        prefix, read = self.read_one(tmp_path, entry)
        with pytest.raises(CorruptCheckpointError, match="unknown rank") as exc_info:
            read()
        assert_error(exc_info, file=f"{prefix}.index", tensor="t")

    @pytest.mark.parametrize("dtype", [0, 34, 99, 101, 1000, -3])
    def test_unknown_dtype_number(self, tmp_path, dtype):
        prefix, read = self.read_one(tmp_path, entry_proto(dtype, [], size=4))
        with pytest.raises(CorruptCheckpointError, match=f"unknown dtype number {dtype}") as exc_info:
            read()
        exc = assert_error(exc_info, file=f"{prefix}.index", tensor="t")
        assert exc.found == dtype

    @pytest.mark.parametrize("dtype", [20, 21])
    def test_resource_and_variant_are_unsupported(self, tmp_path, dtype):
        prefix, read = self.read_one(tmp_path, entry_proto(dtype, [], size=8))
        with pytest.raises(UnsupportedError) as exc_info:
            read()
        assert "'t'" in str(exc_info.value) and str(prefix) in str(exc_info.value)

    @pytest.mark.parametrize("fields", [dict(shard_id=1), dict(shard_id=-1), dict(offset=-4)])
    def test_entry_points_outside_the_checkpoint(self, tmp_path, fields):
        entry = entry_proto(1, [], size=4)
        for field, value in fields.items():
            setattr(entry, field, value)
        prefix, read = self.read_one(tmp_path, entry)
        with pytest.raises(CorruptCheckpointError, match="points outside the checkpoint") as exc_info:
            read()
        assert_error(exc_info, file=f"{prefix}.index", tensor="t")

    def test_garbage_entry_proto(self, tmp_path):
        prefix, read = self.read_one(tmp_path, b"\x0a\xff\xff\xff\x0f")
        with pytest.raises(CorruptCheckpointError, match="malformed entry") as exc_info:
            read()
        assert_error(exc_info, file=f"{prefix}.index", tensor="t")

    def test_string_tensor_too_small_for_its_shape(self, tmp_path):
        prefix, read = self.read_one(tmp_path, entry_proto(7, [10], size=6))
        with pytest.raises(CorruptCheckpointError, match="too few for 10 elements") as exc_info:
            read()
        assert_error(exc_info, file=f"{prefix}.index", tensor="t")


# ============================================================================================ data files


class TestDataFiles:
    def test_missing_data_file(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        data = folder / "model.ckpt-30.data-00000-of-00001"
        data.unlink()
        reader = ckpt.Reader(folder / "model.ckpt-30")  # lazy: opening and listing need only the index
        assert reader.keys() == ["alpha", "beta", "global_step"]
        with pytest.raises(CorruptCheckpointError, match="data file is missing") as exc_info:
            reader["beta"]
        assert_error(exc_info, file=data, tensor="beta")

    def test_missing_second_shard(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_sharded")
        data = folder / "model.ckpt.data-00001-of-00002"
        data.unlink()
        reader = ckpt.Reader(folder / "model.ckpt")
        assert reader["dev0/a"].tolist() == [1.0, 2.0, 3.0]  # shard 0 is still readable
        with pytest.raises(CorruptCheckpointError, match="data file is missing") as exc_info:
            reader["dev1/c"]
        assert_error(exc_info, file=data, tensor="dev1/c")

    def test_truncated_data_file(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        data = folder / "model.ckpt-30.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:10])
        reader = ckpt.Reader(folder / "model.ckpt-30")
        assert reader["alpha"] == np.float32(1.7067256)  # bytes 0..4 are still there
        with pytest.raises(CorruptCheckpointError, match="needs bytes 8..16 but the file has 10") as exc_info:
            reader["global_step"]
        exc = assert_error(exc_info, file=data, tensor="global_step")
        assert exc.offset == 8 and exc.found == 10

    def test_empty_data_file(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_adam")
        data = folder / "model.ckpt-3.data-00000-of-00001"
        data.write_bytes(b"")
        with pytest.raises(CorruptCheckpointError, match="truncated") as exc_info:
            read_everything(folder)
        assert_error(exc_info, file=data)

    def test_tensor_crc_mismatch(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        data = folder / "model.ckpt-30.data-00000-of-00001"
        raw = bytearray(data.read_bytes())
        raw[5] ^= 0x40  # inside beta (offset 4, size 4)
        data.write_bytes(bytes(raw))
        reader = ckpt.Reader(folder / "model.ckpt-30")
        assert reader["alpha"] == np.float32(1.7067256)
        with pytest.raises(ChecksumMismatchError, match="checksum mismatch") as exc_info:
            reader["beta"]
        exc = assert_error(exc_info, file=data, tensor="beta")
        assert exc.offset == 4
        unchecked = ckpt.Reader(folder / "model.ckpt-30", verify_checksums=False)["beta"]
        assert unchecked.tobytes() == bytes(raw[4:8])
        assert unchecked != np.float32(0.5000217)

    def test_crc_mismatch_in_a_slice_names_the_tensor(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_sharded")
        data = folder / "model.ckpt.data-00001-of-00002"
        raw = bytearray(data.read_bytes())
        raw[10] ^= 0xFF  # inside the first slice of part/w (offset 4, size 36)
        data.write_bytes(bytes(raw))
        reader = ckpt.Reader(folder / "model.ckpt")
        with pytest.raises(ChecksumMismatchError) as exc_info:
            reader["part/w"]
        assert str(data) in str(exc_info.value) and "'part/w[" in str(exc_info.value)
        assert ckpt.Reader(folder / "model.ckpt", verify_checksums=False)["part/w"].shape == (5, 3)

    def test_string_tensor_corrupt_length_checksum(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_sharded")
        data = folder / "model.ckpt.data-00000-of-00002"
        raw = bytearray(data.read_bytes())
        # dev0/strings = ["ab", "", "cde"] at offset 12: 02 00 03 | 1b 42 8b ca | 61 62 63 64 65
        # (docs/format.md section 2.2)
        assert raw[12:24] == bytes.fromhex("020003 1b428bca 6162636465")
        raw[15] ^= 0x01
        data.write_bytes(bytes(raw))
        with pytest.raises(ChecksumMismatchError, match="length checksum") as exc_info:
            ckpt.Reader(folder / "model.ckpt")["dev0/strings"]
        assert_error(exc_info, file=data, tensor="dev0/strings")
        unchecked = ckpt.Reader(folder / "model.ckpt", verify_checksums=False)["dev0/strings"]
        assert unchecked.tolist() == [b"ab", b"", b"cde"]

    def test_string_tensor_corrupt_bytes(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_sharded")
        data = folder / "model.ckpt.data-00000-of-00002"
        raw = bytearray(data.read_bytes())
        raw[22] = ord("X")  # "cde" -> "cXe"
        data.write_bytes(bytes(raw))
        with pytest.raises(ChecksumMismatchError) as exc_info:
            ckpt.Reader(folder / "model.ckpt")["dev0/strings"]
        assert_error(exc_info, file=data, tensor="dev0/strings")
        assert ckpt.Reader(folder / "model.ckpt", verify_checksums=False)["dev0/strings"].tolist() == \
            [b"ab", b"", b"cXe"]

    @pytest.mark.parametrize("lengths", [[2, 0, 9], [2, 0, 1], [200, 0, 3]])
    def test_string_lengths_do_not_add_up(self, tmp_path, lengths):
        body = b"abcde"
        len_crc = crc32c(struct.pack(f"<{len(lengths)}I", *lengths))
        masked = struct.pack("<I", mask(len_crc))
        payload = b"".join(encode_varint(n) for n in lengths) + masked + body
        crc = crc32c(body, crc32c(masked, len_crc))  # every checksum is right; only the lengths are wrong
        prefix = write_bundle(tmp_path / "s", {"s": entry_proto(7, [3], size=len(payload), crc=mask(crc))},
                              payload)
        with pytest.raises(CorruptCheckpointError, match="lengths add up to") as exc_info:
            ckpt.Reader(prefix, verify_checksums=False)["s"]
        assert_error(exc_info, file=f"{prefix}.data-00000-of-00001", tensor="s")


# ============================================================================================ big-endian bundles


def big_endian_bundle(prefix: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A bundle as a big-endian TensorFlow host writes it: header endianness BIG, elements and lengths big-endian."""
    from ckpt.tf import dtypes as dt

    data = bytearray()
    entries = {}
    for name, array in arrays.items():
        dtype = dt.from_numpy(array.dtype)
        if dtype.is_string:
            items = [bytes(v) for v in array.reshape(-1).tolist()]
            lengths = [len(b) for b in items]
            len_crc = crc32c(struct.pack(f">{len(items)}I", *lengths))
            masked = struct.pack("<I", mask(len_crc))
            payload = b"".join(encode_varint(n) for n in lengths) + masked + b"".join(items)
            crc = crc32c(b"".join(items), crc32c(masked, len_crc))
        else:
            if array.dtype.kind == "c":
                half = np.dtype(f">f{array.dtype.itemsize // 2}")
                payload = array.view(array.real.dtype).astype(half).tobytes()
            elif array.dtype.itemsize > 1 and array.dtype.kind in "biufc":
                payload = array.astype(array.dtype.newbyteorder(">")).tobytes()
            else:  # bfloat16 and other ml_dtypes: swap the raw bytes
                payload = array.view(f"u{array.dtype.itemsize}").byteswap().tobytes()
            crc = crc32c(payload)  # over the bytes as stored in the file
        entries[name] = entry_proto(dtype.enum, array.shape, offset=len(data), size=len(payload), crc=mask(crc))
        data += payload
    return write_bundle(prefix, entries, bytes(data), header=header_proto(endianness=1))


def test_big_endian_bundle_is_byte_swapped(tmp_path):
    arrays = {
        "f32": np.array([1.5, -2.25, np.inf], dtype=np.float32),
        "f64": np.array([[np.pi, -0.0]], dtype=np.float64),
        "i16": np.array([1, -2, 0x1234], dtype=np.int16),
        "i64": np.array(0x0102030405060708, dtype=np.int64),
        "u32": np.array([0xDEADBEEF], dtype=np.uint32),
        "c64": np.array([1 + 2j, -3.5 - 0.25j], dtype=np.complex64),
        "c128": np.array([1e300 - 1j], dtype=np.complex128),
        "bf16": np.array([1.0, -3.0, 0.5], dtype=ml_dtypes.bfloat16),
        "f16": np.array([65504.0, 1e-3], dtype=np.float16),
        "u8": np.array([1, 2, 255], dtype=np.uint8),
        "flag": np.array([True, False]),
        "s": np.array([b"ab", b"", b"cde" * 100], dtype=object),
    }
    prefix = big_endian_bundle(tmp_path / "be", arrays)
    # Sanity: the file really is big-endian (TF 2.21 on little-endian hosts never writes this).
    assert Path(f"{prefix}.data-00000-of-00001").read_bytes()[:4] == struct.pack(">f", 1.5)
    with ckpt.Reader(prefix) as reader:
        for name, expected in arrays.items():
            got = reader[name]
            assert got.shape == expected.shape, name
            assert got.dtype == expected.dtype, name
            if expected.dtype == object:
                assert got.tolist() == expected.tolist()
            else:
                assert got.dtype.isnative or got.dtype.itemsize == 1
                assert got.tobytes() == expected.tobytes(), name


def test_big_endian_crc_covers_stored_bytes(tmp_path):
    prefix = big_endian_bundle(tmp_path / "be", {"x": np.array([1, 2, 3], dtype=np.int32)})
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[3] ^= 0x02  # element 0's low byte (big-endian) 1 -> 3
    data.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatchError) as exc_info:
        ckpt.Reader(prefix)["x"]
    assert_error(exc_info, file=data, tensor="x")
    assert ckpt.Reader(prefix, verify_checksums=False)["x"].tolist() == [3, 2, 3]


def test_big_endian_string_length_checksum_uses_big_endian_order(tmp_path):
    # A little-endian length checksum in a BIG bundle is wrong (docs/format.md section 2.4: the writer's byte order).
    lengths = [1, 2]
    len_crc = crc32c(struct.pack("<2I", *lengths))
    masked = struct.pack("<I", mask(len_crc))
    payload = b"\x01\x02" + masked + b"abc"
    entries = {"s": entry_proto(7, [2], size=len(payload), crc=mask(crc32c(b"abc", crc32c(masked, len_crc))))}
    prefix = write_bundle(tmp_path / "be", entries, payload, header=header_proto(endianness=1))
    with pytest.raises(ChecksumMismatchError, match="length checksum"):
        ckpt.Reader(prefix)["s"]


# ============================================================================================ partitioned tensors


def partitioned(prefix: Path, full_shape, slices, *, listed=None, dtype=np.float32) -> Path:
    """A bundle holding tensor ``w`` split into ``slices`` (list of extents); ``listed`` are the slices the full
    entry names (default: all of them). Each slice's values are its own start row, for checking placement."""
    data = bytearray()
    entries = {}
    full = tensor_bundle_pb2.BundleEntryProto(dtype=1)
    for d in full_shape:
        full.shape.dim.add(size=d)
    for extents in (slices if listed is None else listed):
        proto_slice = full.slices.add()
        for start, length in extents:
            ext = proto_slice.extent.add(start=start)
            if length != -1:
                ext.length = length
    for extents in slices:
        shape = [d if n == -1 else n for (_, n), d in zip(extents, full_shape)]
        payload = np.full(shape, extents[0][0], dtype=dtype).tobytes()
        entries[encode_slice_key(b"w", extents)] = entry_proto(1, shape, offset=len(data), size=len(payload),
                                                                payload=payload)
        data += payload
    entries[b"w"] = full
    return write_bundle(prefix, entries, bytes(data))


class TestPartitioned:
    def test_valid_partition_assembles(self, tmp_path):
        prefix = partitioned(tmp_path / "ok", [5, 3], [((0, 2), (0, -1)), ((2, 3), (0, -1))])
        with ckpt.Reader(prefix) as reader:
            assert reader.keys() == ["w"]  # slice entries are hidden
            w = reader["w"]
        assert w.shape == (5, 3)
        assert w[:, 0].tolist() == [0, 0, 2, 2, 2]

    @pytest.mark.parametrize("slices", [
        [((0, 3), (0, 3)), ((2, 3), (0, 3))],  # 18 elements stored for 15
        [((0, 3), (0, 3)), ((2, 2), (0, 3))],  # 15 elements stored, but row 2 twice and row 4 never
        [((0, 5), (0, 2)), ((1, 1), (1, 1)), ((4, 1), (2, 1)), ((0, 4), (2, 1))],
    ], ids=["too-many", "same-count", "2d"])
    def test_overlapping_slices(self, tmp_path, slices):
        prefix = partitioned(tmp_path / "p", [5, 3], slices)
        with pytest.raises(CorruptCheckpointError, match="slices of tensor 'w' overlap") as exc_info:
            ckpt.Reader(prefix)["w"]
        assert_error(exc_info, file=f"{prefix}.index", tensor="w")

    def test_gap_between_slices(self, tmp_path):
        prefix = partitioned(tmp_path / "gap", [5, 3], [((0, 2), (0, 3)), ((3, 2), (0, 3))])
        with pytest.raises(CorruptCheckpointError, match="cover 12 of its 15 elements") as exc_info:
            ckpt.Reader(prefix)["w"]
        exc = assert_error(exc_info, file=f"{prefix}.index", tensor="w")
        assert (exc.expected, exc.found) == (15, 12)

    def test_listed_slice_is_missing(self, tmp_path):
        slices = [((0, 2), (0, 3)), ((2, 3), (0, 3))]
        prefix = partitioned(tmp_path / "miss", [5, 3], slices[:1], listed=slices)
        with pytest.raises(CorruptCheckpointError, match="listed but missing") as exc_info:
            ckpt.Reader(prefix)["w"]
        assert_error(exc_info, file=f"{prefix}.index", tensor="w")

    def test_slice_outside_the_tensor(self, tmp_path):
        prefix = partitioned(tmp_path / "out", [5, 3], [((0, 5), (2, 3))])
        with pytest.raises(CorruptCheckpointError, match="outside dimension 1") as exc_info:
            ckpt.Reader(prefix).keys()
        assert_error(exc_info, file=f"{prefix}.index", tensor="w")

    def test_name_with_raw_nul_and_ff_bytes(self, tmp_path):
        # A name that is not UTF-8 (TensorFlow allows any bytes). Its slice key is spelled out per docs/format.md
        # section 2.6:
        # 0x00 -> 00 ff, 0xff -> ff 00, then the 00 01 terminator.
        name = b"w\xff\x00x"
        key = b"\x00" + b"w\xff\x00\x00\xffx" + b"\x00\x01" + b"\x01\x01" + b"\x80" + b"\x84"
        full = tensor_bundle_pb2.BundleEntryProto(dtype=3)
        full.shape.dim.add(size=4)
        full.slices.add().extent.add(start=0, length=4)
        payload = np.arange(4, dtype="<i4").tobytes()
        prefix = write_bundle(tmp_path / "ff", {name: full, key: entry_proto(3, [4], size=16, payload=payload)},
                              payload)
        with ckpt.Reader(prefix) as reader:
            (text_name,) = reader.keys()
            assert text_name.encode("utf-8", "surrogateescape") == name
            assert reader[text_name].tolist() == [0, 1, 2, 3]

    def test_slice_entry_with_wrong_shape(self, tmp_path):
        prefix = tmp_path / "shape"
        full = tensor_bundle_pb2.BundleEntryProto(dtype=1)
        full.shape.dim.add(size=4)
        full.slices.add().extent.add(start=0, length=4)
        payload = b"\x00" * 8
        entries = {b"w": full, encode_slice_key(b"w", [(0, 4)]): entry_proto(1, [2], size=8, payload=payload)}
        write_bundle(prefix, entries, payload)
        with pytest.raises(CorruptCheckpointError, match="expected \\[4\\]") as exc_info:
            ckpt.Reader(prefix)["w"]
        assert_error(exc_info, file=f"{prefix}.index", tensor="w")


# ============================================================================================ fuzzing


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    op = rng.randrange(5)
    if op == 0 and b:  # flip one bit
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # overwrite one byte
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:  # truncate
        del b[rng.randrange(len(b) + 1):]
    elif op == 3:  # insert a few bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif b:  # delete a few bytes
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    return bytes(b)


def test_fuzz_golden_files_only_raise_checkpoint_errors(tmp_path, monkeypatch):
    # Work done per input, counted (not timed): index entries decoded and bytes checksummed, which for these
    # memory-mapped reads are the bytes read. No damage may make the reader do more than the intact files need.
    work: collections.Counter = collections.Counter()
    decode_entry = table.TableReader._decode_entry

    def counting_decode(self, *args):
        work["entries"] += 1
        return decode_entry(self, *args)

    def counting_crc(data, crc=0):
        work["bytes"] += memoryview(data).nbytes
        return crc32c(data, crc)

    monkeypatch.setattr(table.TableReader, "_decode_entry", counting_decode)
    monkeypatch.setattr(table, "crc32c", counting_crc)
    monkeypatch.setattr(bundle_reader, "crc32c", counting_crc)
    rng = random.Random(20240601)
    targets = []  # (prefix, file, original bytes)
    for name in GOLDEN_DIRS:
        folder = copy_golden(tmp_path, name)
        prefixes = sorted(str(p)[:-len(".index")] for p in folder.glob("*.index"))
        for file in sorted(folder.iterdir()):
            if ".index" in file.name or ".data-" in file.name:
                prefix = next(p for p in prefixes if file.name.startswith(os.path.basename(p) + "."))
                targets.append((prefix, file, file.read_bytes()))
    outcomes = {"ok": 0, "error": 0}

    def read_all(prefix) -> None:
        work.clear()
        with ckpt.Reader(prefix) as reader:
            for key in reader.keys():
                reader[key]
            reader.dtypes()
            reader.metadata

    intact = {}
    for prefix, _, _ in targets:
        read_all(prefix)
        intact[prefix] = dict(work)
        assert work["entries"] > 0 and work["bytes"] > 0
    for i in range(3000):
        prefix, file, original = targets[rng.randrange(len(targets))]
        mutated = _mutate(rng, original)
        file.write_bytes(mutated)
        try:
            try:
                read_all(prefix)
                outcomes["ok"] += 1
            except CheckpointError as exc:
                assert str(exc), "an error with an empty message"
                assert os.path.basename(prefix) in str(exc), str(exc)
                outcomes["error"] += 1
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"mutation {i} of {file.name} ({len(original)} -> {len(mutated)} bytes) "
                            f"raised {type(exc).__name__}: {exc}")
        finally:
            file.write_bytes(original)
        for what in ("entries", "bytes"):
            assert work[what] <= intact[prefix][what], (i, file.name, what, work[what], intact[prefix][what])
    # Both outcomes occur: the fuzzer really damages files, and some damage is harmless (e.g. the metaindex block).
    assert outcomes["error"] > 1000 and outcomes["ok"] > 50, outcomes


# ============================================================================================ hostile names


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_tensor_names_round_trip_without_creating_files(tmp_path):
    names = ["a/b/c", "..", "../../etc/passwd", "/abs/path", "nul\x00inside", "tail\x00", "x" * 100_000,
             "dir/" + "y" * 100_000, "sp ace\ttab\nnewline", "\x1b[31mred", "ümlaut/日本", "\udcff raw byte"]
    state = {name: np.int32(i) for i, name in enumerate(names)}
    work = tmp_path / "work"
    work.mkdir()
    prefix = ckpt.save(state, work / "ck", sync=False)
    assert _tree(tmp_path) == {"work", "work/ck.index", "work/ck.data-00000-of-00001", "work/checkpoint"}
    loaded = ckpt.load(prefix, flat=True)
    assert sorted(loaded) == sorted(names)
    for i, name in enumerate(names):
        assert loaded[name] == i
    with ckpt.Reader(prefix) as reader:
        assert set(reader.keys()) == set(names)
        assert reader["nul\x00inside"] == names.index("nul\x00inside")
        assert "nul" not in reader  # NUL is part of the name, not a terminator
        assert reader["x" * 100_000] == names.index("x" * 100_000)
    assert _tree(tmp_path) == {"work", "work/ck.index", "work/ck.data-00000-of-00001", "work/checkpoint"}


def test_many_long_names_span_several_index_blocks(tmp_path):
    names = [f"layer{i:03d}/" + "w" * 30_000 for i in range(40)]  # 1.2 MB of keys: several 256 KiB blocks
    prefix = ckpt.save({n: np.float32(i) for i, n in enumerate(names)}, tmp_path / "long", sync=False)
    with ckpt.Reader(prefix) as reader:
        assert reader.keys() == names
        assert reader._bundle._table.num_blocks >= 4
        assert [float(reader[n]) for n in names] == [float(i) for i in range(40)]


def test_leading_nul_name_is_rejected_at_save(tmp_path):
    with pytest.raises(ckpt.errors.InvalidStateError, match="must not start with a NUL byte"):
        ckpt.save({"\x00w": np.float32(1)}, tmp_path / "ck", sync=False)
    assert list(tmp_path.iterdir()) == []


def test_reader_never_hides_unknown_names_behind_slice_keys(tmp_path):
    # Looking up a name that starts with NUL (a slice key) must not expose slice entries.
    folder = copy_golden(tmp_path, "tf1_sharded")
    with ckpt.Reader(folder / "model.ckpt") as reader:
        key = "\x00part/w\x00\x01\x01\x02\x80\x83\x80\x83"
        assert key not in reader
        with pytest.raises(CheckpointNotFoundError):
            reader[key]


# ============================================================================================ foreign formats
# Hostile safetensors, .npz, .pt and .h5 files (issue 13): files that read other files, forged sizes, truncated
# storages, malformed structures, odd dtypes and names. Each hostile file is generated here.

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402

from ckpt.cli.main import main as cli_main  # noqa: E402

SRC = Path(ckpt.__file__).resolve().parent.parent
LIMITED = textwrap.dedent("""
    import resource, sys, traceback
    import numpy, h5py, torch, ckpt
    from ckpt.errors import CheckpointError
    # Address-space limit: what the interpreter already maps plus {extra} MiB, so a forged size cannot be allocated.
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + {extra} * 2 ** 20, resource.RLIM_INFINITY))
    try:
        with ckpt.Reader(sys.argv[1]) as reader:
            for name in reader.keys():
                reader[name]
    except CheckpointError as exc:
        print("CKPT", type(exc).__name__, exc)
    except BaseException as exc:
        print("OTHER", type(exc).__name__, exc)
    else:
        print("READ")
""")


def read_limited(path: Path, extra_mib: int = 256) -> str:
    """Read everything at ``path`` in a child whose address space allows only ``extra_mib`` MiB more than the
    interpreter itself: the first word of the result says how it ended (CKPT error, OTHER exception, READ)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", LIMITED.format(extra=extra_mib), str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


h5py = pytest.importorskip("h5py")
torch = pytest.importorskip("torch")


class TestHdf5ReachesOtherFiles:
    @pytest.fixture()
    def secret(self, tmp_path):
        secret = tmp_path / "secret.txt"
        secret.write_bytes(b"root:x:0:0:SECRET\n" * 4)
        return secret

    def test_external_storage_is_refused_everywhere(self, tmp_path, secret, capsys):
        path = tmp_path / "model.weights.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("layers/dense/vars/0", data=np.ones((2, 2), np.float32))
            f.create_dataset("layers/dense/vars/1", shape=(72,), dtype="u1", external=[(str(secret), 0, 72)])
        with pytest.raises(UnsupportedError, match="external storage") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="layers/dense/vars/1")
        assert "secret.txt" in str(info.value)
        assert cli_main(["inspect", "--all", "--json", str(path)]) == 2
        out, err = capsys.readouterr()
        assert "SECRET" not in out + err and "external storage" in err
        with pytest.raises(UnsupportedError, match="external storage"):
            ckpt.convert(path, tmp_path / "out.npz")
        assert not (tmp_path / "out.npz").exists()

    def test_virtual_dataset_is_refused(self, tmp_path):
        other = tmp_path / "other.h5"
        with h5py.File(other, "w") as f:
            f["x"] = np.arange(4, dtype=np.float32)
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
        path = tmp_path / "vds.h5"
        with h5py.File(path, "w") as f:
            f.create_virtual_dataset("layers/d/vars/0", layout)
        with pytest.raises(UnsupportedError, match="virtual dataset") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="layers/d/vars/0")

    def test_external_link_is_refused_and_soft_links_are_not_followed(self, tmp_path):
        other = tmp_path / "other.h5"
        with h5py.File(other, "w") as f:
            f["x"] = np.arange(4, dtype=np.float32)
        path = tmp_path / "link.h5"
        with h5py.File(path, "w") as f:
            f["w"] = np.zeros(2, np.float32)
            f["soft"] = h5py.SoftLink("/w")
        with ckpt.Reader(path) as reader:
            assert reader.keys() == ["w"]  # listed once, by its hard link
        with h5py.File(path, "a") as f:
            f["layers/ext"] = h5py.ExternalLink(str(other), "/x")
        with pytest.raises(UnsupportedError, match="external link") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="layers/ext")


class TestForgedSizes:
    def test_hdf5_declaring_4_tib_allocates_nothing(self, tmp_path):
        path = tmp_path / "huge.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("layers/d/vars/0", shape=(2 ** 40,), dtype="f4", chunks=(2 ** 16,), compression="gzip")
        assert path.stat().st_size < 16384
        with pytest.raises(CorruptCheckpointError, match="declares 4398046511104 bytes") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="layers/d/vars/0")
        assert read_limited(path).startswith("CKPT CorruptCheckpointError")

    def test_hdf5_contiguous_dataset_without_its_bytes(self, tmp_path):
        path = tmp_path / "late.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("w", shape=(2 ** 29,), dtype="f4")  # never written: no storage allocated
        assert read_limited(path).startswith("CKPT CorruptCheckpointError")

    def test_hdf5_within_the_policy_reads(self, tmp_path):
        path = tmp_path / "zeros.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("w", data=np.zeros(1000, np.float32), chunks=(100,), compression="gzip")
            f.create_dataset("fill", shape=(10,), dtype="i4", fillvalue=7)
        with ckpt.Reader(path) as reader:
            np.testing.assert_array_equal(reader["w"], np.zeros(1000, np.float32))
            np.testing.assert_array_equal(reader["fill"], np.full(10, 7, np.int32))

    def test_npz_deflate_bomb(self, tmp_path):
        """300 MiB of zeros deflated to about 300 kB: refused before decompressing, in a bounded child."""
        path = tmp_path / "bomb.npz"
        nbytes = 300 << 20
        header = io_header(np.dtype(np.float32), (nbytes // 4,))
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = bytearray(comp.compress(header))
        chunk = bytes(16 << 20)
        crc = zlib.crc32(header)
        for _ in range(nbytes // len(chunk)):
            body += comp.compress(chunk)
            crc = zlib.crc32(chunk, crc)
        body += comp.flush()
        write_raw_zip(path, "w.npy", bytes(body), crc=crc, size=len(header) + nbytes, method=zipfile.ZIP_DEFLATED)
        assert path.stat().st_size < 1 << 20
        with pytest.raises(CorruptCheckpointError, match="decompression bomb") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="w")
        assert read_limited(path, extra_mib=128).startswith("CKPT CorruptCheckpointError")

    def test_npz_declaring_1_gi_float32_in_a_small_member(self, tmp_path):
        path = tmp_path / "forged.npz"
        header = io_header(np.dtype(np.float32), (2 ** 28,))
        body = header + bytes(64)
        write_raw_zip(path, "w.npy", body, crc=zlib.crc32(body), size=len(body))
        with pytest.raises(CorruptCheckpointError, match="declares") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="w")
        # The zip directory forged to agree with the header: the member's bytes are not in the file.
        write_raw_zip(path, "w.npy", body, crc=zlib.crc32(body), size=len(header) + 2 ** 30)
        assert read_limited(path, extra_mib=128).startswith("CKPT CorruptCheckpointError")

    def test_npz_compressed_member_shorter_than_declared(self, tmp_path):
        path = tmp_path / "short.npz"
        header = io_header(np.dtype(np.float32), (1000,))
        body = header + bytes(400)
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = comp.compress(body) + comp.flush()
        write_raw_zip(path, "w.npy", data, crc=zlib.crc32(body), size=len(header) + 4000,
                      method=zipfile.ZIP_DEFLATED)
        with pytest.raises(CorruptCheckpointError) as info:
            ckpt.Reader(path)["w"]
        assert_error(info, file=path, tensor="w")

    def test_npz_compressed_reads_correctly(self, tmp_path):
        path = tmp_path / "ok.npz"
        values = {"a": np.arange(12, dtype=">f8").reshape(3, 4), "b": np.asfortranarray(np.arange(6).reshape(2, 3)),
                  "c": np.zeros((0, 3), np.int8)}
        np.savez_compressed(path, **values)
        with ckpt.Reader(path) as reader:
            for name, value in values.items():
                np.testing.assert_array_equal(reader[name], value)
                assert reader[name].dtype == value.dtype

    def test_legacy_pt_with_a_forged_storage_size(self, tmp_path):
        path = tmp_path / "legacy.pt"
        torch.save({"w": torch.ones(1000003)}, path, _use_new_zipfile_serialization=False)
        raw = path.read_bytes()
        count = b"J" + struct.pack("<i", 1000003)
        assert raw.count(count) == 2  # the storage's element count (first), then the tensor's shape
        path.write_bytes(raw.replace(count, b"J" + struct.pack("<i", 2 ** 31 - 1), 1))
        with pytest.raises(CorruptCheckpointError, match="truncated or its size is forged") as info:
            ckpt.Reader(path)
        assert_error(info, file=path)
        assert read_limited(path).startswith("CKPT CorruptCheckpointError")

    def test_legacy_pt_reads(self, tmp_path):
        path = tmp_path / "legacy.pt"
        torch.save({"w": torch.arange(5.0), "n": torch.arange(3)}, path, _use_new_zipfile_serialization=False)
        with ckpt.Reader(path) as reader:
            np.testing.assert_array_equal(reader["w"], np.arange(5.0, dtype=np.float32))
            np.testing.assert_array_equal(reader["n"], np.arange(3))


def io_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_raw_zip(path: Path, name: str, data: bytes, *, crc: int, size: int, method: int = zipfile.ZIP_STORED):
    """A one-member zip whose directory claims ``size`` uncompressed bytes and ``crc``, whatever ``data`` is."""
    encoded = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data),
                        min(size, 0xFFFFFFFF), len(encoded), 0) + encoded
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                          min(size, 0xFFFFFFFF), len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)


def rewrite_zip(src: Path, dst: Path, change) -> None:
    """Copy a zip member by member; ``change(name, data)`` returns the member's new bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info)))


class TestTruncatedTorchStorage:
    def test_truncated_storage_entry(self, tmp_path):
        good = tmp_path / "good.pt"
        torch.save({"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(8)}, good)
        path = tmp_path / "cut.pt"
        rewrite_zip(good, path, lambda name, data: data[:100] if name.endswith("/data/0") else data)
        with pytest.raises(CorruptCheckpointError, match="truncated") as info:
            ckpt.Reader(path)
        assert_error(info, file=path)

    def test_flipped_storage_byte_fails_the_zip_crc(self, tmp_path):
        path = tmp_path / "flip.pt"
        torch.save({"w": torch.arange(64, dtype=torch.float32)}, path)
        raw = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
            name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
            start = info.header_offset + 30 + name_len + extra_len
        raw[start + 17] ^= 0x40
        path.write_bytes(bytes(raw))
        with pytest.raises(CorruptCheckpointError, match="CRC") as info:
            ckpt.Reader(path)
        assert_error(info, file=path)


class TestMalformedForeignFiles:
    def test_hdf5_empty_dataspace(self, tmp_path):
        path = tmp_path / "empty.h5"
        with h5py.File(path, "w") as f:
            f["e"] = h5py.Empty("f4")
            f.attrs["nothing"] = h5py.Empty("i4")
        with ckpt.Reader(path) as reader:
            assert reader.info("e").dtype == "empty(float32)" and reader.info("e").nbytes == 0
            with pytest.raises(UnsupportedError, match="null") as info:
                reader["e"]
            assert_error(info, file=path, tensor="e")
            assert isinstance(reader.metadata["nothing"], str)

    def test_truncated_hdf5(self, tmp_path):
        path = tmp_path / "cut.h5"
        with h5py.File(path, "w") as f:
            for i in range(20):
                f.create_dataset(f"layers/l{i}/vars/0", data=np.arange(100.0) + i)
        raw = path.read_bytes()
        for cut in (len(raw) // 3, len(raw) // 2, len(raw) - 100):
            path.write_bytes(raw[:cut])
            with pytest.raises(CheckpointError) as info:
                read_everything(path)
            assert str(path) in str(info.value)

    def test_npz_unknown_compression_and_broken_deflate(self, tmp_path):
        header = io_header(np.dtype(np.float32), (4,))
        body = header + bytes(16)
        path = tmp_path / "weird.npz"
        write_raw_zip(path, "w.npy", body, crc=zlib.crc32(body), size=len(body), method=99)
        with pytest.raises(CorruptCheckpointError) as info:
            ckpt.Reader(path)
        assert_error(info, file=path)
        write_raw_zip(path, "w.npy", b"\xff" * 40, crc=zlib.crc32(body), size=len(body), method=zipfile.ZIP_DEFLATED)
        with pytest.raises(CorruptCheckpointError) as info:
            ckpt.Reader(path)
        assert_error(info, file=path)

    def test_npz_crc_mismatch(self, tmp_path):
        header = io_header(np.dtype(np.float32), (4,))
        body = header + bytes(16)
        path = tmp_path / "crc.npz"
        write_raw_zip(path, "w.npy", body, crc=zlib.crc32(body) ^ 1, size=len(body))
        with pytest.raises(CorruptCheckpointError, match="CRC") as info:
            ckpt.Reader(path)["w"]
        assert_error(info, file=path, tensor="w")

    def test_more_than_64_dimensions(self, tmp_path):
        path = tmp_path / "deep.npz"
        header = io_header(np.dtype(np.uint8), (1,) * 65)
        body = header + b"\x01"
        write_raw_zip(path, "w.npy", body, crc=zlib.crc32(body), size=len(body))
        with pytest.raises(CorruptCheckpointError, match="64") as info:
            ckpt.Reader(path)
        assert_error(info, file=path, tensor="w")
        st_path = tmp_path / "deep.safetensors"
        header_json = json.dumps({"w": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}).encode()
        st_path.write_bytes(struct.pack("<Q", len(header_json)) + header_json + b"\x01")
        with pytest.raises(CorruptCheckpointError, match="64") as info:
            ckpt.Reader(st_path)
        assert_error(info, file=st_path, tensor="w")

    @pytest.mark.parametrize("garbage", [b"PK\x03\x04" + b"\0" * 40, b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a"
                                         b"\xa8\x50\x19" + b"\x80\x02(((", b"\x80\x02" + b"\x95" * 30])
    def test_garbage_pt(self, tmp_path, garbage):
        path = tmp_path / "bad.pt"
        path.write_bytes(garbage)
        with pytest.raises(CheckpointError) as info:
            ckpt.Reader(path, format="torch")
        assert str(path) in str(info.value)


class TestOddDtypesInInspect:
    def test_structured_npz(self, tmp_path, capsys):
        path = tmp_path / "rec.npz"
        np.savez(path, r=np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]), ok=np.arange(3))
        with ckpt.Reader(path) as reader:
            assert reader.info("r").dtype == "structured"
            with pytest.raises(UnsupportedError, match="structured") as info:
                reader["r"]
            assert_error(info, file=path, tensor="r")
        assert cli_main(["inspect", "--json", str(path)]) == 0
        assert json.loads(capsys.readouterr().out)["tensors"][1]["dtype"] == "structured"
        assert cli_main(["inspect", "--json", "--all", str(path)]) == 2
        assert "structured" in capsys.readouterr().err

    def test_hdf5_vlen_reference_and_strings(self, tmp_path, capsys):
        path = tmp_path / "odd.h5"
        with h5py.File(path, "w") as f:
            v = f.create_dataset("vlen", shape=(2,), dtype=h5py.vlen_dtype(np.int32))
            v[0], v[1] = [1, 2], [3]
            f["ref"] = v.ref
            f["names"] = np.array([b"alpha", b"beta"], dtype=h5py.string_dtype())
            f["fixed"] = np.array([b"ab", b"c"])
        with ckpt.Reader(path) as reader:
            assert reader.info("vlen").dtype == "variable-length(int32)"
            assert reader.info("ref").dtype == "reference"
            assert reader["names"].tolist() == [b"alpha", b"beta"]
            assert reader["fixed"].tolist() == [b"ab", b"c"]
            for name in ("vlen", "ref"):
                with pytest.raises(UnsupportedError, match="not a tensor") as info:
                    reader[name]
                assert_error(info, file=path, tensor=name)
        assert cli_main(["inspect", "--json", str(path)]) == 0
        capsys.readouterr()
        assert cli_main(["inspect", "--json", "--all", str(path)]) == 2
        assert "not a tensor" in capsys.readouterr().err


class TestConvertNames:
    @pytest.fixture()
    def source(self, tmp_path):
        path = tmp_path / "odd.pt"
        torch.save({"nul\x00inside": torch.ones(2), "bad\udcffbyte": torch.zeros(2), "x" * 100_000: torch.ones(1),
                    "fine": torch.arange(3)}, path)
        return path

    def test_npz_lists_every_bad_name_and_writes_nothing(self, tmp_path, source):
        out = tmp_path / "out" / "model.npz"
        with pytest.raises(UnsupportedError) as info:
            ckpt.convert(source, out)
        message = str(info.value)
        assert "3 problem(s)" in message and "NUL" in message and "65531" in message and "Unicode" in message
        assert not out.exists() and not list(tmp_path.glob("out/*"))

    def test_safetensors_refuses_undecodable_names(self, tmp_path, source):
        out = tmp_path / "model.safetensors"
        with pytest.raises(UnsupportedError, match="1 problem") as info:
            ckpt.convert(source, out)
        assert "bad" in str(info.value)
        assert not out.exists()
        ckpt.convert(source, out, exclude="bad*")
        with ckpt.Reader(out) as reader:
            assert "nul\x00inside" in reader and "x" * 100_000 in reader

    def test_a_failed_verification_leaves_nothing(self, tmp_path, monkeypatch):
        src = tmp_path / "src.safetensors"
        from safetensors.numpy import save_file

        save_file({"a": np.arange(3, dtype=np.float32)}, str(src))
        from ckpt import _convert

        monkeypatch.setattr(_convert, "checksum", lambda array, _n=iter(range(100)): next(_n))
        out = tmp_path / "out.npz"
        with pytest.raises(CorruptCheckpointError, match="verification"):
            ckpt.convert(src, out)
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]
