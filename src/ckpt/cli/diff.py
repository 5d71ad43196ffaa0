"""``ckpt diff``: what differs between two checkpoints, of the same or different formats."""

from __future__ import annotations

import argparse
import os

from .._diff import diff
from ..reader import NAMES
from ._output import (Progress, add_quiet_option, add_wide_option, escape, nonnegative_float, print_json,
                      progress_wanted, shape_str, table)

EXAMPLES = """examples:
  ckpt diff model/ckpt-3 model.safetensors                  a checkpoint against its conversion
  ckpt diff tf2/ckpt-3 model.safetensors --names clean      clean TF2 names on both sides
  ckpt diff run1/ run2/ --atol 1e-6                         equal within a tolerance
  ckpt diff a.pt b.pt --json | jq '.tensors[0]'

Exit status (as GNU diff): 0 when both have the same names, dtypes and shapes and every value is within
tolerance (|a - b| <= atol + rtol * |b|; exact by default), 1 when they differ, 2 on trouble (a missing or
unreadable file, a usage error).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "diff", help="compare two checkpoints tensor by tensor (any formats)",
        description="Names only in A or B, dtype and shape changes, and for common tensors the largest absolute "
                    "and relative difference and the norm of the change, largest changes first.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="first checkpoint (any format ckpt reads)")
    p.add_argument("b", help="second checkpoint")
    p.add_argument("--atol", type=nonnegative_float, default=0.0, metavar="X",
                   help="absolute tolerance (default 0: exact)")
    p.add_argument("--rtol", type=nonnegative_float, default=0.0, metavar="X",
                   help="relative tolerance (default 0: exact)")
    p.add_argument("--names", choices=NAMES, default="raw", help="compare raw or clean names (TensorFlow 2, Keras)")
    p.add_argument("--include", action="append", metavar="GLOB", help="only compare matching names (repeatable)")
    p.add_argument("--all", action="store_true", help="also list tensors that are equal")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_wide_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"


def run(args: argparse.Namespace) -> int:
    with Progress("diff", enabled=progress_wanted(args)) as bar:
        result = diff(args.a, args.b, atol=args.atol, rtol=args.rtol, names=args.names, include=args.include,
                      progress=bar if bar.enabled else None)
    status = 0 if result.equal else 1
    if args.json:
        print_json({
            "a": os.fspath(result.a), "b": os.fspath(result.b), "equal": result.equal,
            "atol": result.atol, "rtol": result.rtol, "only_a": result.only_a, "only_b": result.only_b,
            "tensors": [{"name": t.name, "dtype_a": t.dtype_a, "dtype_b": t.dtype_b, "shape_a": list(t.shape_a),
                         "shape_b": list(t.shape_b), "equal": t.equal, "close": t.close, "max_abs": t.max_abs,
                         "max_rel": t.max_rel, "norm": t.norm, "mismatched": t.mismatched}
                        for t in result.tensors],
        })
        return status
    print(f"a: {escape(os.fspath(result.a))}")
    print(f"b: {escape(os.fspath(result.b))}")
    print()
    if result.only_a:
        print(f"only in a ({len(result.only_a)}):")
        for name in result.only_a:
            print(f"  - {escape(name)}")
    if result.only_b:
        print(f"only in b ({len(result.only_b)}):")
        for name in result.only_b:
            print(f"  + {escape(name)}")
    shown = result.tensors if args.all else result.changed
    if shown:
        if result.only_a or result.only_b:
            print()
        rows = []
        for t in shown:
            if t.shape_changed or t.dtype_changed:
                what = f"{t.dtype_a}{shape_str(t.shape_a)} -> {t.dtype_b}{shape_str(t.shape_b)}"
            else:
                what = "equal" if t.equal else ("close" if t.close else f"{t.mismatched:,} differ")
            rows.append([escape(t.name), what, _num(t.max_abs), _num(t.max_rel), _num(t.norm)])
        table(rows, ["name", "change", "max abs", "max rel", "norm"], right=(2, 3, 4), wide=args.wide)
        print()
    common = len(result.tensors)
    if result.equal:
        exact = all(t.equal for t in result.tensors)
        tol = "" if exact else f" within atol={result.atol:g}, rtol={result.rtol:g}"
        print(f"all equal{tol}: {common} tensors")
    else:
        print(f"differ: {len(result.only_a)} only in a, {len(result.only_b)} only in b, "
              f"{len(result.changed)} of {common} common tensors changed")
    return status
