"""``ckpt summary``: the latest scalars of TensorBoard events files, as a table or JSON."""

from __future__ import annotations

import argparse
import sys
import time

from ..summary import latest_scalars, read
from ._output import add_wide_option, escape, print_json, table

EXAMPLES = """examples:
  ckpt summary runs/                   last value of every scalar tag, per run
  ckpt summary runs/ --all             every scalar value, in file order
  ckpt summary runs/exp1 --json | jq '.scalars[] | select(.tag == "loss") | .value'
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="print the latest scalars of TensorBoard events files",
        description="Read the events files under LOGDIR (written by ckpt, TensorFlow, torch.utils.tensorboard or "
                    "tensorboardX) without TensorFlow and print the last value of each scalar tag per run.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdir", help="directory TensorBoard would be pointed at, or one events file")
    p.add_argument("--all", action="store_true", help="every scalar value, not only the latest of each tag")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_wide_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = ([r for r in read(args.logdir) if r.kind == "scalar"] if args.all else latest_scalars(args.logdir))
    if args.json:
        print_json({"logdir": args.logdir, "scalars": [
            {"run": r.run, "tag": r.tag, "step": r.step, "wall_time": r.wall_time, "value": r.value}
            for r in rows]})
        return 0
    if not rows:
        print(f"(no scalars under {escape(args.logdir)})", file=sys.stderr)
        return 0
    table([[escape(r.run), escape(r.tag), str(r.step), f"{r.value:.6g}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.wall_time))] for r in rows],
          ["run", "tag", "step", "value", "time"], right=(2, 3), wide=args.wide)
    return 0
