"""Hostile input, fuzzed: only ckpt's own errors escape, memory stays bounded, nothing hangs, nothing is unpickled.

Property-based fuzzing with hypothesis over everything ckpt reads from disk: the ``.index`` table (random bytes and
mutations of a valid one), bundle entries (every field of ``BundleEntryProto`` forged, including shapes of 2^60
elements), string tensors (mutated encodings), the ``checkpoint`` state file and the manager record. Each input is
read completely (open, list, read every tensor, ``check_bundle``, ``ckpt.verify``, ``ckpt.latest``) and must
either work or raise a :class:`ckpt.CheckpointError`; the peak of traced memory stays under a bound; each input
finishes within a time bound (a SIGALRM timer turns a hang into a failure naming the input).

The other formats ckpt reads (safetensors, ``.npz``, ``.pt``, ``.h5``, graph files) are fuzzed by mutating valid
seeds; hypothesis draws the files and one child process per format reads them all under an address-space limit
(``RLIMIT_AS``) and a per-file timer (``tests/fuzz_formats_child.py``), comparing values with the format's own
library. ``2 x CKPT_FUZZ_EXAMPLES`` files are drawn per format.

The number of examples per target is ``CKPT_FUZZ_EXAMPLES`` (default 100: about ten seconds in all); ``make fuzz``
runs many more, then the coverage-guided atheris fuzzer (``fuzz/fuzz_reader.py``). ``CKPT_FUZZ_RANDOM=1`` draws new
examples on every run instead of the same ones.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import tokenize
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import ckpt
from ckpt.errors import CheckpointError
from ckpt.tf import state_file
from ckpt.tf._crc import mask
from ckpt.tf.bundle import BundleReader, BundleWriter, check_bundle, encode_strings
from ckpt.tf.protos import tensor_bundle_pb2
from ckpt.tf.table import TableWriter
from faults import count

EXAMPLES = int(os.environ.get("CKPT_FUZZ_EXAMPLES", "100"))
MEMORY_LIMIT = 64 * 1024 * 1024  # bytes of traced allocation peak per input; the inputs are a few KiB
TIME_LIMIT = 10.0  # seconds per input before it counts as a hang (generous: CI machines are slow)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("CKPT_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), database=None)
WORK = Path(tempfile.mkdtemp(prefix="ckpt-fuzz-"))
DATA = Path(__file__).parent / "data"


class Hang(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def _remove_scratch():
    yield
    shutil.rmtree(WORK, ignore_errors=True)


@contextmanager
def bounded(target: str):
    """Count one input of ``target``; fail it if it runs too long or allocates too much."""
    count(f"fuzz inputs: {target}")

    def alarm(signum, frame):
        raise Hang(f"{target}: one input ran longer than {TIME_LIMIT} s")

    timer = hasattr(signal, "setitimer")  # POSIX; elsewhere a hang stalls the run instead of failing it
    if timer:
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MEMORY_LIMIT, f"{target}: one input made ckpt allocate {peak:,} bytes"
    finally:
        tracemalloc.stop()
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def only_ckpt_errors(fn, *args):
    """Run ``fn``; a CheckpointError is an acceptable answer to hostile input, anything else is a bug."""
    try:
        return fn(*args)
    except CheckpointError as exc:
        assert str(exc), "an error without a message"
        return exc


def read_everything(prefix: str) -> None:
    """Everything a user can do with a checkpoint, each step allowed to fail only with a CheckpointError."""

    def through_reader():
        with ckpt.Reader(prefix) as reader:
            for name in reader.keys():
                only_ckpt_errors(lambda: reader[name])
            reader.dtypes()
            reader.shapes()
            only_ckpt_errors(lambda: reader.metadata)

    def through_bundle():
        with BundleReader(prefix, verify_checksums=False) as bundle:
            for entry in bundle.entries():
                only_ckpt_errors(bundle.read_entry, entry)

    only_ckpt_errors(through_reader)
    only_ckpt_errors(through_bundle)
    result = check_bundle(prefix)  # never raises: problems are data
    assert all(isinstance(p, CheckpointError) for p in result.problems)
    report = ckpt.verify(prefix)
    assert report.ok == (not report.problems)


# ============================================================================================ inputs


def _valid_bundle() -> tuple[bytes, bytes]:
    """A small valid bundle's index and data bytes: POD, string, empty, scalar and partitioned tensors."""
    prefix = str(WORK / "seed")
    with BundleWriter(prefix, sync=False) as writer:
        writer.add("a/kernel", np.arange(12, dtype=np.float32).reshape(3, 4))
        writer.add("b/bias", np.array([1.5, -2.0], np.float64))
        writer.add("c/strings", np.array([b"", b"hello", "ünïcode".encode(), b"x" * 300], dtype=object))
        writer.add("d/empty", np.zeros((0, 5), np.int64))
        writer.add("e/scalar", np.int8(-3))
        writer.add_slice("f/part", (4, 2), ((0, 2), (0, -1)), np.ones((2, 2), np.float32))
        writer.add_slice("f/part", (4, 2), ((2, 2), (0, -1)), np.zeros((2, 2), np.float32))
        writer.finish()
    return Path(f"{prefix}.index").read_bytes(), Path(f"{prefix}.data-00000-of-00001").read_bytes()


