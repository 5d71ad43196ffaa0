"""Coverage-guided fuzzing of everything ckpt reads from disk, with atheris (libFuzzer). On demand: ``make fuzz``.

The first byte of each input picks what the rest becomes:

    0  the ``.index`` file (next to a valid data file)        3  the ``checkpoint`` state file
    1  the ``.data`` file (next to a valid index)             4  a manager record (``ckpt.manager.json``)
    2  one ``BundleEntryProto`` inside a valid table
    5  a safetensors file       6  a NumPy ``.npz``       7  a PyTorch ``.pt``       8  a Keras ``.weights.h5``
    9  a graph file (``.pb``, or ``.pbtxt`` when the input is text)

Each input is written to a scratch directory and read completely (open, list, read every tensor, verify, find the
latest checkpoint, construct a Manager). A :class:`ckpt.CheckpointError` is a correct answer to a hostile file;
any other exception, a crash, a hang (``-timeout``) or a memory blow-up (``-rss_limit_mb``) is a finding, saved by
libFuzzer as ``crash-*`` / ``timeout-*`` / ``oom-*``.

The format files (5-9) are read in-process as tests/fuzz_formats_child.py reads them (every tensor, JSON output of
values and metadata, comparison with the format's own library); the memory bound is libFuzzer's ``-rss_limit_mb``.

Usage:
    python fuzz/fuzz_reader.py --make-corpus build/fuzz-corpus      # seed inputs from valid files
    python fuzz/fuzz_reader.py build/fuzz-corpus -max_total_time=300 -timeout=10 -rss_limit_mb=1024
    python fuzz/fuzz_reader.py crash-1234abcd                          # replay one finding
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["ckpt"]):
    import numpy as np

    import ckpt
    from ckpt.errors import CheckpointError
    from ckpt.tf.bundle import BundleReader, BundleWriter
    from ckpt.tf.protos import tensor_bundle_pb2
    from ckpt.tf.table import TableWriter

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import fuzz_formats_child

WORK = Path(tempfile.mkdtemp(prefix="ckpt-atheris-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
warnings.simplefilter("ignore")  # CorruptCheckpointWarning is expected here, on almost every input
logging.getLogger("ckpt").setLevel(logging.ERROR)  # so is the manager forgetting checkpoints whose files are gone


def _seed() -> tuple[bytes, bytes, bytes]:
    prefix = str(WORK / "seed")
    with BundleWriter(prefix, sync=False) as writer:
        writer.add("a/kernel", np.arange(12, dtype=np.float32).reshape(3, 4))
        writer.add("b/strings", np.array([b"", b"hello", b"x" * 100], dtype=object))
        writer.add("c/scalar", np.int64(-3))
        writer.add_slice("d/part", (4, 2), ((0, 2), (0, -1)), np.ones((2, 2), np.float32))
        writer.add_slice("d/part", (4, 2), ((2, 2), (0, -1)), np.zeros((2, 2), np.float32))
        writer.finish()
    with BundleReader(prefix) as reader:
        entry = reader._table.get(b"a/kernel")
    return Path(f"{prefix}.index").read_bytes(), Path(f"{prefix}.data-00000-of-00001").read_bytes(), bytes(entry)


SEED_INDEX, SEED_DATA, SEED_ENTRY = _seed()
SEED_STATE = b'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
SEED_RECORD = (b'{"format": 1, "name": "ckpt", "last_preserved": 0.0, "checkpoints": [{"step": 1, "prefix": '
               b'"ckpt-1", "time": 1.0, "metrics": {"loss": 0.5}, "preserved": false}]}')


def _table_with_entry(value: bytes) -> bytes:
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=1)
    header.version.producer = 1
    table = TableWriter()
    table.add(b"", header.SerializeToString())
    table.add(b"w", value)
    return table.finish()


def _read_everything(path: Path) -> None:
    try:
        with ckpt.Reader(path) as reader:
            for name in reader.keys():
                try:
                    reader[name]
                except CheckpointError:
                    pass
            reader.metadata
    except CheckpointError:
        pass
    ckpt.verify(path)


FORMATS = {5: ("safetensors", "model.safetensors"), 6: ("numpy", "model.npz"), 7: ("torch", "model.pt"),
           8: ("keras", "model.weights.h5"), 9: ("graph", "model.pb")}


class Finding(Exception):
    pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 10, data[1:]
    directory = WORK / "case"
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    if target in FORMATS:
        fmt, name = FORMATS[target]
        if fmt == "graph" and body.lstrip()[:1].isalpha():
            name = "model.pbtxt"
        path = directory / name
        path.write_bytes(body)
        finding = fuzz_formats_child.check(str(path), fmt)
        if finding:
            raise Finding(finding)
        return
    prefix = directory / "ckpt-1"
    index, payload = SEED_INDEX, SEED_DATA
    if target == 0:
        index = body
    elif target == 1:
        payload = body
    elif target == 2:
        index = _table_with_entry(body)
    Path(f"{prefix}.index").write_bytes(index)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(payload)
    if target == 3:
        (directory / "checkpoint").write_bytes(body)
    if target == 4:
        (directory / "ckpt.manager.json").write_bytes(body)
    _read_everything(prefix)
    _read_everything(directory)
    ckpt.latest(directory)
    ckpt.latest(directory, verify=True)
    try:
        ckpt.Manager(directory, rng=False, sync=False)
    except CheckpointError:
        pass


def make_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = {"index": b"\0" + SEED_INDEX, "data": b"\1" + SEED_DATA, "entry": b"\2" + SEED_ENTRY,
             "state": b"\3" + SEED_STATE, "record": b"\4" + SEED_RECORD}
    import test_fuzz  # the seeds of the hypothesis format fuzzers

    formats = test_fuzz.format_seeds(WORK / "format-seeds")
    for number, (fmt, _) in FORMATS.items():
        for i, seed in enumerate(formats[fmt]):
            seeds[f"{fmt}-{i}"] = bytes([number]) + seed
    for name, seed in seeds.items():
        (directory / f"seed-{name}").write_bytes(seed)
    print(f"wrote {len(seeds)} seed inputs to {directory}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-corpus"]:
        make_corpus(Path(sys.argv[2]))
        sys.exit(0)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    signal.signal(signal.SIGALRM, fuzz_formats_child._alarm)  # the per-file timer of the format reads
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
