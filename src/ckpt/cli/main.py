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


EXIT_STATUS = """exit status (every command):
  0  success; for diff: no difference; for verify: no problem
  1  diff: the checkpoints differ; verify: problems were found (listed on stdout)
  2  trouble: a usage error, a missing or unreadable file, a refused operation (message on stderr)

Progress bars are drawn on stderr when it is a terminal and a command runs for more than a moment; -q/--quiet,
--json or CKPT_NO_PROGRESS=1 turn them off. Tables are fitted to the terminal's width (--wide: in full).
"""

#: Commands whose main argument must be a graph file, and the attribute that holds it.
GRAPH_ARGUMENTS = {"graph": "path", "freeze": "graph", "run": "model"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckpt", description="Save, restore, inspect and convert model checkpoints (TensorFlow-compatible).",
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    for command in sub.choices.values():
        # Unknown options are reported by the sub-command's parser (its usage, not the top-level one), and every
        # sub-command's help ends with the exit status.
        command.set_defaults(_command_parser=command)
        if command.epilog and "exit status" not in command.epilog.lower():
            command.epilog = command.epilog.rstrip("\n") + "\n\nExit status: 0 success, 2 trouble (see ckpt --help).\n"
        elif not command.epilog:
            command.epilog = "Exit status: 0 success, 2 trouble (see ckpt --help)."
    return parser


#: Arguments of the sub-commands that name files or directories (checked by ``local_path`` before running).
PATH_ARGUMENTS = ("path", "src", "dst", "a", "b", "model", "graph", "checkpoint", "output", "html", "logdir", "save")


def _local_paths(args: argparse.Namespace) -> None:
    """Refuse URL paths (UnsupportedError) before a command reads or writes anything; strip ``file://``."""
    for dest in PATH_ARGUMENTS:
        value = getattr(args, dest, None)
        if isinstance(value, str):
            setattr(args, dest, local_path(value))


def _not_a_graph(args: argparse.Namespace) -> str | None:
    """For graph commands given a checkpoint file instead of a graph: say which format the file is."""
    dest = GRAPH_ARGUMENTS.get(getattr(args, "command", None) or "")
    path = getattr(args, dest, None) if dest else None
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    from ..formats import _sniff  # content only: a .meta beside its .index is still a graph

    fmt = _sniff(path)
    if fmt is None:
        return None
    name = FORMAT_NAMES.get(fmt, f"a {fmt} checkpoint")
    return f"{path} is {name}, not a graph; use `ckpt inspect {path}` to list its tensors"


#: How messages name a format.
FORMAT_NAMES = {"tensorflow": "a TensorFlow checkpoint's index (its graph, when saved, is PREFIX.meta)",
                "safetensors": "a safetensors checkpoint", "torch": "a PyTorch checkpoint",
                "numpy": "a NumPy .npz checkpoint", "keras": "a Keras/HDF5 weights file"}


def _report(message: str) -> int:
    if os.environ.get("CKPT_DEBUG"):
        traceback.print_exc()
    print(f"Error: {message}", file=sys.stderr)
    if not os.environ.get("CKPT_DEBUG"):
        print("(set CKPT_DEBUG=1 for the full traceback)", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ckpt`` command; returns the exit status (0 success, 1 differs/problems found, 2 trouble)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        (getattr(args, "_command_parser", None) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _local_paths(args)
        return args.func(args)
    except CheckpointError as exc:
        return _report(_not_a_graph(args) or str(exc))
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error.
        sys.stderr.close()
        return 0
    except OSError as exc:  # e.g. no permission to write the destination
        return _report(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
