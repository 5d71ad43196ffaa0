"""Entry point of the ``ckpt`` command: sub-command wiring and turning errors into one-line messages."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from .._paths import local_path
from ..errors import CheckpointError
from . import freeze as freeze_cmd
from . import graph as graph_cmd
from . import convert as convert_cmd
from . import diff as diff_cmd
from . import fetch as fetch_cmd
from . import inspect as inspect_cmd
from . import run as run_cmd
from . import summary as summary_cmd
from . import verify as verify_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckpt", description="Save, restore, inspect and convert model checkpoints (TensorFlow-compatible).")
    parser.add_argument("--version", action="version", version=f"ckpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect_cmd.add_parser(sub)
    verify_cmd.add_parser(sub)
    convert_cmd.add_parser(sub)
    diff_cmd.add_parser(sub)
    graph_cmd.add_parser(sub)
    freeze_cmd.add_parser(sub)
    run_cmd.add_parser(sub)
    summary_cmd.add_parser(sub)
    fetch_cmd.add_parser(sub)
    return parser


#: Arguments of the sub-commands that name files or directories (checked by ``local_path`` before running).
PATH_ARGUMENTS = ("path", "src", "dst", "a", "b", "model", "graph", "checkpoint", "output", "html", "logdir", "save")


def _local_paths(args: argparse.Namespace) -> None:
    """Refuse URL paths (UnsupportedError) before a command reads or writes anything; strip ``file://``."""
    for dest in PATH_ARGUMENTS:
        value = getattr(args, dest, None)
        if isinstance(value, str):
            setattr(args, dest, local_path(value))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _local_paths(args)
        return args.func(args)
    except CheckpointError as exc:
        if os.environ.get("CKPT_DEBUG"):
            traceback.print_exc()
        print(f"Error: {exc}", file=sys.stderr)
        if not os.environ.get("CKPT_DEBUG"):
            print("(set CKPT_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