SEED_INDEX, SEED_DATA = _valid_bundle()


@st.composite
def mutated(draw, original: bytes, max_ops: int = 6) -> bytes:
    """``original`` with a few random edits: bit flips, byte overwrites, truncation, insertion, deletion."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice-int"]))
        at = draw(st.integers(0, max(len(data), 1) - 1)) if data else 0
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "splice-int" and len(data) >= 8:  # a plausible-looking big number
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFFFFFFFF, 2 ** 32, 2 ** 60, 2 ** 63 - 1, 2 ** 64 - 1]))
            data[at:at + 8] = value.to_bytes(8, "little")
    return bytes(data)


def write_bundle(prefix: Path, index: bytes, data: bytes | list[bytes]) -> str:
    Path(f"{prefix}.index").write_bytes(index)
    shards = data if isinstance(data, list) else [data]
    for old in prefix.parent.glob(f"{prefix.name}.data-*"):
        old.unlink()
    for i, payload in enumerate(shards):
        Path(f"{prefix}.data-{i:05d}-of-{len(shards):05d}").write_bytes(payload)
    return str(prefix)


def index_with(entries: dict[bytes, bytes], num_shards: int = 1) -> bytes:
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=num_shards)
    header.version.producer = 1
    table = TableWriter()
    table.add(b"", header.SerializeToString())
    for key in sorted(entries):
        table.add(key, entries[key])
    return table.finish()


BIG = [0, 1, 2, 3, 7, 255, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 60, 2 ** 62, 2 ** 63 - 1]
dims = st.one_of(st.integers(0, 8), st.sampled_from(BIG), st.integers(-(2 ** 63), 2 ** 63 - 1))
int64s = st.one_of(st.integers(0, 600), st.sampled_from(BIG + [-1, -(2 ** 63)]), st.integers(-(2 ** 63), 2 ** 63 - 1))


@st.composite
def entry_protos(draw) -> bytes:
    """A BundleEntryProto with every field drawn from plausible and hostile values, or raw garbage bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    proto = tensor_bundle_pb2.BundleEntryProto(
        dtype=draw(st.one_of(st.integers(0, 30), st.integers(100, 130), st.integers(-(2 ** 31), 2 ** 31 - 1))),
        shard_id=draw(st.one_of(st.integers(0, 2), st.integers(-(2 ** 31), 2 ** 31 - 1))),
        offset=draw(int64s), size=draw(int64s))
    proto.crc32c = draw(st.integers(0, 2 ** 32 - 1))
    if draw(st.booleans()):
        proto.shape.unknown_rank = draw(st.booleans())
    for d in draw(st.lists(dims, max_size=6)):
        proto.shape.dim.add(size=d)
    for _ in range(draw(st.integers(0, 2))):
        piece = proto.slices.add()
        for _ in range(draw(st.integers(0, 3))):
            extent = piece.extent.add(start=draw(int64s))
            if draw(st.booleans()):
                extent.length = draw(int64s)
    return proto.SerializeToString()


