"""Aggregate worker records into the Markdown report and the PNG chart."""

from __future__ import annotations

import statistics
from collections import defaultdict

from _workloads import BULK, TITLES

OP_TITLES = {
    "save": "save (page cache)",
    "save_durable": "save + fsync",
    "restore_warm": "restore into prealloc., warm",
    "restore_cold": "restore into prealloc., cold",
    "load_warm": "full load, warm",
    "load_cold": "full load, cold",
    "async": "async save: call blocks",
    "async_again": "next async save: call blocks",
    "lookup_cold": "open + read one, cold",
    "lookup_warm": "open + read one, warm",
}
SHORT = {
    "save": "save", "save_durable": "save+fsync", "restore_warm": "restore warm", "restore_cold": "restore cold",
    "load_warm": "load warm", "load_cold": "load cold", "lookup_cold": "cold", "lookup_warm": "warm",
}
BULK_OPS = ("save", "save_durable", "restore_warm", "restore_cold", "load_warm", "load_cold")
LOOKUP_OPS = ("lookup_cold", "lookup_warm")
ASYNC_OPS = ("async", "async_again")


def fmt_time(s: float, unit: str | None = None) -> str:
    unit = unit or time_unit(s)
    scale = {"s": 1, "ms": 1e3, "µs": 1e6}[unit]
    v = s * scale
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def time_unit(s: float) -> str:
    return "s" if s >= 1 else "ms" if s >= 1e-3 else "µs"


class Stats:
    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.ratio: dict[int, float] = {}
        self.peak: list[int] = []
        self.total: list[float] = []
        self.errors: list[str] = []
        self.na: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.seconds)

    def med(self) -> float:
        return statistics.median(self.seconds.values())


def aggregate(records: list[dict]):
    """{(workload, lib, op): Stats} with per-round ratios to raw (async: to the same library's durable save)."""
    stats: dict[tuple, Stats] = defaultdict(Stats)
    by_round: dict[tuple, float] = {}
    for r in records:
        if r.get("seconds") is not None and not r.get("error"):
            by_round[(r["workload"], r["lib"], r["op"], r["round"])] = r["seconds"]
    for r in records:
        key = (r["workload"], r["lib"], r["op"])
        s = stats[key]
        if r.get("na"):
            s.na = r["na"]
            continue
        if r.get("error"):
            s.errors.append(r["error"])
            continue
        if r.get("seconds") is None:
            continue
        s.seconds[r["round"]] = r["seconds"]
        if r.get("peak") is not None:
            s.peak.append(r.get("peak_total") or r["peak"])
        if r.get("total_seconds") is not None:
            s.total.append(r["total_seconds"])
        if r["op"] in ASYNC_OPS:
            ref = by_round.get((r["workload"], r["lib"], "save_durable", r["round"]))
        else:
            ref = by_round.get((r["workload"], "raw", r["op"], r["round"]))
        if ref:
            s.ratio[r["round"]] = r["seconds"] / ref
    return stats


def _ratio_text(s: Stats) -> str:
    if not s.ratio:
        return ""
    return f"**{statistics.median(s.ratio.values()):.2f}×**"


def cell(s: Stats | None, nbytes: int, notes: list[str], op: str) -> str:
    if s is None:
        return "—"
    if not s.ok:
        if s.errors:
            notes.append(s.errors[0])
            return f"error [{len(notes)}]"
        return "n/a" if s.na else "—"
    med = s.med()
    unit = time_unit(med)
    lo, hi = min(s.seconds.values()), max(s.seconds.values())
    parts = []
    if s.ratio:
        parts.append(_ratio_text(s))
    rng = f" [{fmt_time(lo, unit)}–{fmt_time(hi, unit)}]" if len(s.seconds) > 1 else ""
    parts.append(f"{fmt_time(med, unit)} {unit}{rng}")
    if op in ASYNC_OPS:
        if s.total:
            parts.append(f"done {fmt_time(statistics.median(s.total))} {time_unit(statistics.median(s.total))}")
    elif op not in LOOKUP_OPS and med > 0:
        rate = nbytes / med
        parts.append(f"{rate / 1e9:.2f} GB/s" if rate >= 1e8 else f"{rate / 1e6:.3g} MB/s")
    text = " · ".join(parts)
    if s.errors:
        notes.append(s.errors[0])
        text += f" (error in a round [{len(notes)}])"
    return text


def _mib(s: Stats | None) -> str:
    if s is None or not s.peak:
        return "—"
    return f"{statistics.median(s.peak) / 2**20:.0f}"


