"""``ckpt graph``: list a graph file's operations, inputs, outputs and variables; draw it; hand it to TensorBoard."""

from __future__ import annotations

import argparse
import sys

from ..graph import load, write_events, write_html
from ..graph._attrs import _shape_text
from ._output import escape, print_json

EXAMPLES = """examples:
  ckpt graph model/regressionModel.ckpt.meta        every operation as "name type" (import_meta_graph's order)
  ckpt graph model/                                 the .meta of the newest checkpoint in a directory
  ckpt graph model/CNN.pb --inputs --outputs        placeholders to feed, and operations nothing consumes
  ckpt graph model/CNN.ckpt.meta --variables        variables with dtype, shape and checkpoint name
  ckpt graph model/CNN.pb --html cnn.html           interactive page (works offline, opens in any browser)
  ckpt graph model/CNN.pb --logdir logs/            events file: tensorboard --logdir logs/ -> Graphs tab
  ckpt graph model/CNN.pb --save model/CNN.pbtxt    convert between binary and text
  ckpt graph model/CNN.pb --json | jq '.operations[].type' | sort | uniq -c
  ckpt graph export_dir/                            a SavedModel: its signatures, then its operations
  ckpt graph export_dir/ --signatures --tags serve  signatures of the meta graph tagged {serve}
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "graph", help="list, draw or export a graph file (.meta, .pb, .pbtxt)",
        description="Read a TensorFlow graph file (.meta MetaGraphDef, .pb binary or .pbtxt text GraphDef, or the "
                    "graph in an events file) without TensorFlow, and list its operations as 'name type' lines.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="graph file, checkpoint prefix (its .meta), checkpoint directory or SavedModel "
                                "directory")
    p.add_argument("--signatures", action="store_true",
                   help="only the signatures (inputs and outputs with dtypes and shapes) of a SavedModel or .meta")
    p.add_argument("--tags", default="serve",
                   help="SavedModel: comma-separated tag set of the meta graph to open (default: serve)")
    p.add_argument("--inputs", action="store_true", help="only the placeholders the model is fed through")
    p.add_argument("--outputs", action="store_true",
                   help="only operations nothing in the model consumes (saver, init and training nodes left out)")
    p.add_argument("--variables", action="store_true", help="only variables, with their checkpoint names")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--html", metavar="FILE", help="write a self-contained interactive page")
    p.add_argument("--logdir", metavar="DIR", help="write a TensorBoard events file holding the graph into DIR")
    p.add_argument("--save", metavar="FILE",
                   help="write the graph again (.pbtxt: text, .pb: binary GraphDef, .meta: MetaGraphDef)")
    p.set_defaults(func=run)


def _tensor(op):
    outputs = op.outputs
    return outputs[0] if outputs else None


def run(args: argparse.Namespace) -> int:
    graph = load(args.path, tags=tuple(t for t in args.tags.split(",") if t))
    written = []
    if args.html:
        written.append(("html", str(write_html(graph, args.html))))
    if args.logdir:
        written.append(("events", str(write_events(graph, args.logdir))))
    if args.save:
        written.append(("graph", str(graph.save(args.save))))
    sections = [name for name in ("signatures", "inputs", "outputs", "variables") if getattr(args, name)]
    listing = bool(sections) or not written
    saved_model = hasattr(graph, "signature_specs")

    if args.json:
        kind = "SavedModel" if saved_model else "MetaGraphDef" if graph.meta_graph_def is not None else "GraphDef"
        doc = {"path": graph.path, "kind": kind, "producer": graph.producer, "written": {k: v for k, v in written}}
        if saved_model:
            doc["tags"] = sorted(graph.tags)
            if not sections and listing:
                doc["signatures"] = _rows(graph, "signatures", json=True)
        if not sections and listing:
            doc["operations"] = [{"name": op.name, "type": op.type, "device": op.device,
                                  "inputs": [str(i) for i in op.inputs], "attrs": op.attr_summaries()}
                                 for op in graph.operations]
        for name in sections:
            doc[name] = _rows(graph, name, json=True)
        if "outputs" in sections:
            doc["predictions"] = [op.name for op in graph.predictions]
        print_json(doc)
        return 0

    for kind, path in written:
        print(f"wrote {kind}: {escape(path)}")
    if written and args.logdir:
        print(f"  view it with: tensorboard --logdir {escape(args.logdir)}  (Graphs tab)", file=sys.stderr)
    if not listing:
        return 0
    if not sections:
        if saved_model:
            print(f"# signatures (tags: {', '.join(sorted(graph.tags))})")
            for row in _rows(graph, "signatures"):
                print(" ".join(row))
            print("# operations")
        for op in graph.operations:
            print(f"{escape(op.name)} {escape(op.type)}")
        return 0
    for name in sections:
        if len(sections) > 1:
            print(f"# {name}")
        rows = _rows(graph, name)
        for row in rows:
            print(" ".join(row))
        if not rows:
            print(f"(no {name})", file=sys.stderr)
    if "outputs" in sections:
        extra = [op for op in graph.predictions if op not in graph.outputs]
        if extra:
            names = ", ".join(escape(op.name) for op in extra)
            print(f"hint: {names} look{'s' if len(extra) == 1 else ''} like the model's prediction: it feeds a loss "
                  "or metric that also needs the labels; freeze with that as the output", file=sys.stderr)
    return 0


def _signature_specs(graph) -> dict:
    if hasattr(graph, "signature_specs"):
        return graph.signature_specs
    from ..graph._saved_model import Signature, TensorSpec

    out = {}  # a .meta's signature_def: names only, plus what the graph says about the tensors
    for key, sig in graph.signatures.items():
        def specs(names):
            found = {}
            for k, name in names.items():
                try:
                    t = graph.get_tensor_by_name(name)
                    found[k] = TensorSpec(k, name, t.dtype, t.shape)
                except Exception:  # a signature naming a tensor the graph lacks: show the name alone
                    found[k] = TensorSpec(k, name, None, None)
            return found
        out[key] = Signature(key, specs(sig["inputs"]), specs(sig["outputs"]), sig["method_name"])
    return out


def _rows(graph, section: str, json: bool = False):
    rows = []
    if section == "signatures":
        for key, sig in _signature_specs(graph).items():
            if json:
                rows.append({"key": key, "method_name": sig.method_name, **{
                    side: [{"key": t.key, "name": t.name, "dtype": t.dtype,
                            "shape": None if t.shape is None else list(t.shape)} for t in specs.values()]
                    for side, specs in (("inputs", sig.inputs), ("outputs", sig.outputs))}})
                continue
            rows.append([escape(key)] + ([f"({escape(sig.method_name)})"] if sig.method_name else []))
            for side, specs in (("input ", sig.inputs), ("output", sig.outputs)):
                for t in specs.values():
                    rows.append([f"  {side}", f"{escape(t.key)}:", escape(t.name), t.dtype or "?",
                                 _shape_text(t.shape)])
        return rows
    if section == "variables":
        for v in graph.variables:
            if json:
                rows.append({"name": v.name, "type": v.type, "dtype": v.dtype,
                             "shape": None if v.shape is None else list(v.shape),
                             "checkpoint_name": v.checkpoint_name, "trainable": v.trainable, "device": v.device,
                             "partition": None if v.partition is None else
                             {"full_shape": list(v.partition[0]), "offset": list(v.partition[1])}})
                continue
            row = [escape(v.name), v.type, v.dtype or "?", _shape_text(v.shape)]
            if v.checkpoint_name != v.name:
                row.append(f"-> {escape(v.checkpoint_name)}")
            rows.append(row)
        return rows
    ops = graph.inputs if section == "inputs" else graph.outputs
    for op in ops:
        tensor = _tensor(op)
        dtype = tensor.dtype if tensor else None
        shape = tensor.shape if tensor else None
        if json:
            rows.append({"name": op.name, "type": op.type, "dtype": dtype,
                         "shape": None if shape is None else [d for d in shape],
                         "needs": graph.needed_inputs(op.name) if section == "outputs" else None})
        else:
            rows.append([escape(op.name), escape(op.type), dtype or "?", _shape_text(shape)])
    return rows

