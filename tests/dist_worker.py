"""One rank of a multi-process test of ckpt.distributed (run by tests/test_distributed.py as a subprocess).

Usage: python dist_worker.py SCENARIO RANK WORLD PORT DIR
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import signal
import sys

import numpy as np


def reference() -> dict[str, np.ndarray]:
    """The unsharded values every scenario saves (deterministic, distinct in every element)."""
    return {
        "rows": np.arange(8 * 6, dtype=np.float32).reshape(8, 6) * 0.5,
        "cols": (np.arange(6 * 8, dtype=np.float32).reshape(6, 8) - 7.25),
        "grid": np.arange(4 * 6, dtype=np.int32).reshape(4, 6) * 3 - 11,
        "uneven": np.arange(7 * 5, dtype=np.float64).reshape(7, 5) / 3,
        "repl": np.arange(9, dtype=np.int64).reshape(3, 3) - 4,
    }


def _init(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=90))  # generous: CI machines are busy


def _dtensors(world: int, layout: str) -> dict:
    """The reference as DTensors sharded over ``world`` ranks; ``layout`` "save" or "other" (a different one)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    ref = {k: torch.from_numpy(v.copy()) for k, v in reference().items()}
    mesh = init_device_mesh("cpu", (world,))
    if layout == "save":
        mesh2 = init_device_mesh("cpu", (2, world // 2))
        return {
            "rows": distribute_tensor(ref["rows"], mesh, [Shard(0)]),
            "cols": distribute_tensor(ref["cols"], mesh, [Shard(1)]),
            "grid": distribute_tensor(ref["grid"], mesh2, [Shard(0), Shard(1)]),
            "uneven": distribute_tensor(ref["uneven"], mesh, [Shard(0)]),
            "repl": distribute_tensor(ref["repl"], mesh, [Replicate()]),
        }
    # Another sharding: every tensor split along the other dimension (or replicated), zero-filled.
    zeros = {k: torch.zeros_like(v) for k, v in ref.items()}
    return {
        "rows": distribute_tensor(zeros["rows"], mesh, [Shard(1)]),
        "cols": distribute_tensor(zeros["cols"], mesh, [Shard(0)]),
        "grid": distribute_tensor(zeros["grid"], mesh, [Replicate()]),
        "uneven": distribute_tensor(zeros["uneven"], mesh, [Shard(1)]),
        "repl": distribute_tensor(zeros["repl"], mesh, [Shard(0)]),
    }


def _count_preadv() -> list[int]:
    """Count the bytes every os.preadv of this process returns (what the reader actually reads from files)."""
    counted = [0]
    real = os.preadv

    def preadv(fd, buffers, offset, *args):
        n = real(fd, buffers, offset, *args)
        counted[0] += n
        return n

    os.preadv = preadv
    return counted


def save(rank: int, world: int, d: str) -> None:
    import torch.distributed.checkpoint as dcp

    from ckpt.distributed import BundleStorageWriter

    state = _dtensors(world, "save")
    state["step"] = 7
    state["opt"] = {"lr": 0.25, "betas": [0.9, 0.999]}
    dcp.save(state, storage_writer=BundleStorageWriter(os.path.join(d, "m.ckpt-1")))
    fut = dcp.async_save(state, storage_writer=BundleStorageWriter(os.path.join(d, "m.ckpt-2")))
    fut.result()


def load(rank: int, world: int, d: str) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    from ckpt.distributed import BundleStorageReader

    counted = _count_preadv()
    state = _dtensors(world, "other")
    state["step"] = 0
    state["opt"] = {"lr": 0.0, "betas": [0.0, 0.0]}
    reader = BundleStorageReader(os.path.join(d, "m.ckpt-2"))
    dcp.load(state, storage_reader=reader)
    ideal = 0
    ref = reference()
    for name, want in ref.items():
        local = state[name].to_local()
        ideal += local.numel() * local.element_size()
        full = state[name].full_tensor().numpy()
        assert full.dtype == want.dtype and np.array_equal(full.view(np.uint8), want.view(np.uint8)), name
    assert state["step"] == 7 and state["opt"] == {"lr": 0.25, "betas": [0.9, 0.999]}, state
    out = {"rank": rank, "bytes_read": reader.bytes_read, "preadv": counted[0], "ideal": ideal}
    with open(os.path.join(d, f"load-{world}-{rank}.json"), "w") as f:
        json.dump(out, f)
    torch.distributed.barrier()


def _save_step(d: str, step: int, world: int) -> None:
    import torch.distributed.checkpoint as dcp

    from ckpt.distributed import BundleStorageWriter

    dcp.save(_dtensors(world, "save"), storage_writer=BundleStorageWriter(os.path.join(d, f"m.ckpt-{step}")))


def kill(rank: int, world: int, d: str) -> None:
    """Step 1 saves; during step 2 rank 1 is SIGKILLed after its first data write."""
    _save_step(d, 1, world)
    if rank == 1:
        import ckpt._fs as fs

        real = fs.write_all

        def write_all(fd, data):
            n = real(fd, data)
            os.kill(os.getpid(), signal.SIGKILL)
            return n

        fs.write_all = write_all
    try:
        _save_step(d, 2, world)
    except BaseException as exc:  # the surviving rank sees the failure (a collective error), it does not hang
        with open(os.path.join(d, f"error-{rank}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")


def enospc(rank: int, world: int, d: str) -> None:
    """Step 1 saves; during step 2 rank 1's writes fail with ENOSPC; every rank must raise."""
    _save_step(d, 1, world)
    if rank == 1:
        import ckpt._fs as fs

        real = fs.write_all

        def write_all(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        fs.write_all = write_all
    try:
        _save_step(d, 2, world)
    except BaseException as exc:  # DCP's CheckpointException is a BaseException
        with open(os.path.join(d, f"error-{rank}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
    else:
        raise AssertionError("the save succeeded although rank 1 could not write")
    if rank == 1:
        fs.write_all = real
    # Temporary files of the failed save are left for ckpt's sweep (the next ckpt.save / Manager in the directory).
    _save_step(d, 3, world)


def _fsdp_model():
    import torch
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def _train_step(model, opt, i: int) -> None:
    import torch

    g = torch.Generator().manual_seed(100 + i)
    x, y = torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def fsdp(rank: int, world: int, d: str) -> None:
    """FSDP2 + Adam: save through ckpt.save, restore into a fresh model, continue bit-identically."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    import ckpt

    model, opt = _fsdp_model()
    for i in range(2):
        _train_step(model, opt, i)
    msd, osd = get_state_dict(model, opt)
    prefix = ckpt.save({"model": msd, "optim": osd}, os.path.join(d, "fsdp.ckpt"), step=2)
    _train_step(model, opt, 2)  # the uninterrupted run
    want = {k: v.full_tensor() for k, v in model.state_dict().items()}

    model2, opt2 = _fsdp_model()  # fresh: other initial values would show as a mismatch
    msd2, osd2 = get_state_dict(model2, opt2)
    ckpt.restore(prefix, {"model": msd2, "optim": osd2})
    set_state_dict(model2, opt2, model_state_dict=msd2, optim_state_dict=osd2)
    _train_step(model2, opt2, 2)
    for k, v in model2.state_dict().items():
        assert torch.equal(v.full_tensor(), want[k]), k
    if rank == 0:
        with open(os.path.join(d, "fsdp-ok"), "w") as f:
            f.write(prefix)


def disagree(rank: int, world: int, d: str) -> None:
    """Ranks pass different steps: every rank raises an error naming both prefixes; nothing is written."""
    try:
        _save_step(d, 10 + rank, world)
    except BaseException as exc:
        with open(os.path.join(d, f"error-{rank}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
    else:
        raise AssertionError("ranks with different steps saved")


def main() -> None:
    scenario, rank, world, port, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    _init(rank, world, port)
    import torch.distributed as dist

    globals()[scenario](rank, world, d)
    # Leave together, and skip the C++ destructors at interpreter exit: a rank whose peer has already torn down its
    # gloo pair can otherwise abort ("terminate called without an active exception") after a successful run.
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
