#!/usr/bin/env python3
"""Benchmark ckpt against raw file I/O and its peers on the same state, in the same run.

    python benchmarks/bench.py --size small          # what `make bench SIZE=small` runs

Every measurement runs in a fresh worker process (one per library group, workload and round; see _worker.py);
rounds are interleaved (round-robin over the libraries, the order rotated each round), and the report gives the
median with min and max over the rounds and the ratio to the raw cost measured in the same round.  Results go to
benchmarks/results/: latest.md (+ a timestamped copy), latest.png and latest.json.  Benchmark data lives in a
temporary directory on the checkout's disk and is deleted at the end.  See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _libs import GROUPS, LIBS  # noqa: E402
from _report import chart, markdown  # noqa: E402
from _workloads import BULK, SIZES, WORKLOADS, planned_bytes  # noqa: E402

TIMEOUT = {"tiny": 300, "small": 900, "medium": 2400, "full": 7200}


def _mount_of(path: str) -> tuple[str, str, str]:
    """(device, mount point, fs type) of the filesystem holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("?", "/", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
                    best = (dev, mnt, fstype)
    except OSError:
        pass
    return best


def pick_workdir(parent: str | None, need: int) -> str:
    """A fresh temporary directory on the checkout's disk: the system temp dir when it is on the same filesystem
    as the checkout (and not tmpfs), else benchmarks/.data/."""
    if parent is None:
        parent = os.environ.get("CKPT_BENCH_DIR")
    if parent is None:
        tmp = tempfile.gettempdir()
        same = os.stat(tmp).st_dev == os.stat(REPO).st_dev
        parent = tmp if same and _mount_of(tmp)[2] not in ("tmpfs", "ramfs") else os.path.join(HERE, ".data")
    os.makedirs(parent, exist_ok=True)
    fstype = _mount_of(parent)[2]
    if fstype in ("tmpfs", "ramfs"):
        print(f"warning: {parent} is {fstype} (memory): disk figures will be meaningless", file=sys.stderr)
    free = shutil.disk_usage(parent).free
    if free < need:
        sys.exit(f"bench: {parent} has {free / 1e9:.1f} GB free, this size needs about {need / 1e9:.1f} GB")
    return tempfile.mkdtemp(prefix="ckpt-bench-", dir=parent)


def cold_method(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        if os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK):
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
            return "drop_caches"
    except OSError:
        pass
    return "fadvise"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        try:
            mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
        except (ValueError, OSError):
            pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, Linux {platform.release()}, Python {platform.python_version()}"


def ckpt_rev(path: str | None) -> str:
    """Which ckpt was measured: the checkout's commit and uncommitted files, or where it was imported from."""
    src = os.path.join(REPO, "src", "ckpt")
    if path and os.path.realpath(path) != os.path.realpath(src):
        return f"imported from {path}"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/ckpt"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
        files = [line[3:] for line in dirty if line.strip()]
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        changes = f" + uncommitted changes to {', '.join(files[:3])}{more}" if files else ""
        return f"{rev}{changes}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def select(spec: str | None) -> tuple[list[tuple[str, list[str]]], dict[str, str]]:
    """[(group, [lib, ...])] of the requested, available libraries; {lib: why skipped}."""
    wanted = None if not spec else {s.strip() for s in spec.split(",") if s.strip()}
    if wanted is not None:
        unknown = wanted - set(GROUPS) - set(LIBS)
        if unknown:
            sys.exit(f"bench: unknown libraries {sorted(unknown)}; choose from groups {list(GROUPS)} "
                     f"or {list(LIBS)}")
        wanted |= {"raw"}  # every ratio needs it
    groups, skipped = [], {}
    for group, names in GROUPS.items():
        chosen = []
        for name in names:
            if wanted is not None and group not in wanted and name not in wanted:
                continue
            why = LIBS[name].available()
            source = LIBS[name].source
            if why is None and source and source not in chosen:
                why = f"needs {source}"
            if why:
                skipped[name] = why
            else:
                chosen.append(name)
        if chosen:
            groups.append((group, chosen))
    return groups, skipped


def _summary(records: list[dict]) -> str:
    parts = []
    short = {"save": "save", "save_durable": "durable", "restore_warm": "rst-w", "restore_cold": "rst-c",
             "load_warm": "load-w", "load_cold": "load-c", "async": "async", "async_again": "async2",
             "lookup_cold": "cold",
             "lookup_warm": "warm"}
    libs: dict[str, list[str]] = {}
    for r in records:
        if r["op"] == "*":
            text = "ERR"
        elif r.get("error"):
            text = f"{short.get(r['op'], r['op'])} ERR"
        elif r.get("seconds") is None:
            continue
        else:
            s = r["seconds"]
            text = f"{short.get(r['op'], r['op'])} " + (f"{s:.3f}s" if s >= 0.01 else f"{s * 1e3:.2f}ms")
        libs.setdefault(r["lib"], []).append(text)
    for lib, items in libs.items():
        parts.append(f"{lib}: " + " ".join(items))
    return "; ".join(parts)


def _takes_part(lib, workload: str, lookup_all: bool) -> bool:
    if workload == "lookup":
        return lib.lookup_capable and (lib.lookup_default or lookup_all)
    return lib.bulk


def run_worker(spec: dict, timeout: float, log_dir: str) -> dict:
    path = os.path.join(log_dir, f"spec-{spec['round']}-{spec['workload']}-{spec['group']}.json")
    spec["result"] = path.replace("spec-", "result-")
    with open(path, "w") as f:
        json.dump(spec, f)
    # A fixed mmap threshold turns off glibc's adaptive one, so every large array is a fresh mapping returned to
    # the system when freed (otherwise whether a load reuses already-faulted heap depends on what ran before it,
    # and the RSS high-water marks include freed memory).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", MALLOC_MMAP_THRESHOLD_="131072",
               MALLOC_TRIM_THRESHOLD_="131072")
    log = path.replace("spec-", "log-").replace(".json", ".txt")
    error = None
    with open(log, "w") as out:
        try:
            proc = subprocess.run([sys.executable, os.path.join(HERE, "_worker.py"), path], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=spec["workdir"])
            if proc.returncode != 0:
                error = f"worker exited with status {proc.returncode}"
        except subprocess.TimeoutExpired:
            error = f"worker timed out after {timeout:.0f} s"
    try:
        with open(spec["result"]) as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = {"records": [], "meta": {"errors": []}}
    if error:
        with open(log) as f:
            tail = f.read()[-1500:]
        result["meta"].setdefault("errors", []).append(f"{error}\n{tail}")
        done = {(r["lib"], r["op"]) for r in result["records"]}
        for lib in spec["libs"]:
            if not any(k[0] == lib for k in done):
                result["records"].append(dict(lib=lib, workload=spec["workload"], op="*", round=spec["round"],
                                              error=error))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=os.environ.get("SIZE") or "small", choices=list(SIZES))
    ap.add_argument("--rounds", type=int, help="override the size's number of rounds")
    ap.add_argument("--libs", help="comma-separated groups or libraries (default: all installed); raw is always "
                                   f"included. Groups: {', '.join(GROUPS)}")
    ap.add_argument("--workloads", help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory")
    ap.add_argument("--workdir", help="parent directory for the temporary benchmark data")
    ap.add_argument("--cold", default="auto", choices=["auto", "drop_caches", "fadvise"],
                    help="how to evict the page cache before cold reads (auto: drop_caches if root, else fadvise)")
    ap.add_argument("--timeout", type=float, help="seconds per worker process")
    ap.add_argument("--no-prefault", action="store_true",
                    help="do not touch and free 2x the state's size in memory before each operation (see README)")
    ap.add_argument("--lookup-all", action="store_true",
                    help="also measure torch.load and TensorFlow's reader in the open + read one tensor workload")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--keep-data", action="store_true", help="do not delete the benchmark data (debugging)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cfg = SIZES[args.size]
    rounds = args.rounds or cfg["rounds"]
    workloads = list(WORKLOADS) if not args.workloads else [w.strip() for w in args.workloads.split(",")]
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"bench: unknown workload {w!r}; choose from {WORKLOADS}")
    groups, skipped = select(args.libs)
    planned = planned_bytes(args.size)
    need = int(2.5 * max([planned[w] for w in workloads if w in BULK] or [0]) + 12 * planned["lookup"]) + 2**30
    workdir = pick_workdir(args.workdir, need)
    cold = cold_method(args.cold)
    timeout = args.timeout or TIMEOUT[args.size]
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir)
    dev, _mnt, fstype = _mount_of(workdir)
    print(f"bench: SIZE={args.size}, {rounds} round(s), workloads {', '.join(workloads)}; libraries: "
          + ", ".join(n for _, names in groups for n in names)
          + (f"; not measured: {', '.join(f'{k} ({v})' for k, v in skipped.items())}" if skipped else ""))
    print(f"bench: data in {workdir} ({dev}, {fstype}); cold reads via {cold}")
    sys.stdout.flush()

    records: list[dict] = []
    versions: dict[str, str] = {}
    info: dict[str, dict] = {}
    colds, mems, errors = set(), set(), []
    ckpt_path = None
    fingerprints: dict[str, str] = {}  # ckpt source fingerprint -> first worker that saw it
    try:
        for r in range(1, rounds + 1):
            for w in workloads:
                k = (r - 1) % len(groups)
                for group, names in groups[k:] + groups[:k]:
                    names = [n for n in names if _takes_part(LIBS[n], w, args.lookup_all)]
                    if not names:
                        continue
                    spec = dict(size=args.size, workload=w, round=r, group=group, libs=names, workdir=workdir,
                                cold=cold, prefault=not args.no_prefault, lookup_all=args.lookup_all)
                    t0 = time.perf_counter()
                    result = run_worker(spec, timeout, log_dir)
                    recs = result["records"]
                    records.extend(recs)
                    meta = result.get("meta", {})
                    versions.update({k2: v for k2, v in meta.get("versions", {}).items() if v})
                    ckpt_path = meta.get("ckpt_path") or ckpt_path
                    if meta.get("ckpt_fingerprint"):
                        fingerprints.setdefault(meta["ckpt_fingerprint"], f"round {r}, {w}")
                    if "nbytes" in meta:
                        info[w] = {k2: meta[k2] for k2 in ("nbytes", "tensors", "description")}
                    if meta.get("memory_method"):
                        mems.add(meta["memory_method"])
                    colds.update(x["cold"] for x in recs if x.get("cold"))
                    for e in meta.get("errors", []):
                        errors.append(f"round {r}, {w}, {group}: {e}")
                    over = " ".join(f"{k[:-8]} {meta[k]:.1f}s" for k in ("build_seconds", "setup_seconds",
                                                                          "prefault_seconds") if k in meta)
                    print(f"[{r}/{rounds}] {w:6s} {group:11s} {time.perf_counter() - t0:6.1f}s  ({over})  "
                          f"{_summary(recs)}")
                    sys.stdout.flush()
    finally:
        if args.keep_data:
            print(f"bench: data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    lib_order = [n for _, names in groups for n in names]
    load_end = os.getloadavg()[0] if load_start is not None else None
    run = dict(size=args.size, rounds=rounds, workloads=workloads, libs=lib_order, records=records,
               versions=versions, workload_info=info, skipped=skipped,
               date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine=machine(), cpus=os.cpu_count(),
               disk=f"{dev} ({fstype})", cold=" + ".join(sorted(colds)) or cold,
               memory_method=" + ".join(sorted(mems)) or "?", prefault=not args.no_prefault,
               load=(load_start, load_end), ckpt_rev=ckpt_rev(ckpt_path),
               wall_seconds=time.perf_counter() - t_start, worker_errors=errors,
               ckpt_changed=list(fingerprints.values())[1:])
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "latest.png")
    if not args.no_chart:
        try:
            if chart(run, png):
                run["chart"] = "latest.png"
            else:
                print("bench: matplotlib not installed: no chart (pip install -e '.[bench]')")
        except Exception as e:  # the table matters more than the picture
            print(f"bench: chart failed: {type(e).__name__}: {e}")
    text = markdown(run)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(text)
    shutil.copyfile(os.path.join(args.out, "latest.md"), os.path.join(args.out, f"bench-{stamp}-{args.size}.md"))
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(run, f, indent=1)
    print()
    print(text)
    if errors:
        print("bench: worker problems:\n" + "\n".join(e[:2000] for e in errors), file=sys.stderr)
    print(f"bench: wrote {os.path.join(args.out, 'latest.md')}" + (f" and {png}" if run.get("chart") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