# ============================================================================================ fuzz targets


@FUZZ
@given(index=st.one_of(st.binary(max_size=512), mutated(SEED_INDEX)), data=st.one_of(st.just(SEED_DATA),
                                                                                        mutated(SEED_DATA)))
@example(index=SEED_INDEX, data=SEED_DATA)
@example(index=b"", data=b"")
@example(index=SEED_INDEX[:-1], data=SEED_DATA)
def test_fuzz_index_table_and_data(index, data):
    prefix = write_bundle(WORK / "table", index, data)
    with bounded("index table + data file"):
        read_everything(prefix)


@FUZZ
@given(entries=st.dictionaries(st.binary(min_size=1, max_size=12), entry_protos(), max_size=4),
       data=st.binary(max_size=256), shards=st.integers(1, 3))
@example(entries={b"huge": tensor_bundle_pb2.BundleEntryProto(
    dtype=1, shape={"dim": [{"size": 2 ** 60}]}, size=2 ** 62).SerializeToString()}, data=b"\0" * 16, shards=1)
@example(entries={b"huge/strings": tensor_bundle_pb2.BundleEntryProto(
    dtype=7, shape={"dim": [{"size": 2 ** 60}]}, size=64).SerializeToString()}, data=b"\0" * 64, shards=1)
@example(entries={b"huge/part": tensor_bundle_pb2.BundleEntryProto(
    dtype=1, shape={"dim": [{"size": 2 ** 30}, {"size": 2 ** 30}]},
    slices=[{"extent": [{"start": 0, "length": 1}]}]).SerializeToString()}, data=b"", shards=1)
def test_fuzz_bundle_entries(entries, data, shards):
    """Forged BundleEntryProto fields: dtypes, shapes up to 2^63 elements, shards, offsets, sizes, CRCs, slices."""
    assume(b"" not in entries)
    prefix = write_bundle(WORK / "entries", index_with(entries, shards), [data] * shards)
    with bounded("bundle entries"):
        read_everything(prefix)


@st.composite
def string_payloads(draw) -> tuple[int, bytes, int]:
    """(element count, payload, crc) of a string tensor: valid encodings, mutated ones, and garbage."""
    items = draw(st.lists(st.binary(max_size=40), max_size=8))
    payload, crc = encode_strings(np.array(items, dtype=object))
    n = len(items)
    choice = draw(st.integers(0, 3))
    if choice == 1:
        payload = draw(mutated(payload))
    elif choice == 2:
        payload = draw(st.binary(max_size=128))
    elif choice == 3:
        n = draw(st.sampled_from([0, 1, n + 1, 2 ** 20, 2 ** 40]))
    if draw(st.booleans()):
        crc = draw(st.integers(0, 2 ** 32 - 1))
    return n, payload, crc


@FUZZ
@given(case=string_payloads(), lead=st.binary(max_size=8))
def test_fuzz_string_tensors(case, lead):
    n, payload, crc = case
    entry = tensor_bundle_pb2.BundleEntryProto(dtype=7, offset=len(lead), size=len(payload), crc32c=mask(crc))
    entry.shape.dim.add(size=n)
    prefix = write_bundle(WORK / "strings", index_with({b"s": entry.SerializeToString()}), lead + payload)
    with bounded("string tensors"):
        read_everything(prefix)
        result = only_ckpt_errors(lambda: ckpt.Reader(prefix)["s"])
        if not isinstance(result, CheckpointError):
            assert result.shape == (n,) and all(isinstance(v, bytes) for v in result.reshape(-1))


VALID_STATE = ('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-2"\n'
               'all_model_checkpoint_paths: "ckpt-3"\nall_model_checkpoint_timestamps: 1.5\n'
               'all_model_checkpoint_timestamps: 2.5\nlast_preserved_timestamp: 1.0\n')


