"""``ckpt verify``: read checkpoints completely and list every problem (exit status 1 if there is any)."""

from __future__ import annotations

import argparse

from .._verify import verify
from ._output import escape, human_bytes, print_json

EXAMPLES = """examples:
  ckpt verify runs/exp1                      every checkpoint in a directory, its state file and records
  ckpt verify runs/exp1/ckpt-300             one checkpoint (a prefix or one of its files)
  ckpt verify runs/exp1 --json | jq '.problems[] | .file'

One line per problem on stdout: FILE: [tensor NAME:] WHAT. Exit status 0 when everything verifies, 1 otherwise.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check every index block, tensor checksum and data file; list every problem",
        description="Read a checkpoint, or every checkpoint in a directory (those the 'checkpoint' state file "
                    "lists and every .index on disk), completely: index block checksums, every entry, data files "
                    "present, every tensor's bounds, size and checksum; for a directory also the state file, "
                    "Manager records and leftovers of interrupted saves. Changes nothing.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a directory, a checkpoint prefix, or one of a checkpoint's files")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = verify(args.path)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for problem in report.problems:
        tensor = "" if problem.tensor is None else f" tensor {escape(problem.tensor)!s}:"
        print(f"{escape(str(problem.file))}:{tensor} {escape(problem.what)}")
    checked = (f"{len(report.checkpoints)} checkpoint(s), {report.tensors} tensor(s), "
               f"{human_bytes(report.bytes)}")
    busy = " (a save is in progress: temporary files not checked)" if report.busy else ""
    if report.ok:
        print(f"OK: {checked} verified{busy}")
        return 0
    print(f"{len(report.problems)} problem(s) in {escape(str(report.path))}: checked {checked}{busy}")
    return 1
