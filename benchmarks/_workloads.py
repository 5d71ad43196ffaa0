"""Benchmark sizes, the deterministic states of the four workloads, and the checksum that proves every byte was read.

Every process that builds a workload gets bit-identical arrays (fixed seeds), so each library saves, restores and
loads exactly the same bytes and the checksum of what it loaded can be compared with the original's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MiB = 1 << 20

# GPT-2 shape parameters, tensor counts and the single big tensor, per SIZE.  ``full`` is GPT-2 small itself
# (124 M parameters + two Adam moments = 1.49 GB of float32) and a 3 GiB tensor (> 2 GiB: one write() call is
# capped at 2 GiB - 4 KiB on Linux, so a writer that does not loop silently truncates it).
SIZES: dict[str, dict] = {
    "tiny": dict(gpt2=dict(vocab=2048, positions=128, hidden=64, layers=2), many=1_000, big_mib=16,
                 lookup=2_000, rounds=1),
    "small": dict(gpt2=dict(vocab=16384, positions=512, hidden=320, layers=4), many=10_000, big_mib=128,
                  lookup=10_000, rounds=3),
    "medium": dict(gpt2=dict(vocab=32768, positions=1024, hidden=768, layers=6), many=10_000, big_mib=1024,
                   lookup=100_000, rounds=3),
    "full": dict(gpt2=dict(vocab=50257, positions=1024, hidden=768, layers=12), many=10_000, big_mib=3072,
                 lookup=100_000, rounds=5),
}

WORKLOADS = ("gpt2", "many", "big", "lookup")
TITLES = {
    "gpt2": "GPT-2-shaped state with Adam slots",
    "many": "many small tensors",
    "big": "one big tensor",
    "lookup": "open + read one tensor",
}
BULK = ("gpt2", "many", "big")  # workloads whose whole state is saved, restored and loaded


@dataclass
class Workload:
    name: str
    state: dict[str, np.ndarray]  # flat: name -> C-contiguous array (names sorted)
    nbytes: int  # payload bytes
    description: str
    target: str | None = None  # for "lookup": the tensor to read


def _filler(seed: int) -> np.ndarray:
    """4 MiB of float32 noise, tiled into the tensors (generating every byte with an RNG would dominate setup)."""
    return np.random.default_rng(seed).standard_normal(MiB, dtype=np.float32)


def _fill(array: np.ndarray, base: np.ndarray, shift: int) -> None:
    flat = array.reshape(-1)
    if flat.dtype != np.float32:
        flat[...] = np.arange(flat.size, dtype=flat.dtype)
        return
    n = flat.size
    shift %= base.size
    pos = 0
    while pos < n:
        piece = base[shift:] if pos == 0 else base
        k = min(piece.size, n - pos)
        flat[pos:pos + k] = piece[:k]
        pos += k


def gpt2_shapes(vocab: int, positions: int, hidden: int, layers: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of GPT-2 (Hugging Face layout; Conv1D weights are [in, out])."""
    h = hidden
    shapes: dict[str, tuple[int, ...]] = {"wte": (vocab, h), "wpe": (positions, h)}
    for i in range(layers):
        b = f"h/{i}"
        shapes.update({
            f"{b}/ln_1/weight": (h,), f"{b}/ln_1/bias": (h,),
            f"{b}/attn/c_attn/weight": (h, 3 * h), f"{b}/attn/c_attn/bias": (3 * h,),
            f"{b}/attn/c_proj/weight": (h, h), f"{b}/attn/c_proj/bias": (h,),
            f"{b}/ln_2/weight": (h,), f"{b}/ln_2/bias": (h,),
            f"{b}/mlp/c_fc/weight": (h, 4 * h), f"{b}/mlp/c_fc/bias": (4 * h,),
            f"{b}/mlp/c_proj/weight": (4 * h, h), f"{b}/mlp/c_proj/bias": (h,),
        })
    shapes.update({"ln_f/weight": (h,), "ln_f/bias": (h,)})
    return shapes