@pytest.fixture(scope="module")
def state_dir():
    directory = WORK / "state"
    directory.mkdir(exist_ok=True)
    for step in (2, 3):
        ckpt.save({"w": np.full(3, step, np.float32)}, directory / "ckpt", step=step, sync=False)
    return directory


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300), mutated(VALID_STATE.encode()),
                      st.builds(lambda p: f'model_checkpoint_path: "{p}"\n', st.sampled_from(
                          ["../../etc/passwd", "/abs/ckpt-3", "ckpt-3\\x00", "ckpt-2", "", ".", "..",
                           "x" * 5000]))))
def test_fuzz_state_file(text, state_dir):
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    (state_dir / "checkpoint").write_bytes(raw)
    with bounded("state file"):
        only_ckpt_errors(state_file.read_state, state_dir)
        found = ckpt.latest(state_dir)  # never raises: a garbled state file falls back to a scan
        assert found is None or os.path.exists(f"{found}.index")
        assert ckpt.latest(state_dir, verify=True) in (str(state_dir / "ckpt-2"), str(state_dir / "ckpt-3"))
        assert isinstance(ckpt.verify(state_dir).ok, bool)
        with ckpt.Reader(state_dir) as reader:
            assert reader["w"].shape == (3,)


VALID_RECORD = json.dumps({"format": 1, "name": "ckpt", "last_preserved": 1.0, "checkpoints": [
    {"step": 1, "prefix": "ckpt-1", "time": 2.0, "metrics": {"loss": 0.5, "acc": "nan"}, "preserved": True}]})
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


