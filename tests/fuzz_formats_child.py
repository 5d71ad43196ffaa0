"""Child process of the format fuzzers (tests/test_fuzz.py, fuzz/fuzz_reader.py): read hostile files completely
under an address-space limit and a per-file timer, and report every outcome that is not a ckpt error or the value
the reference library reads.

    python tests/fuzz_formats_child.py FORMAT FILE...      (prints one JSON line per finding, then "done N")

The limit (``RLIMIT_AS``) is what the interpreter maps after importing everything, plus ``CKPT_FUZZ_AS_MIB``
(default 1024) MiB, so a forged size that ckpt allocated would fail with MemoryError (a finding) instead of
swapping the machine. Each file gets ``CKPT_FUZZ_FILE_SECONDS`` (default 20) seconds of SIGALRM timer.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import traceback
import warnings

import h5py
import numpy as np
import torch

import ckpt
import ckpt.graph
from ckpt.cli._output import array_to_json, print_json
from ckpt.errors import CheckpointError

warnings.simplefilter("ignore")


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang("timeout")


def limit_address_space(extra_mib: int) -> None:
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_mib * 2 ** 20, resource.RLIM_INFINITY))


def _reference(path: str, fmt: str) -> dict[str, np.ndarray] | None:
    """What the format's own library reads, or None when it refuses the file (ckpt may be stricter)."""
    try:
        if fmt == "safetensors":
            from safetensors.numpy import load_file

            return load_file(path)
        if fmt == "numpy":
            with np.load(path, allow_pickle=False) as z:
                return {name: z[name] for name in z.files}
        if fmt == "keras":
            out = {}
            with h5py.File(path, "r") as f:
                f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
            return out
        if fmt == "torch":

            obj = torch.load(path, weights_only=True, map_location="cpu")
            flat: dict = {}
            from ckpt.formats.torch import _flatten

            _flatten(obj, "", flat, [])
            return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in flat.items()}
    except Exception:
        return None
    return None


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "OSU" or b.dtype.kind in "OSU":
        norm = lambda x: [v if isinstance(v, bytes) else str(v).encode() for v in x.reshape(-1).tolist()]  # noqa
        return norm(a) == norm(b)
    return a.tobytes() == np.ascontiguousarray(b).astype(a.dtype).tobytes() or a.dtype != b.dtype and \
        np.array_equal(a, b, equal_nan=True)


def read_all(path: str, fmt: str) -> dict[str, np.ndarray] | None:
    """Everything a user can do with the file; returns the values read (None for graphs)."""
    if fmt == "graph":
        graph = ckpt.graph.load(path)
        for op in graph.get_operations():
            op.name, op.type
            [(i.op, i.index, i.control) for i in op.inputs]
        graph.inputs, graph.outputs
        return None
    values = {}
    with ckpt.Reader(path) as reader:
        infos = [reader.info(name) for name in reader.keys()]
        reader.shapes(), reader.dtypes()
        print_json({"metadata": reader.metadata, "tensors": [[i.name, i.dtype, list(i.shape)] for i in infos]},
                   io.StringIO())
        for name in reader.keys():
            try:
                value = reader[name]
            except CheckpointError:
                continue
            print_json(array_to_json(np.asarray(value)), io.StringIO())
            values[name] = value
        detected = reader.format
    return values if detected == fmt else None


def check(path: str, fmt: str) -> str | None:
    """None when the outcome is acceptable, else a description of the finding."""
    signal.setitimer(signal.ITIMER_REAL, float(os.environ.get("CKPT_FUZZ_FILE_SECONDS", "20")))
    try:
        values = read_all(path, fmt)
        if values:
            expected = _reference(path, fmt)
            if expected is not None:
                for name, value in values.items():
                    if name in expected and not _same(value, expected[name]):
                        return f"tensor {name!r} reads differently from the reference library"
    except CheckpointError as exc:
        if not str(exc):
            return "a ckpt error without a message"
    except Hang:
        return "timeout"
    except BaseException as exc:  # noqa: BLE001 - every other outcome is the finding
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:] + "\n" + \
            "".join(traceback.format_tb(exc.__traceback__)[-4:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None


def main(argv: list[str]) -> int:
    fmt, files = argv[0], argv[1:]
    signal.signal(signal.SIGALRM, _alarm)
    limit_address_space(int(os.environ.get("CKPT_FUZZ_AS_MIB", "1024")))
    for path in files:
        finding = check(path, fmt)
        if finding:
            print(json.dumps({"file": path, "finding": finding}), flush=True)
    print(f"done {len(files)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
