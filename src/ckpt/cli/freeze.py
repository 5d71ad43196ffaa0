"""``ckpt freeze``: a graph plus a checkpoint become one frozen ``.pb``/``.pbtxt`` for serving."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import CheckpointNotFoundError
from ..graph import load
from ..graph._freeze import _freeze
from ._output import escape, human_bytes, print_json

EXAMPLES = """examples:
  ckpt freeze --graph model/CNN.ckpt.meta --checkpoint model/ --outputs ArgMax -o model/CNN.pb
  ckpt freeze --graph model/CNN.ckpt.meta --outputs ArgMax -o model/CNN.pbtxt    (checkpoint beside the .meta)
  ckpt freeze --graph graph.pbtxt --checkpoint model/ckpt-3 --outputs y,loss -o frozen.pb --clear-devices
  ckpt freeze --graph export_dir/ -o frozen.pb     a SavedModel: serving_default's outputs, its variables/
  ckpt freeze --graph model/CNN.ckpt.meta                    (no --outputs: list the likely outputs and stop)
  ckpt freeze --graph model/CNN.ckpt.meta --outputs ArgMax -o CNN.pb --json | jq .variables

Exit status: 0 frozen, 2 on trouble (also when --outputs or -o is missing: the likely outputs are listed).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "freeze", help="turn a graph + checkpoint into one frozen .pb/.pbtxt (variables become constants)",
        description="Freeze a graph: keep what the outputs need, replace its variables by constants holding the "
                    "checkpoint's values (TensorFlow's convert_variables_to_constants), and write a GraphDef.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", "-g", required=True, help="the graph: .meta, .pb or .pbtxt (or a checkpoint prefix)")
    p.add_argument("--checkpoint", "-c",
                   help="checkpoint prefix, one of its files, or a directory (default: the prefix of a .meta graph); "
                        "its tensors named like a Const node replace that constant (fine-tuned constants)")
    p.add_argument("--outputs", help="comma-separated output operation names, e.g. ArgMax or y,loss")
    p.add_argument("--output", "-o", metavar="FILE", help="where to write the frozen graph (.pb, or .pbtxt for text)")
    p.add_argument("--text", action="store_true", help="write text format whatever the file name")
    p.add_argument("--clear-devices", action="store_true", help="drop device placements")
    p.add_argument("--json", action="store_true",
                   help="machine-readable summary (without --outputs: the candidate outputs)")
    p.set_defaults(func=run)


def _default_checkpoint(graph_path: str) -> str:
    if graph_path.endswith(".meta"):
        return graph_path[: -len(".meta")]
    if os.path.isdir(graph_path):
        return graph_path
    if os.path.exists(graph_path + ".index"):
        return graph_path
    raise CheckpointNotFoundError(f"--checkpoint is needed: {graph_path} is not a .meta file beside a checkpoint",
                                  path=graph_path)


def _explain(graph, graph_arg: str) -> None:
    err = sys.stderr
    print("ckpt freeze needs --outputs: the operations whose values the frozen graph must compute.\n", file=err)
    outputs = graph.outputs
    predictions = [op for op in graph.predictions if op not in outputs]

    def line(op) -> str:
        needs = graph.needed_inputs(op.name)
        return f"  {escape(op.name):<32} {escape(op.type):<18} needs: {', '.join(map(escape, needs)) or 'no inputs'}"

    if outputs:
        print(f"Likely outputs of {escape(graph_arg)} (nothing in the model consumes them):", file=err)
        for op in outputs:
            print(line(op), file=err)
    if predictions:
        print("\nPrediction-like operations (they feed a loss or metric that also needs the labels):", file=err)
        for op in predictions:
            print(line(op), file=err)
    if not outputs and not predictions:
        print(f"No obvious outputs in {escape(graph_arg)}; `ckpt graph {escape(graph_arg)}` lists every operation.",
              file=err)
    suggestion = (predictions or outputs)[:1]
    print("\nSaver (save/*), initializer (init, */Assign) and training (gradients/*, optimizer) nodes are not "
          f"candidates. `ckpt graph {escape(graph_arg)} --outputs` prints this list; `ckpt graph {escape(graph_arg)}` "
          "every operation.", file=err)
    if suggestion:
        print(f"\nexample: ckpt freeze --graph {escape(graph_arg)} --outputs {escape(suggestion[0].name)} "
              "-o frozen.pb", file=err)


def _candidates_json(graph) -> dict:
    outputs = graph.outputs
    return {"error": "--outputs is required", "graph": graph.path,
            "outputs": [{"name": op.name, "type": op.type, "needs": graph.needed_inputs(op.name)} for op in outputs],
            "predictions": [{"name": op.name, "type": op.type, "needs": graph.needed_inputs(op.name)}
                            for op in graph.predictions if op not in outputs]}


def run(args: argparse.Namespace) -> int:
    graph = load(args.graph)
    saved_model = hasattr(graph, "signature_specs")
    if not args.outputs and saved_model and "serving_default" in graph.signature_specs:
        args.outputs = ",".join(t.name for t in graph.signature_specs["serving_default"].outputs.values())
    if not args.outputs:
        if args.json:
            print_json(_candidates_json(graph))
        else:
            _explain(graph, args.graph)
        return 2
    if not args.output:
        print("Error: -o/--output FILE is required (e.g. -o frozen.pb)", file=sys.stderr)
        return 2
    checkpoint = args.checkpoint or (graph.variables_prefix if saved_model else
                                     _default_checkpoint(graph.path or args.graph))
    frozen, done = _freeze(graph, checkpoint, args.outputs, clear_devices=args.clear_devices)
    path = frozen.save(args.output, text=True if args.text else None)
    size = os.path.getsize(path)
    if args.json:
        print_json({"graph": graph.path, "checkpoint": os.fspath(checkpoint), "output": str(path), "bytes": size,
                    "variables": list(done["variables"]), "constants": list(done["constants"]),
                    "operations": len(frozen), "operations_before": len(graph),
                    "outputs": [o.strip() for o in args.outputs.split(",") if o.strip()]})
        return 0
    changed = f" and {len(done['constants'])} constant(s) with new values" if done["constants"] else ""
    print(f"froze {len(done['variables'])} variable(s){changed} into {escape(str(path))}: {len(frozen)} of "
          f"{len(graph)} operations kept, {human_bytes(size)}")
    return 0