def _finish(name: str, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype] | None, seed: int,
            description: str, target: str | None = None) -> Workload:
    base = _filler(seed)
    state: dict[str, np.ndarray] = {}
    for i, key in enumerate(sorted(shapes)):
        dtype = np.dtype(dtypes.get(key, np.float32)) if dtypes else np.dtype(np.float32)
        array = np.empty(shapes[key], dtype)
        _fill(array, base, i * 7919)
        state[key] = array
    return Workload(name, state, sum(a.nbytes for a in state.values()), description, target)


def build(name: str, size: str) -> Workload:
    cfg = SIZES[size]
    if name == "gpt2":
        g = cfg["gpt2"]
        params = gpt2_shapes(**g)
        shapes: dict[str, tuple[int, ...]] = {}
        for key, shape in params.items():
            shapes[f"params/{key}"] = shape
            shapes[f"adam_m/{key}"] = shape
            shapes[f"adam_v/{key}"] = shape
        shapes["step"] = ()
        n_params = sum(int(np.prod(s)) for s in params.values())
        desc = (f"vocab {g['vocab']}, positions {g['positions']}, hidden {g['hidden']}, {g['layers']} layers: "
                f"{n_params / 1e6:.1f} M params + 2 Adam moments, {len(shapes)} tensors")
        return _finish(name, shapes, {"step": np.int64}, 1, desc)
    if name == "many":
        n = cfg["many"]
        # 128 B .. 2 KiB each, mixed 1-D and 2-D; names grouped like layers.
        shapes = {f"layer_{i // 10:05d}/t{i % 10}": (((i % 16) + 1) * 32,) if i % 2 else (((i % 16) + 1) * 4, 8)
                  for i in range(n)}
        wl = _finish(name, shapes, None, 2, "")
        wl.description = f"{n:,} float32 tensors of 128 B - 2 KiB (avg {wl.nbytes / n / 1024:.1f} KiB)"
        return wl
    if name == "big":
        mib = cfg["big_mib"]
        shapes = {"big": (mib * MiB // 4096, 1024)}
        return _finish(name, shapes, None, 3, f"one float32 tensor of {mib / 1024:g} GiB")
    if name == "lookup":
        n = cfg["lookup"]
        shapes = {f"block_{i:06d}/w": (64,) for i in range(n)}
        target = f"block_{(2 * n) // 3:06d}/w"
        return _finish(name, shapes, None, 4, f"{n:,} tensors of 256 B; read `{target}`", target)
    raise ValueError(f"unknown workload {name!r}")


def _as_bytes(array) -> np.ndarray:
    a = np.asarray(array)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


def checksum_one(array) -> int:
    """Wrapping 64-bit sum of the bytes' 8-byte words (+ the tail): touches every byte, ~memory bandwidth."""
    b = _as_bytes(array)
    n8 = (b.size // 8) * 8
    total = int(np.add.reduce(b[:n8].view(np.uint64), dtype=np.uint64)) if n8 else 0
    if n8 < b.size:
        total += int(b[n8:].sum())
    return total & 0xFFFFFFFFFFFFFFFF


def checksum(arrays) -> int:
    """Order-independent checksum of an iterable of arrays (sum of the per-array checksums, mod 2**64)."""
    total = 0
    for a in arrays:
        total += checksum_one(a)
    return total & 0xFFFFFFFFFFFFFFFF


def gpt2_bytes(size: str) -> int:
    g = SIZES[size]["gpt2"]
    return 3 * 4 * sum(int(np.prod(s)) for s in gpt2_shapes(**g).values()) + 8


def planned_bytes(size: str) -> dict[str, int]:
    cfg = SIZES[size]
    return {"gpt2": gpt2_bytes(size), "many": cfg["many"] * 1152, "big": cfg["big_mib"] * MiB,
            "lookup": cfg["lookup"] * 256}
