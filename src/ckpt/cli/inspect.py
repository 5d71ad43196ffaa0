"""``ckpt inspect``: what is in a checkpoint of any format (the successor of TensorFlow's ``inspect_checkpoint``)."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .._summary import summarize
from ..tf.state_file import find_checkpoints
from ..reader import NAMES, Reader
from ._output import (add_wide_option, array_to_json, escape, human_bytes, nonnegative_int, positive_int, print_json,
                      shape_str, table)

EXAMPLES = """examples:
  ckpt inspect model/                         newest checkpoint in a directory
  ckpt inspect model/model.ckpt-30            one checkpoint, by prefix
  ckpt inspect model/ --tensor alpha          print one tensor's value
  ckpt inspect model/ --all --precision 3     print every value
  ckpt inspect model/ --json | jq '.tensors[].name'
  ckpt inspect model.safetensors --summary    parameters and bytes per top-level scope
  ckpt inspect pytorch_model.bin --summary --depth 3
  ckpt inspect tf2/ckpt-3 --names clean       model/dense/kernel instead of .../.ATTRIBUTES/VARIABLE_VALUE
  ckpt inspect export_dir/                    a SavedModel's variables (clean names unless --names raw)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="list the tensors of a checkpoint (name, dtype, shape, size) and print values",
        description="List a checkpoint's tensors sorted by name, with totals; optionally print values. Reads "
                    "TensorFlow checkpoints, safetensors (single or sharded), PyTorch state dicts (.pt/.bin/.pth, "
                    "weights only), NumPy .npz and Keras .weights.h5; the format is detected from the content.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="checkpoint prefix, one of its files, a directory (its newest checkpoint), or a "
                                "file of another format")
    p.add_argument("--tensor", "-t", action="append", metavar="NAME", help="print this tensor's value (repeatable)")
    p.add_argument("--all", action="store_true", help="print every tensor's value")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--precision", type=nonnegative_int, default=None, metavar="N",
                   help="digits after the decimal point when printing")
    p.add_argument("--full", action="store_true", help="print whole arrays instead of summarising large ones")
    p.add_argument("--no-verify", action="store_true", help="skip tensor checksums when printing values")
    p.add_argument("--summary", action="store_true",
                   help="print parameters and bytes per scope (top-level name prefix) instead of every tensor")
    p.add_argument("--depth", type=positive_int, default=1, metavar="N",
                   help="scope depth for --summary and the JSON 'scopes' (default 1: model/..., optimizer/...)")
    p.add_argument("--names", choices=NAMES, default=None,
                   help="'clean': TensorFlow 2 object paths (model/dense/kernel) and Keras layer names (the default "
                        "for a SavedModel's variables); 'raw': keys as stored (the default otherwise)")
    add_wide_option(p)
    p.set_defaults(func=run)


def _saved_model_variables(path: str) -> str | None:
    """The variables directory when ``path`` is a SavedModel directory, its ``variables/`` or a checkpoint there."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isdir(os.path.join(path, "variables")):
        return os.path.join(path, "variables")
    path = os.path.abspath(path)
    for candidate in (path, os.path.dirname(path)):
        if os.path.basename(candidate) == "variables" and os.path.isfile(
                os.path.join(os.path.dirname(candidate), "saved_model.pb")):
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    variables = _saved_model_variables(args.path)
    if variables is not None and os.path.isdir(args.path) and os.path.basename(os.path.abspath(args.path)) != \
            "variables":
        args.path = variables  # a SavedModel directory: its checkpoint
    if args.names is None:
        args.names = "clean" if variables is not None else "raw"
    picked_dir = os.path.isdir(args.path)
    with Reader(args.path, verify_checksums=not args.no_verify, names=args.names) as reader:
        entries = [reader.info(name) for name in reader.keys()]
        scopes = summarize(entries, args.depth)
        others = []
        if picked_dir and reader.format == "tensorflow":
            others = [p for p in find_checkpoints(args.path) if os.path.abspath(p) != os.path.abspath(reader.prefix)]
        wanted = reader.keys() if args.all else list(dict.fromkeys(args.tensor or []))
        values = {name: reader[name] for name in wanted}  # raises a clear error for unknown names
        total_elems = sum(e.num_elements for e in entries)
        total_bytes = sum(e.nbytes for e in entries)
        if args.json:
            print_json({
                "checkpoint": reader.prefix,
                "format": reader.format,
                "others": others,
                "tensors": [{"name": e.name, "dtype": e.dtype, "shape": list(e.shape),
                             "elements": e.num_elements, "bytes": e.nbytes, "shard": e.shard, "offset": e.offset,
                             "partitioned": e.partitioned} for e in entries],
                "total": {"tensors": len(entries), "elements": total_elems, "bytes": total_bytes},
                "scopes": [{"scope": sc.scope, "tensors": sc.tensors, "parameters": sc.parameters,
                            "bytes": sc.bytes, "dtypes": list(sc.dtypes)} for sc in scopes],
                "metadata": reader.metadata,
                "values": {name: array_to_json(np.asarray(v)) for name, v in values.items()},
            })
            return 0
        kind = "" if reader.format == "tensorflow" else f" ({reader.format})"
        if picked_dir and reader.format == "tensorflow":
            print(f"checkpoint: {escape(reader.prefix)} (newest in {escape(args.path)})")
            if others:
                print(f"others:     {', '.join(escape(os.path.basename(p)) for p in others)}")
        else:
            print(f"checkpoint: {escape(reader.prefix)}{kind}")
        print()
        if args.summary:
            rows = [[escape(sc.scope), f"{sc.tensors:,}", f"{sc.parameters:,}", human_bytes(sc.bytes),
                     ", ".join(sc.dtypes)] for sc in scopes]
            table(rows, ["scope", "tensors", "parameters", "bytes", "dtypes"], right=(1, 2, 3), wide=args.wide)
        else:
            rows = [[escape(e.name), e.dtype + (" (partitioned)" if e.partitioned else ""), shape_str(e.shape),
                     f"{e.num_elements:,}", human_bytes(e.nbytes)] for e in entries]
            table(rows, ["name", "dtype", "shape", "elements", "bytes"], right=(3, 4), wide=args.wide)
        print(f"\n{len(entries)} tensors, {total_elems:,} elements, {human_bytes(total_bytes)}")
        if reader.metadata:
            print(f"metadata: {reader.metadata}")
        options = {"threshold": sys.maxsize} if args.full else {}
        if args.precision is not None:
            options["precision"] = args.precision
        with np.printoptions(**options):
            for name, value in values.items():
                print(f"\n{escape(name)}:")
                print(_show(value))
    return 0


def _show(value: np.ndarray) -> str:
    if value.dtype == object:
        value = np.vectorize(lambda b: escape(b.decode("utf-8", "backslashreplace")), otypes=[object])(value) \
            if value.size else value
    elif value.ndim == 0:
        return np.array2string(value)  # str() of a 0-d array ignores the print options (--precision)
    return str(value)