@st.composite
def records(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(mutated(VALID_RECORD.encode()))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    if kind == 2:  # a valid shape with hostile values
        record = json.loads(VALID_RECORD)
        item = record["checkpoints"][0]
        key = draw(st.sampled_from(["step", "prefix", "time", "metrics", "preserved", "format", "name"]))
        value = draw(json_values | st.sampled_from(["../../etc/passwd", "/abs/ckpt-1", "ckpt-1/../../x"]))
        (record if key in ("format", "name") else item)[key] = value
        return json.dumps(record).encode()
    return draw(st.binary(max_size=200))


@FUZZ
@given(raw=records())
def test_fuzz_manager_record(raw):
    directory = WORK / "record"
    directory.mkdir(exist_ok=True)
    (directory / "ckpt.manager.json").write_bytes(raw)
    (directory / "precious.txt").write_bytes(b"keep me")
    with bounded("manager record"):
        manager = only_ckpt_errors(lambda: ckpt.Manager(directory, rng=False, sync=False))
        assert isinstance(ckpt.verify(directory).ok, bool)
    assert (directory / "precious.txt").read_bytes() == b"keep me"  # nothing outside {name}-{step} is touched
    if not isinstance(manager, CheckpointError):
        assert all(info.prefix == str(directory / f"ckpt-{info.step}") for info in manager.checkpoints)


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_golden_files(data):
    """Mutations of the files TensorFlow itself wrote (tests/data)."""
    folder = data.draw(st.sampled_from(["tf1_saver", "tf1_adam", "tf1_sharded", "dtypes", "tf2_checkpoint"]))
    files = sorted(p for p in (DATA / folder).iterdir() if ".index" in p.name or ".data-" in p.name)
    target = WORK / "golden" / folder
    target.mkdir(parents=True, exist_ok=True)
    for p in files:
        (target / p.name).write_bytes(p.read_bytes())
    victim = data.draw(st.sampled_from(files))
    (target / victim.name).write_bytes(data.draw(mutated(victim.read_bytes())))
    prefixes = sorted({str(target / p.name.split(".index")[0]) for p in files if p.name.endswith(".index")})
    with bounded("TensorFlow-written files, damaged"):
        for prefix in prefixes:
            read_everything(prefix)


def test_a_forged_shape_of_2_to_the_60_elements_allocates_nothing(tmp_path):
    entry = tensor_bundle_pb2.BundleEntryProto(dtype=1, size=2 ** 62, crc32c=0)
    entry.shape.dim.add(size=2 ** 60)
    prefix = write_bundle(tmp_path / "huge", index_with({b"w": entry.SerializeToString()}), b"\0" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(ckpt.CorruptCheckpointError, match="truncated"):
            ckpt.Reader(prefix)["w"]
        report = ckpt.verify(prefix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.ok and "truncated" in report.problems[0].what
    assert peak < 1024 * 1024, peak


# ============================================================================================ other formats
# safetensors, .npz, .pt, .h5 and graph files: mutations of valid seeds, read in a child process with an
# address-space limit and a per-file timer (tests/fuzz_formats_child.py); many files per child, so it is fast.
# Every outcome must be a ckpt error or the value the format's own library reads.

FORMAT_EXAMPLES = max(EXAMPLES * 2, 20)  # per format: 200 by default, CKPT_FUZZ_EXAMPLES=5000 in `make fuzz`
CHILD = Path(__file__).parent / "fuzz_formats_child.py"
FUZZ_FORMATS = settings(FUZZ, max_examples=FORMAT_EXAMPLES)


def format_seeds(directory: Path) -> dict[str, list[bytes]]:
    """Valid files of every format, small enough that a mutation reaches every structure."""
    import h5py
    import torch
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, list[bytes]] = {}
    arrays = {"a/kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2], np.int64),
              "c": np.zeros((0, 2), np.float16), "d": np.array(True)}
    save_file(arrays, str(directory / "s.safetensors"), metadata={"format": "np"})
    seeds["safetensors"] = [(directory / "s.safetensors").read_bytes()]
    np.savez(directory / "n.npz", **{k.replace("/", "_"): v for k, v in arrays.items()})
    np.savez_compressed(directory / "nc.npz", w=np.arange(40, dtype=">i4").reshape(5, 8), f=np.asfortranarray(
        np.ones((2, 3))))
    seeds["numpy"] = [(directory / "n.npz").read_bytes(), (directory / "nc.npz").read_bytes()]
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "v": torch.arange(4)[1:],
             "nested": {"h": torch.ones(2, dtype=torch.float16)}, "step": 3}
    torch.save(state, directory / "t.pt")
    torch.save(state, directory / "tl.pt", _use_new_zipfile_serialization=False)
    seeds["torch"] = [(directory / "t.pt").read_bytes(), (directory / "tl.pt").read_bytes()]
    with h5py.File(directory / "k.weights.h5", "w") as f:
        group = f.create_group("layers/dense/vars")
        group.attrs["name"] = "hidden"
        group.create_dataset("0", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        group.create_dataset("1", data=np.ones(20, np.float64), chunks=(5,), compression="gzip")
        f.create_dataset("optimizer/vars/0", data=np.int64(7))
        f.attrs["keras_version"] = "3.0"
    seeds["keras"] = [(directory / "k.weights.h5").read_bytes()]
    seeds["graph"] = [(DATA / "graphs" / name).read_bytes() for name in ("frozen.pb", "frozen.pbtxt")]
    return seeds


SUFFIX = {"safetensors": ".safetensors", "numpy": ".npz", "torch": ".pt", "keras": ".weights.h5", "graph": ""}


def run_format_child(fmt: str, files: list[Path]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(CHILD), fmt, *map(str, files)], capture_output=True, text=True,
                          env=env, timeout=60 + 20 * len(files))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines and lines[-1] == f"done {len(files)}", \
        f"the {fmt} fuzz child died (status {proc.returncode}): {proc.stderr[-3000:]}"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("fmt", ["safetensors", "numpy", "torch", "keras", "graph"])
def test_fuzz_other_formats(fmt, tmp_path):
    """Mutated files of each format (hypothesis draws them; one child reads them all)."""
    seeds = format_seeds(tmp_path / "seeds")[fmt]
    cases: dict[bytes, int] = {seed: i for i, seed in enumerate(seeds)}  # input -> the seed it came from

    @FUZZ_FORMATS
    @given(data=st.data())
    def collect(data):
        which = data.draw(st.integers(0, len(seeds) - 1))
        cases.setdefault(data.draw(mutated(seeds[which], max_ops=4)), which)

    collect()
    files = []
    for i, (raw, which) in enumerate(cases.items()):
        name = f"case-{i}" + (SUFFIX[fmt] or (".pb", ".pbtxt")[which])
        folder = tmp_path / "cases" / str(i)
        folder.mkdir(parents=True)
        (folder / name).write_bytes(raw)
        files.append(folder / name)
        count(f"fuzz inputs: {fmt} files")
    findings = run_format_child(fmt, files)
    assert not findings, f"{len(findings)} of {len(files)} {fmt} inputs: " + "\n".join(
        f"{f['file']}: {f['finding']}" for f in findings[:5])


# ============================================================================================ names


@settings(max_examples=max(EXAMPLES // 3, 20), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(names=st.lists(st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.sampled_from(["..", "../..", "/etc/passwd", "a/../../b", "x" * 5000, "nul\x00inside", "tail\x00",
                     "./.", "\\..\\windows", "~", "$HOME", "con", "a//b", "/"])), min_size=1, max_size=6, unique=True))
