"""Coverage-guided fuzzing of everything ckpt reads from disk, with atheris (libFuzzer). On demand: ``make fuzz``.

The first byte of each input picks what the rest becomes:

    0  the ``.index`` file (next to a valid data file)        3  the ``checkpoint`` state file
    1  the ``.data`` file (next to a valid index)             4  a manager record (``ckpt.manager.json``)
    2  one ``BundleEntryProto`` inside a valid table

Each input is written to a scratch directory and read completely (open, list, read every tensor, verify, find the
latest checkpoint, construct a Manager). A :class:`ckpt.CheckpointError` is a correct answer to a hostile file;
any other exception, a crash, a hang (``-timeout``) or a memory blow-up (``-rss_limit_mb``) is a finding, saved by
libFuzzer as ``crash-*`` / ``timeout-*`` / ``oom-*``.

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
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["ckpt"]):
    import numpy as np

    import ckpt
    from ckpt.errors import CheckpointError
    from ckpt.format.bundle import BundleReader, BundleWriter
    from ckpt.format.protos import tensor_bundle_pb2
    from ckpt.format.table import TableWriter

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


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 5, data[1:]
    directory = WORK / "case"
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
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
    for name, seed in seeds.items():
        (directory / f"seed-{name}").write_bytes(seed)
    print(f"wrote {len(seeds)} seed inputs to {directory}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-corpus"]:
        make_corpus(Path(sys.argv[2]))
        sys.exit(0)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
