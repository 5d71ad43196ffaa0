#!/usr/bin/env python3
"""Profile ckpt's save, restore and load on one benchmark workload with cProfile (guides the fast-path work).

    .venv/bin/python benchmarks/profile_ckpt.py --size small --workload gpt2 [--top 25] [--ops save,restore]

Builds the same state as bench.py, warms the code paths up once, then profiles each operation separately (after
``os.sync()`` and the same memory prefault as bench.py) and prints
the top functions by internal time and by cumulative time.  Data goes to a temporary directory on the checkout's
disk, deleted at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import ckpt  # noqa: E402
from _workloads import SIZES, WORKLOADS, build  # noqa: E402
from _worker import prefault  # noqa: E402
from bench import pick_workdir  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--workload", default="gpt2", choices=[w for w in WORKLOADS if w != "lookup"])
    ap.add_argument("--ops", default="save,restore,load", help="comma-separated: save, save_nosync, restore, load")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--workdir")
    args = ap.parse_args(argv)

    wl = build(args.workload, args.size)
    dest = {k: np.zeros_like(v) for k, v in wl.state.items()}
    for a in dest.values():
        a.fill(0)
    workdir = pick_workdir(args.workdir, 3 * wl.nbytes + 2**28)
    prefix = os.path.join(workdir, "ckpt")
    print(f"{args.workload} @ {args.size}: {wl.nbytes / 1e6:.1f} MB, {len(wl.state):,} tensors; ckpt "
          f"{ckpt.__version__} from {os.path.dirname(ckpt.__file__)}")
    ops = {  # saves go to new prefixes (as in bench.py: replacing existing files costs ext4 an implicit flush)
        "save": lambda: ckpt.save(wl.state, os.path.join(workdir, "new", "ckpt"), sync=True),
        "save_nosync": lambda: ckpt.save(wl.state, os.path.join(workdir, "new-nosync", "ckpt"), sync=False),
        "restore": lambda: ckpt.restore(prefix, dest),
        "load": lambda: ckpt.load(prefix, flat=True),
    }
    try:
        ckpt.save(wl.state, prefix, sync=False)  # warm-up: imports, first-call setup
        ckpt.restore(prefix, dest)
        for op in [o.strip() for o in args.ops.split(",") if o.strip()]:
            os.sync()
            prefault(2 * wl.nbytes + (32 << 20))  # as bench.py does before every operation (see README)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            ops[op]()
            prof.disable()
            seconds = time.perf_counter() - t0
            for order in ("tottime", "cumulative"):
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(args.top)
                text = buf.getvalue()
                body = text[text.index("   ncalls"):] if "   ncalls" in text else text
                print(f"\n=== ckpt {op}: {seconds * 1e3:.1f} ms under the profiler; top {args.top} by {order} ===")
                print(body.rstrip())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