def test_hostile_tensor_names_never_become_paths(names, tmp_path_factory):
    names = [n for n in names if not n.startswith("\x00") and n != "_CKPT_METADATA"]
    assume(names)
    root = tmp_path_factory.mktemp("names")
    work = root / "work"
    state = {f"t{i}": np.int32(i) for i in range(len(names))}
    flat = {name: np.int32(i) for i, name in enumerate(names)}
    work.mkdir()
    with bounded("hostile tensor names"):
        with BundleWriter(str(work / "ck"), sync=False) as writer:
            for name in sorted(flat, key=lambda n: n.encode("utf-8", "surrogateescape")):
                writer.add(name, flat[name])
            writer.finish()
        manager = ckpt.Manager(work, rng=False, sync=False)
        manager.save(1, state, metadata={"names": names})
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == sorted(
        ["work", "work/ck.index", "work/ck.data-00000-of-00001", "work/ckpt-1.index",
         "work/ckpt-1.data-00000-of-00001", "work/checkpoint", "work/ckpt.manager.json"])
    with ckpt.Reader(work / "ck") as reader:
        assert sorted(reader.keys()) == sorted(names)
        for i, name in enumerate(names):
            assert reader[name] == i
    assert ckpt.Reader(work / "ckpt-1").metadata == {"names": names}
    assert ckpt.verify(work).ok


# ============================================================================================ no pickle

SRC = Path(ckpt.__file__).resolve().parent
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_EXCEPTIONS = {"UnpicklingError", "PicklingError", "PickleError"}  # catching these is not unpickling


def _code_without_strings(source: str) -> str:
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.STRING, tokenize.COMMENT):
            out.append(tok.string)
    return " ".join(out)


def _torch_load_is_safe(call: ast.Call, scope: ast.AST) -> bool:
    """``torch.load(..., weights_only=True)``, directly or through ``**kwargs`` built as ``dict(weights_only=True)``
    in the same function."""
    for kw in call.keywords:
        if kw.arg == "weights_only":
            return isinstance(kw.value, ast.Constant) and kw.value.value is True
        if kw.arg is None and isinstance(kw.value, ast.Name):
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == kw.value.id
                                                        for t in node.targets) and isinstance(node.value, ast.Call) \
                        and isinstance(node.value.func, ast.Name) and node.value.func.id == "dict":
                    for inner in node.value.keywords:
                        if inner.arg == "weights_only":
                            return isinstance(inner.value, ast.Constant) and inner.value.value is True
    return False


PICKLE_OPT_IN = {"ckpt/cli/convert.py"}


