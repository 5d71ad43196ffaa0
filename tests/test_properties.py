"""Property-based tests of the codecs: varints, CRC32C, the sorted table, string tensors, slice keys, save/load."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import ckpt
from ckpt.tf._crc import crc32c, mask, unmask
from ckpt.tf._varint import VarintError, decode_varint, encode_varint
from ckpt.tf.bundle import BundleReader, BundleWriter, encode_strings
from ckpt.tf.slices import _num_increasing, _signed_num_increasing, _string, encode_slice_key
from ckpt.tf.table import BLOCK_SIZE, TableReader, TableWriter, _short_successor, _shortest_separator

DATA = Path(__file__).parent / "data"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U64 = st.integers(min_value=0, max_value=2 ** 64 - 1)
I64 = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)


# ============================================================================================ varints


@FAST
@given(st.lists(U64, max_size=20))
@example([0, 127, 128, 2 ** 63, 2 ** 64 - 1])
def test_varint_round_trip(values):
    buf = b"".join(encode_varint(v) for v in values)
    pos = 0
    decoded = []
    while pos < len(buf):
        value, pos = decode_varint(buf, pos)
        decoded.append(value)
    assert decoded == values


@FAST
@given(U64)
def test_varint_is_minimal_leb128(value):
    encoded = encode_varint(value)
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
    assert all(b & 0x80 for b in encoded[:-1]) and not encoded[-1] & 0x80
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(encoded)) == value


@FAST
@given(st.integers(min_value=128, max_value=2 ** 64 - 1), st.data())
def test_truncated_varint_is_rejected(value, data):
    encoded = encode_varint(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(VarintError):
        decode_varint(encoded[:cut], 0)
    # The same bytes inside a longer buffer but with ``end`` set at the cut.
    with pytest.raises(VarintError):
        decode_varint(encoded + b"\x00" * 4, 0, cut)


def test_overlong_and_overflowing_varints_are_rejected():
    with pytest.raises(VarintError, match="longer than 10"):
        decode_varint(b"\x80" * 10 + b"\x00", 0)
    with pytest.raises(VarintError, match="overflows"):
        decode_varint(b"\xff" * 9 + b"\x02", 0)
    assert decode_varint(b"\xff" * 9 + b"\x01", 0) == (2 ** 64 - 1, 10)
    for bad in (-1, 2 ** 64):
        with pytest.raises(ValueError):
            encode_varint(bad)


# ============================================================================================ CRC32C


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert mask(0) == 0xA282EAD8
    # docs/format.md section 1.6: the stored CRC of alpha in tf1_saver/model.ckpt-30
    assert crc32c(bytes.fromhex("fc75da3f")) == 0x80EA5120
    assert mask(0x80EA5120) == 0x44C3ECAC


@FAST
@given(st.integers(min_value=0, max_value=2 ** 32 - 1))
def test_mask_unmask_inverse(crc):
    assert unmask(mask(crc)) == crc
    assert mask(unmask(crc)) == crc
    assert 0 <= mask(crc) < 2 ** 32


@FAST
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_crc32c_extend_equals_concatenation(a, b):
    assert crc32c(b, crc32c(a)) == crc32c(a + b)


# ============================================================================================ sorted table

PREFIXES = [b"", b"model/", b"model/layer_1/", b"\xff", b"\xff\xff", b"\x00", b"a" * 40, b"model/layer_1/kernel"]


def keys_strategy(max_size=60):
    """Sorted unique keys, many sharing prefixes, some with 0x00 / 0xff bytes."""
    key = st.one_of(
        st.binary(max_size=12),
        st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=4)).map(lambda t: t[0] + t[1]),
        st.tuples(st.sampled_from(PREFIXES), st.sampled_from([b"\xff", b"\xff\xff", b"\x00", b"z"])).map(
            lambda t: t[0] + t[1]),
    )
    return st.lists(key, max_size=max_size, unique=True).map(sorted)


def build_table(pairs):
    writer = TableWriter()
    for key, value in pairs:
        writer.add(key, value)
    return writer.finish()


def absent_probes(keys):
    """Keys not in the table: before the first, between neighbours, after the last, and 0xff-extended ones."""
    probes = {b"\x00" * 3, b"\xff" * 50, b"between"}
    for key in keys:
        probes.update({key + b"\x00", key + b"\xff", key[:-1], _short_successor(key)})
    return sorted(probes - set(keys))


@FAST
@given(keys_strategy(), st.data())
def test_table_round_trip(keys, data):
    values = [data.draw(st.binary(max_size=300)) for _ in keys]
    pairs = list(zip(keys, values))
    reader = TableReader(build_table(pairs))
    assert list(reader.items()) == pairs
    for key, value in pairs:
        assert reader.get(key) == value
    for probe in absent_probes(keys):
        assert reader.get(probe) is None, probe
    if keys:
        start = keys[len(keys) // 2]
        assert list(reader.items(start)) == pairs[len(keys) // 2:]


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(keys_strategy(max_size=30), st.integers(min_value=20_000, max_value=120_000))
def test_table_round_trip_across_blocks(keys, value_size):
    assume(len(keys) >= 8)
    pairs = [(k, bytes([i % 251]) * value_size) for i, k in enumerate(keys)]
    reader = TableReader(build_table(pairs))
    assert reader.num_blocks >= (len(keys) * value_size) // (BLOCK_SIZE + value_size)
    assert list(reader.items()) == pairs
    for key, value in pairs:
        assert reader.get(key) == value
    for probe in absent_probes(keys):
        assert reader.get(probe) is None


def test_table_with_values_spanning_several_256k_blocks():
    keys = sorted({f"layer{i:02d}/{'w' if i % 2 else 'b'}".encode() for i in range(12)} | {b"\xff\xff", b"\xff"})
    pairs = [(k, bytes([i]) * (100_000 + 37 * i)) for i, k in enumerate(keys)]
    pairs[5] = (pairs[5][0], b"\x07" * (2 * BLOCK_SIZE + 5))  # bigger than two blocks: flushed on its own
    raw = build_table(pairs)
    reader = TableReader(raw, path="big.index")
    assert reader.num_blocks >= 5
    assert list(reader.items()) == pairs
    for key, value in pairs:
        assert reader.get(key) == value
    assert reader.get(b"") is None  # before the first key
    assert reader.get(b"layer00/b\x00") is None  # between two keys
    assert reader.get(b"layer05/x") is None
    assert reader.get(b"\xff\xff\xff") is None  # after the last key (which is all 0xff)
    assert reader.get(keys[-1] + b"\x00") is None
    # TableBuilder flushes before a value of >= 2 blocks, and after it: that value sits alone in its block.
    blocks = [[k for k, _ in reader._block_entries(reader._data_block(i), "")] for i in range(reader.num_blocks)]
    assert [pairs[5][0]] in blocks
    assert all(len(block) <= 3 for block in blocks)  # ~100 KB values: at most 3 reach the 256 KiB estimate
    # A lookup reads one data block: the cache holds only what was touched.
    fresh = TableReader(raw)
    fresh.get(keys[7])
    assert len(fresh._cache) == 1


def test_table_many_small_keys_two_blocks():
    # docs/format.md section 1.6: 9000 tensor entries gave two data blocks, the first flushed once the estimate
    # reached 256 KiB.
    pairs = [(f"model/layer_{i:05d}/kernel".encode(), b"\x08\x01\x12\x00\x28\x04" + bytes(20)) for i in range(9000)]
    raw = build_table(pairs)
    reader = TableReader(raw)
    assert reader.num_blocks == 2
    assert reader.get(pairs[4562][0]) == pairs[4562][1]
    assert reader.get(b"model/layer_04562/kernel\x00") is None
    assert [k for k, _ in reader.items()] == [k for k, _ in pairs]


def test_table_writer_rejects_unsorted_or_duplicate_keys():
    writer = TableWriter()
    writer.add(b"b", b"")
    for bad in (b"a", b"b"):
        with pytest.raises(ValueError, match="strictly increasing"):
            writer.add(bad, b"")


@FAST
@given(st.binary(max_size=10), st.binary(max_size=10))
def test_shortest_separator_separates(a, b):
    start, limit = sorted((a, b))
    assume(start < limit)
    sep = _shortest_separator(start, limit)
    assert start <= sep < limit
    assert len(sep) <= len(start)


@FAST
@given(st.binary(max_size=10))
def test_short_successor_is_not_smaller(key):
    succ = _short_successor(key)
    assert succ >= key
    assert len(succ) <= len(key)


# ============================================================================================ string tensors


@FAST
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"", b"\x00", b"\xff" * 3]), max_size=30))
def test_string_tensor_round_trip(items):
    array = np.empty(len(items), dtype=object)
    array[:] = items
    payload, crc = encode_strings(array)
    # docs/format.md section 2.2: size = varints + 4 + bytes; the length checksum covers the fixed-width lengths
    varints = b"".join(encode_varint(len(b)) for b in items)
    assert payload[:len(varints)] == varints
    assert payload[len(varints) + 4:] == b"".join(items)
    len_crc = crc32c(struct.pack(f"<{len(items)}I", *map(len, items)))
    assert payload[len(varints):len(varints) + 4] == struct.pack("<I", mask(len_crc))
    with tempfile.TemporaryDirectory() as tmp:
        with BundleWriter(f"{tmp}/s", sync=False) as writer:
            writer.add("s", array)
            writer.add("s2", array.reshape(1, -1))
            writer.finish()
        with BundleReader(f"{tmp}/s") as reader:
            entry = reader.entry("s")
            assert entry.size == len(payload) and entry.crc32c == crc
            got = reader.read("s")
            assert got.dtype == object and got.shape == (len(items),)
            assert got.tolist() == items
            assert reader.read("s2").shape == (1, len(items))


# ============================================================================================ save / load

DTYPES = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128,
          ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES + [object])))
    shape = tuple(draw(st.lists(st.integers(min_value=0, max_value=4), max_size=3)))
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == object:
        array = np.empty(count, dtype=object)
        array[:] = [draw(st.binary(max_size=8)) for _ in range(count)]
        return array.reshape(shape)
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    array = np.frombuffer(raw, dtype=np.uint8).copy()
    if dtype == np.bool_:
        array &= 1
    return array.view(dtype).reshape(shape)  # every bit pattern: NaNs, infinities, negative zeros


NAMES = st.text(alphabet="abcxyz_.-0123456789", min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(NAMES, arrays(), min_size=1, max_size=6), st.integers(min_value=1, max_value=3))
def test_save_load_round_trip_is_bit_identical(state, num_shards):
    with tempfile.TemporaryDirectory() as tmp:
        prefix = ckpt.save(state, f"{tmp}/ck", sync=False, num_shards=num_shards)
        loaded = ckpt.load(prefix, flat=True)
        assert sorted(loaded) == sorted(state)
        for name, expected in state.items():
            got = loaded[name]
            assert got.shape == expected.shape, name
            assert got.dtype == expected.dtype, name
            if expected.dtype == object:
                assert got.tolist() == expected.tolist()
            else:
                assert got.tobytes() == expected.tobytes(), name
        with ckpt.Reader(prefix) as reader:
            assert reader.shapes() == {n: a.shape for n, a in state.items()}


def test_big_endian_input_is_stored_little_endian(tmp_path):
    values = np.array([1, 2, 0x01020304], dtype=">i4")
    prefix = ckpt.save({"x": values}, tmp_path / "ck", sync=False)
    assert (tmp_path / "ck.data-00000-of-00001").read_bytes() == np.array([1, 2, 0x01020304], "<i4").tobytes()
    assert ckpt.load(prefix, flat=True)["x"].tolist() == [1, 2, 0x01020304]


# ============================================================================================ slice keys


@pytest.mark.parametrize("value,encoded", [
    (0, "80"), (3, "83"), (-1, "7f"), (63, "bf"), (-64, "40"),
    (0x424242, "f0424242"), (-0x800, "3800"), (70000, "e11170"), (130000, "e1fbd0"),
])
def test_signed_num_increasing_spec_examples(value, encoded):
    assert _signed_num_increasing(value).hex() == encoded


def test_num_increasing():
    assert _num_increasing(0) == b"\x00"
    assert _num_increasing(2) == b"\x01\x02"
    assert _num_increasing(0x1234) == b"\x02\x12\x34"


def test_slice_key_matches_tensorflow():
    # docs/format.md section 2.5: the keys TensorFlow wrote for the two slices of part/w [5, 3] in tf1_sharded
    assert encode_slice_key(b"part/w", [(0, 3), (0, 3)]) == b"\x00part/w\x00\x01\x01\x02\x80\x83\x80\x83"
    with BundleReader(DATA / "tf1_sharded" / "model.ckpt") as reader:
        stored = [k for k, _ in reader._table.items() if k[:1] == b"\x00"]
    full = [e for e in BundleReader(DATA / "tf1_sharded" / "model.ckpt").entries() if e.name == "part/w"][0]
    assert sorted(encode_slice_key(b"part/w", s) for s in full.slices) == stored
    # NUL and 0xff inside a name are escaped, so they cannot end the name early.
    assert encode_slice_key(b"a\x00b\xff", [(0, -1)]) == b"\x00a\x00\xffb\xff\x00\x00\x01\x01\x01\x80\x7f"


@FAST
@given(I64, I64)
def test_signed_num_increasing_preserves_order(a, b):
    assume(a != b)
    a, b = sorted((a, b))
    assert _signed_num_increasing(a) < _signed_num_increasing(b)


def test_signed_num_increasing_preserves_order_at_length_boundaries():
    values = {0}
    for bits in range(1, 64):
        for v in (2 ** bits, -(2 ** bits)):
            values.update({v - 1, v, v + 1})
    values = sorted(v for v in values if -(2 ** 63) <= v < 2 ** 63)
    encoded = [_signed_num_increasing(v) for v in values]
    assert encoded == sorted(encoded)
    assert len(set(encoded)) == len(encoded)
    assert max(map(len, encoded)) == 10


@FAST
@given(st.binary(max_size=8), st.binary(max_size=8),
       st.lists(st.tuples(st.integers(0, 2 ** 40), st.integers(-1, 2 ** 40)), min_size=1, max_size=3))
def test_slice_keys_sort_by_name_first(a, b, extents):
    assume(a < b)
    assert encode_slice_key(a, extents) < encode_slice_key(b, extents)
    assert encode_slice_key(a, extents)[:1] == b"\x00"


def _decode_ordered_string(encoded: bytes) -> tuple[bytes, int]:
    """OrderedCode ReadString, written independently: returns (value, bytes consumed)."""
    out = bytearray()
    i = 0
    while True:
        byte, nxt = encoded[i], encoded[i + 1]
        if byte == 0x00 and nxt == 0x01:
            return bytes(out), i + 2
        if byte == 0x00 and nxt == 0xFF:
            out.append(0x00)
        elif byte == 0xFF and nxt == 0x00:
            out.append(0xFF)
        elif byte in (0x00, 0xFF):
            raise AssertionError(f"bad escape {encoded[i:i + 2].hex()} at {i}")
        else:
            out.append(byte)
            i += 1
            continue
        i += 2


@FAST
@given(st.binary(max_size=20) | st.lists(st.sampled_from([b"\x00", b"\xff", b"\x01", b"a"]), max_size=8).map(b"".join))
@example(b"\xff")
@example(b"\x00\xff\x00")
def test_ordered_string_escaping_round_trips(name):
    encoded = _string(name)
    assert _decode_ordered_string(encoded) == (name, len(encoded))


@FAST
@given(st.binary(max_size=8), st.binary(max_size=8))
def test_ordered_string_preserves_order(a, b):
    assume(a != b)
    a, b = sorted((a, b))
    assert _string(a) < _string(b)