def markdown(run: dict) -> str:
    stats = aggregate(run["records"])
    libs_order: list[str] = run["libs"]
    out: list[str] = []
    out.append(f"# ckpt benchmark — SIZE={run['size']}, {run['rounds']} round(s)")
    out.append("")
    out.append(f"{run['date']} · {run['machine']} · data on {run['disk']} · cold cache: {run['cold']} · "
               f"peak memory: {run['memory_method']} · prefault: {'on' if run.get('prefault') else 'off'} · "
               f"wall time {run['wall_seconds']:.0f} s" + _load_text(run))
    out.append("")
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(run["versions"].items()) if v)
               + f"; ckpt source {run['ckpt_rev']}.")
    if run.get("ckpt_changed"):
        out.append("")
        out.append("**Warning: ckpt's source changed during this run** (first seen changed at "
                   + "; ".join(run["ckpt_changed"]) + "): rounds measured different code; rerun for clean figures.")
    if run.get("skipped"):
        out.append("")
        out.append("Not measured: " + "; ".join(f"{k} ({v})" for k, v in run["skipped"].items()) + ".")
    out.append("")
    out.append("Each cell: **time ÷ raw time in the same round** (median over rounds) · median time "
               "[min–max] · throughput of the state's payload. *raw* writes the same bytes with one `os.write` "
               "loop per tensor into one file (+ `fsync`) and reads them back with `readinto` into preallocated "
               "buffers: the physical limit. *cold* = page cache evicted before the operation; *full load* "
               "returns new arrays and checksums every byte (so lazy loaders pay for their reads); "
               "*restore* fills existing, preallocated tensors (libraries without in-place restore load + copy). "
               "*async*: time until `save(..., blocking=False)` returns ÷ the same library's synchronous "
               "durable save, then the time until the checkpoint is complete and durable; *next async*: the "
               "same for the process's second asynchronous save (periodic checkpoints: buffers may be reused).")
    notes: list[str] = []
    for wl in run["workloads"]:
        info = run["workload_info"].get(wl, {})
        nbytes = info.get("nbytes", 0)
        out.append("")
        out.append(f"## {TITLES[wl]}: {nbytes / 1e6:,.1f} MB, {info.get('tensors', 0):,} tensors")
        out.append("")
        if info.get("description"):
            out.append(info["description"])
            out.append("")
        ops = BULK_OPS + ASYNC_OPS if wl in BULK else LOOKUP_OPS
        present = [lib for lib in libs_order if any((wl, lib, op) in stats for op in ops + ("*",))]
        out.append("| library | " + " | ".join(OP_TITLES[op] for op in ops) + " |")
        out.append("|---|" + "---|" * len(ops))
        for lib in present:
            if (wl, lib, "*") in stats and stats[(wl, lib, "*")].errors:
                notes.append(stats[(wl, lib, "*")].errors[0])
                out.append(f"| {lib} | " + " | ".join(f"error [{len(notes)}]" for _ in ops) + " |")
                continue
            row = [cell(stats.get((wl, lib, op)), nbytes, notes, op) for op in ops]
            out.append(f"| {lib} | " + " | ".join(row) + " |")
        out.append("")
        out.append(f"Peak extra memory (MiB, median; state = {nbytes / 2**20:,.0f} MiB):")
        out.append("")
        out.append("| library | " + " | ".join(SHORT.get(op, op) if op not in ASYNC_OPS else
                                             ("async (call + write)" if op == "async" else "next async")
                                             for op in ops) + " |")
        out.append("|---|" + "---|" * len(ops))
        for lib in present:
            out.append(f"| {lib} | " + " | ".join(_mib(stats.get((wl, lib, op))) for op in ops) + " |")
    out.append("")
    out.extend(targets(stats, run))
    if notes:
        out.append("")
        out.append("## Errors")
        out.append("")
        for i, n in enumerate(notes, 1):
            out.append(f"{i}. {n}")
    if run.get("chart"):
        out.append("")
        out.append(f"![ratio to raw]({run['chart']})")
    out.append("")
    return "\n".join(out)


def _load_text(run) -> str:
    load = run.get("load") or (None, None)
    if load[0] is None:
        return ""
    return (f" · load average {load[0]:.1f} at start, {load[1]:.1f} at end (other processes competing for the "
            f"{run.get('cpus', '?')} CPUs make figures noisier)")


def _med_ratio(stats, wl, lib, op):
    s = stats.get((wl, lib, op))
    if s is None or not s.ratio:
        return None
    return statistics.median(s.ratio.values())


