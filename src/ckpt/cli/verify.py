"""``ckpt verify``: read checkpoints completely and list every problem (exit status 1 if there is any)."""

from __future__ import annotations

import argparse

from .._verify import CHECKS, verify
from ._output import Progress, add_quiet_option, escape, human_bytes, print_json, progress_wanted

EXAMPLES = """examples:
  ckpt verify runs/exp1                      every checkpoint in a directory, its state file and records
  ckpt verify runs/exp1/ckpt-300             one checkpoint (a prefix or one of its files)
  ckpt verify model.safetensors               other formats too: safetensors, .npz, .pt/.bin, .weights.h5
  ckpt verify runs/exp1 --json | jq '.problems[] | .file'

What is checked: TensorFlow: every index block checksum, every entry, every tensor's CRC32C; safetensors: the
header, offsets and sizes; .npz and zip PyTorch files: the CRC-32 of every member; every format: every tensor is
read completely.

One line per problem on stdout: FILE: [tensor NAME:] WHAT. Exit status: 0 when everything verifies, 1 when
problems were found, 2 on trouble (nothing to verify there, a file ckpt cannot read at all, a usage error).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check every index block, tensor checksum and data file; list every problem",
        description="Read a checkpoint, or every checkpoint in a directory (those the 'checkpoint' state file "
                    "lists and every .index on disk), completely: index block checksums, every entry, data files "
                    "present, every tensor's bounds, size and checksum; for a directory also the state file, "
                    "Manager records and leftovers of interrupted saves. Changes nothing.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a directory, a checkpoint prefix, one of a checkpoint's files, or a file of another "
                                "format (safetensors, .npz, .pt, .weights.h5)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Progress("verify", enabled=progress_wanted(args)) as bar:
        report = verify(args.path, progress=bar if bar.enabled else None)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for problem in report.problems:
        tensor = "" if problem.tensor is None else f" tensor {escape(problem.tensor)!s}:"
        print(f"{escape(str(problem.file))}:{tensor} {escape(problem.what)}")
    if report.format == "tensorflow":
        checked = (f"{len(report.checkpoints)} checkpoint(s), {report.tensors} tensor(s), "
                   f"{human_bytes(report.bytes)}")
    else:
        checked = (f"{escape(str(report.path))} ({report.format}), {report.tensors} tensor(s), "
                   f"{human_bytes(report.bytes)}")
    busy = " (a save is in progress: temporary files not checked)" if report.busy else ""
    if report.ok:
        print(f"OK: {checked} verified{busy}" + ("" if report.format == "tensorflow" else
                                                 f" ({CHECKS[report.format]})"))
        return 0
    print(f"{len(report.problems)} problem(s) in {escape(str(report.path))}: checked {checked}{busy}")
    return 1
