"""Verified restore against raw reads, and the restore race of issue 12 (a checksum pipeline under CPU contention).

    python benchmarks/restore_crc.py                 # timings: raw readinto, restore without / with checksums
    python benchmarks/restore_crc.py --stress 30     # 30 save + restore(into=...) rounds beside a CPU burner

The state is GPT-2-shaped: 12 layers of float32 tensors from 768x768 to 768x3072 plus a 25000x768 embedding (about
330 MB), the shapes of the issue's reproduction. Timings are the best of ``--rounds`` runs with the files in the
page cache. ``raw`` reads the same data file with one ``readinto`` per tensor into the same preallocated arrays
(no checksum); ``ckpt (no CRC)`` is ``restore(..., verify_checksums=False)``; ``ckpt`` verifies every CRC32C.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np

import ckpt
from ckpt.errors import ChecksumMismatchError


def gpt2_state(layers: int = 12, hidden: int = 768, vocab: int = 25000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"wte": (vocab, hidden), "wpe": (1024, hidden)}
    for i in range(layers):
        shapes.update({f"h{i}/attn/c_attn": (hidden, 3 * hidden), f"h{i}/attn/c_proj": (hidden, hidden),
                       f"h{i}/mlp/c_fc": (hidden, 4 * hidden), f"h{i}/mlp/c_proj": (4 * hidden, hidden),
                       f"h{i}/ln_1": (hidden,), f"h{i}/ln_2": (hidden,)})
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def _burn() -> None:
    while True:
        pass


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def timings(directory: str, rounds: int) -> None:
    state = gpt2_state()
    prefix = ckpt.save(state, os.path.join(directory, "gpt2"), sync=False)
    into = {k: np.ones_like(v) for k, v in state.items()}  # touched pages, as a model's parameters
    reader = ckpt.Reader(prefix)
    order = sorted(state, key=lambda n: reader._bundle.entry(n).offset)
    entries = {n: reader._bundle.entry(n) for n in order}
    data = reader._bundle.data_files()[0]
    reader.close()

    def raw() -> None:
        with open(data, "rb", buffering=0) as f:
            for n in order:
                f.seek(entries[n].offset)
                f.readinto(memoryview(into[n]).cast("B"))

    raw()
    t_raw = best(raw, rounds)
    t_plain = best(lambda: ckpt.restore(prefix, into, verify_checksums=False), rounds)
    t_crc = best(lambda: ckpt.restore(prefix, into), rounds)
    for k, v in state.items():
        assert np.array_equal(into[k], v), k
    mb = sum(v.nbytes for v in state.values()) / 1e6
    print(f"{len(state)} tensors, {mb:.0f} MB, best of {rounds}")
    for label, t in (("raw readinto", t_raw), ("ckpt (no CRC)", t_plain), ("ckpt (verified)", t_crc)):
        print(f"  {label:16s} {t * 1e3:8.1f} ms  {mb / t / 1e3:5.2f} GB/s  {t / t_raw:4.2f}x raw")


def stress(directory: str, rounds: int) -> int:
    state = gpt2_state(layers=6)
    into = {k: np.zeros_like(v) for k, v in state.items()}
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in burners:
        p.start()
    failures = 0
    try:
        for i in range(rounds):
            prefix = ckpt.save(state, os.path.join(directory, "stress"), step=i % 2, sync=False)
            try:
                ckpt.restore(prefix, into)
            except ChecksumMismatchError as exc:
                failures += 1
                print(f"round {i}: {exc}")
    finally:
        for p in burners:
            p.terminate()
    print(f"{failures} false checksum errors in {rounds} rounds")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stress", type=int, metavar="ROUNDS", default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if args.stress:
            return 1 if stress(directory, args.stress) else 0
        timings(directory, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