def targets(stats, run) -> list[str]:
    """Issue 5's targets, checked against this run's figures (benchmark figures, not test assertions)."""
    lines = ["## Targets (issue 5) for ckpt in this run", ""]
    peers = [lib for lib in run["libs"] if lib not in ("ckpt", "raw", "raw (JSON index)")]

    def verdict(ok):
        return "—" if ok is None else ("met" if ok else "**missed**")

    for wl in ("gpt2", "many"):
        if wl not in run["workloads"]:
            continue
        for op, limit in (("save_durable", 1.15), ("restore_warm", 1.10), ("restore_cold", 1.20)):
            r = _med_ratio(stats, wl, "ckpt", op)
            ok = None if r is None else r <= limit
            slower = []
            c = stats.get((wl, "ckpt", op))
            if c is not None and c.ok:
                for p in peers:
                    ps = stats.get((wl, p, op))
                    if ps is not None and ps.ok and ps.med() <= c.med():
                        slower.append(f"{p} {fmt_time(ps.med())} {time_unit(ps.med())}")
            fig = "no figure" if r is None else f"{r:.2f}× raw"
            beat = "faster than every peer" if not slower else "not faster than: " + ", ".join(slower)
            if c is None or not c.ok:
                beat = ""
            lines.append(f"- {TITLES[wl]}, {OP_TITLES[op]}: ≤ {limit:.2f}× raw → {fig}: {verdict(ok)}"
                         + (f"; {beat}" if beat else ""))
    for wl in BULK:
        for op, what in (("async", "first async save"), ("async_again", "next async save")):
            s = stats.get((wl, "ckpt", op))
            if wl not in run["workloads"] or s is None:
                continue
            if not s.ok:
                lines.append(f"- {TITLES[wl]}, {what} blocks ≤ 0.30× sync save → "
                             f"{'n/a (' + s.na + ')' if s.na else 'error'}")
                continue
            r = statistics.median(s.ratio.values()) if s.ratio else None
            lines.append(f"- {TITLES[wl]}, {what} blocks ≤ 0.30× sync save → "
                         f"{'?' if r is None else f'{r:.2f}×'}: {verdict(None if r is None else r <= 0.30)}")
    s = stats.get(("lookup", "ckpt", "lookup_warm"))
    if "lookup" in run["workloads"] and s is not None and s.ok:
        n = run["workload_info"].get("lookup", {}).get("tensors", 0)
        lines.append(f"- open + one-tensor read from {n:,} tensors (target: < 20 ms warm at 100,000) → "
                     f"{s.med() * 1e3:.2f} ms: {verdict(s.med() < 0.020)}")
    return lines


def chart(run: dict, path: str) -> str | None:
    """Grouped bars of ratio to raw per workload and operation (log scale); returns None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    stats = aggregate(run["records"])
    wls = run["workloads"]
    cols = 2 if len(wls) > 1 else 1
    rows = (len(wls) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.2 * rows), squeeze=False)
    libs = [lib for lib in run["libs"] if lib != "raw"]
    colors = {lib: plt.cm.tab10(i % 10) for i, lib in enumerate(libs)}
    for ax, wl in zip(axes.flat, wls):
        ops = BULK_OPS if wl in BULK else LOOKUP_OPS
        present = [lib for lib in libs if any(_med_ratio(stats, wl, lib, op) for op in ops)]
        width = 0.8 / max(1, len(present))
        for j, lib in enumerate(present):
            xs, ys = [], []
            for i, op in enumerate(ops):
                r = _med_ratio(stats, wl, lib, op)
                if r:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(r)
            ax.bar(xs, ys, width, label=lib, color=colors[lib],
                   edgecolor="black" if lib == "ckpt" else "none", linewidth=1.2)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([SHORT[op] for op in ops], fontsize=8)
        ax.set_ylabel("time ÷ raw (log)")
        ref = "raw (binary index)" if wl == "lookup" else "raw"
        ax.set_title(f"{TITLES[wl]} ({run['workload_info'].get(wl, {}).get('nbytes', 0) / 1e6:,.0f} MB); "
                     f"1 = {ref}", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colors[lib], edgecolor="black" if lib == "ckpt" else "none")
               for lib in libs]
    fig.legend(handles, libs, loc="lower center", ncol=min(len(libs), 5), fontsize=8, frameon=False)
    fig.suptitle(f"ckpt benchmark, SIZE={run['size']} ({run['date']}): median time ÷ raw file I/O", fontsize=11)
    fig.tight_layout(rect=(0, 0.03 + 0.025 * ((len(libs) - 1) // 5), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
