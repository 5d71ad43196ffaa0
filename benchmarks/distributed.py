"""N gloo ranks on this machine: ckpt bundles (ckpt.distributed) vs DCP's FileSystemWriter/Reader.

Same run, same state: every rank holds row-sharded DTensors (Shard(0)); each backend saves them, then loads them
back resharded column-wise (Shard(1)). Reported per backend: save and resharded-restore time (the slowest rank,
best of --rounds), and bytes read per rank on the resharded load against the ideal (the bytes of its own new
shards): counted from the reads the process made (``rchar`` of /proc/self/io, every read system call).

    python benchmarks/distributed.py --ranks 2 --mb 64 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def _rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def rank_main(rank: int, world: int, port: int, d: str, mb: int, rounds: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from ckpt.distributed import BundleStorageReader, BundleStorageWriter

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    mesh = init_device_mesh("cpu", (world,))
    n_tensors = 8
    rows = 256 * world
    cols = max(1, mb * 2 ** 20 // 4 // n_tensors // rows)
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(rows, cols, generator=g) for _ in range(n_tensors)]
    state = {f"layer{i}.weight": distribute_tensor(t, mesh, [Shard(0)]) for i, t in enumerate(full)}
    results: dict[str, dict[str, float]] = {}
    for backend in ("ckpt", "dcp"):
        save_t, load_t, read = [], [], []
        for r in range(rounds):
            path = os.path.join(d, f"{backend}-{r}")
            if backend == "ckpt":
                writer = BundleStorageWriter(os.path.join(d, f"ckpt-{r}", "model.ckpt"))
            else:
                writer = dcp.FileSystemWriter(path)
            dist.barrier()
            t0 = time.perf_counter()
            dcp.save(state, storage_writer=writer)
            dist.barrier()
            save_t.append(time.perf_counter() - t0)
            target = {k: distribute_tensor(torch.zeros(rows, cols), mesh, [Shard(1)]) for k in state}
            reader = (BundleStorageReader(os.path.join(d, f"ckpt-{r}", "model.ckpt")) if backend == "ckpt"
                      else dcp.FileSystemReader(path))
            # Drop the page cache's advantage equally for both: not possible without root; both read warm files.
            dist.barrier()
            before = _rchar()
            t0 = time.perf_counter()
            dcp.load(target, storage_reader=reader)
            dist.barrier()
            load_t.append(time.perf_counter() - t0)
            read.append(_rchar() - before)
            for k, t in target.items():
                assert torch.equal(t.full_tensor(), state[k].full_tensor()), k
        ideal = sum(t.to_local().numel() * 4 for t in target.values())
        results[backend] = {"save": min(save_t), "load": min(load_t), "read": min(read), "ideal": ideal}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        with open(os.path.join(d, "results.json"), "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--mb", type=int, default=64, help="total state size in MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "distributed.md"))
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        return rank_main(args.rank, args.ranks, args.port, args.dir, args.mb, args.rounds)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tempfile.mkdtemp(prefix="ckpt-dist-bench-")
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, __file__, "--ranks", str(args.ranks), "--mb", str(args.mb),
                                   "--rounds", str(args.rounds), "--rank", str(r), "--port", str(port), "--dir", d],
                                  env=env) for r in range(args.ranks)]
        codes = [p.wait(timeout=1800) for p in procs]
        if any(codes):
            sys.exit(f"a rank failed: exit codes {codes}")
        with open(os.path.join(d, "results.json")) as f:
            per_rank = json.load(f)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    lines = [f"# ckpt.distributed vs DCP FileSystemWriter: {args.ranks} ranks, {args.mb} MiB, best of {args.rounds}",
             "", "| backend | save s | resharded load s | save ratio (ckpt/dcp) | load ratio (ckpt/dcp) |",
             "|---|---|---|---|---|"]
    slow = {b: {k: max(r[b][k] for r in per_rank) for k in ("save", "load")} for b in ("ckpt", "dcp")}
    for b in ("ckpt", "dcp"):
        ratio = (f"{slow['ckpt']['save'] / slow['dcp']['save']:.2f}", f"{slow['ckpt']['load'] / slow['dcp']['load']:.2f}") \
            if b == "ckpt" else ("", "")
        lines.append(f"| {b} | {slow[b]['save']:.3f} | {slow[b]['load']:.3f} | {ratio[0]} | {ratio[1]} |")
    lines += ["", "| rank | backend | bytes read | ideal | read / ideal |", "|---|---|---|---|---|"]
    for rank, r in enumerate(per_rank):
        for b in ("ckpt", "dcp"):
            lines.append(f"| {rank} | {b} | {r[b]['read']:,} | {r[b]['ideal']:,} | {r[b]['read'] / r[b]['ideal']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