def test_no_load_path_can_unpickle():
    """No module imports a pickle loader or calls one; ``torch.load`` only with ``weights_only=True``; NumPy
    loads only with ``allow_pickle=False``. (Catching ``pickle.UnpicklingError`` is allowed: it is how the
    PyTorch reader reports a file that ``torch.load(weights_only=True)`` refused.)"""
    problems = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        if "protos" in path.parts:
            continue
        source = path.read_text()
        where = path.relative_to(SRC.parent)
        tree = ast.parse(source)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PICKLE_MODULES - {"pickle"}:
                        problems.append(f"{where}:{node.lineno}: imports {alias.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
                bad = [a.name for a in node.names if a.name not in PICKLE_EXCEPTIONS]
                if bad:
                    problems.append(f"{where}:{node.lineno}: imports {bad} from {node.module}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in PICKLE_MODULES and node.attr not in PICKLE_EXCEPTIONS:
                problems.append(f"{where}:{node.lineno}: uses {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                if owner == "torch" and name == "load":
                    scope = next((f for f in functions if f.lineno <= node.lineno <= f.end_lineno), tree)
                    if not _torch_load_is_safe(node, scope):
                        problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
                for kw in node.keywords:
                    safe = isinstance(kw.value, ast.Constant) and kw.value.value is False
                    # The one explicit opt-in: converting a DCP directory, whose .metadata is a pickle, passes
                    # the user's --allow-pickle through (never a load path; refused by default).
                    safe = safe or (str(where) in PICKLE_OPT_IN and isinstance(kw.value, ast.Attribute))
                    if kw.arg == "allow_pickle" and not safe:
                        problems.append(f"{where}:{node.lineno}: allow_pickle is not False")
                if name in ("loads", "load", "Unpickler") and owner in PICKLE_MODULES:
                    problems.append(f"{where}:{node.lineno}: calls {owner}.{name}")
        code = _code_without_strings(source)
        for word in ("Unpickler", "find_class", "__reduce__", "cloudpickle", "dill."):
            if word in code:
                problems.append(f"{where}: mentions {word} in code")
    assert not problems, "\n".join(problems)


NO_UNPICKLING = textwrap.dedent("""
    import sys
    # What the dependencies import by themselves (NumPy imports pickle, for np.save's object arrays).
    import numpy, google.protobuf, crc32c, ml_dtypes
    baseline = set(sys.modules)
    import pickle, _pickle
    calls = []
    def refuse(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"{name} called")
        return refuse
    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            setattr(module, name, refuse(f"{module.__name__}.{name}"))
    sys.addaudithook(lambda event, args: event == "pickle.find_class" and calls.append(event))

    import numpy as np
    import ckpt
    directory = sys.argv[1]
    manager = ckpt.Manager(directory, max_to_keep=2)
    for step in (1, 2):
        manager.save(step, {"w": np.arange(4.0) * step, "s": "text", "n": [1, 2.5]}, metadata={"a": [1]})
    for source in (directory, sys.argv[2]):
        with ckpt.Reader(source) as reader:
            values = {name: reader[name] for name in reader.keys()}
            reader.metadata
    ckpt.load(directory)
    ckpt.restore(directory, {"w": np.zeros(4), "s": "", "n": [0, 0.0]})
    ckpt.latest(directory, verify=True)
    assert ckpt.verify(directory).ok
    manager.restore_or_initialize({"w": np.zeros(4), "s": "", "n": [0, 0.0]})
    new = set(sys.modules) - baseline
    print(sorted(m for m in new if m.split(".")[0] in {"pickle", "_pickle", "dill", "cloudpickle", "joblib",
                                                       "shelve", "copyreg"}), calls)
""")


def test_saving_and_reading_never_unpickles(tmp_path):
    """In a fresh interpreter, pickle's loaders are replaced by functions that fail, and an audit hook watches
    for ``pickle.find_class``: a whole save/read/restore/verify cycle never reaches them, and ckpt imports no
    pickle module its dependencies did not already import."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", NO_UNPICKLING, str(tmp_path), str(DATA / "tf1_adam")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []", proc.stdout
