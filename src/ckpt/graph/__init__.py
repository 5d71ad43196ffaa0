"""TensorFlow graph files without TensorFlow: read, list, freeze, export and visualise.

* :func:`to_torch` runs a graph with PyTorch (``module.run(fetches, feed_dict)`` like ``sess.run``);
  :func:`decode_jpeg` decodes as TensorFlow's ``DecodeJpeg`` does, :func:`load_labels` and :func:`top_k` turn a
  classifier's scores into named classes.
* :func:`load` reads ``.meta`` (MetaGraphDef, written beside TF1 checkpoints), ``.pb`` (binary GraphDef),
  ``.pbtxt`` (text GraphDef or MetaGraphDef) and the graph in a TensorBoard events file, deciding from the content.
* :func:`freeze` turns a graph plus a checkpoint into a frozen GraphDef, as ``convert_variables_to_constants`` does.
* :func:`export_meta_graph` writes a ``.meta``; :func:`from_torch` builds a GraphDef for a PyTorch module, so any
  framework gets a structure file TensorBoard and Netron can show.
* :class:`GraphBuilder` edits graphs: import under a scope, add ops and constants on named tensors, rewire, rename,
  prune, and write ``.pb``/``.pbtxt``/``.meta`` files TensorFlow imports and runs.
* :func:`write_html` / :func:`show` draw a graph as an interactive page; :func:`write_events` writes an events file
  for ``tensorboard --logdir``.

Example:
    >>> import ckpt.graph                                                  # doctest: +SKIP
    >>> g = ckpt.graph.load("model/CNN.ckpt.meta")
    >>> [op.name for op in g.inputs], [op.name for op in g.predictions]
    (['inputs/x_input', 'inputs/y_input', 'keep_prob'], ['ArgMax'])
    >>> ckpt.graph.freeze(g, "model/", ["ArgMax"]).save("model/CNN.pb")
"""

from __future__ import annotations

import os
from pathlib import Path

from ..tf import events as _events
from ..tf.protos import event_pb2
from ..tf.tensor_proto import make_ndarray, make_tensor_proto
from ._attrs import AttrPlaceholder, Func, decode_attr
from ._build import DType, GraphBuilder, Shape, attr_value, node_name
from ._files import MAX_GRAPH_BYTES, read_graph_file, write_message
from ._freeze import extract_sub_graph, freeze
from ._html import GraphView, render_html, show, write_html
from ._image import decode_jpeg, load_labels, top_k
from ._model import Graph, Input, Operation, SaverInfo, Tensor, Variable, _wrap_meta
from ._saved_model import DEFAULT_TAGS, SavedModelGraph, Signature, TensorSpec, load_saved_model, saved_model_file

__all__ = [
    "load", "Graph", "Operation", "Tensor", "Input", "Variable", "SaverInfo", "Func", "AttrPlaceholder",
    "freeze", "extract_sub_graph", "export_meta_graph", "from_torch", "write_events", "write_html",
    "render_html", "show", "GraphView", "decode_attr", "make_tensor_proto", "make_ndarray", "MAX_GRAPH_BYTES",
    "meta_writer", "to_torch", "SavedModelGraph", "Signature", "TensorSpec", "GraphBuilder", "DType", "Shape",
    "attr_value", "node_name",
]


def load(path: str | os.PathLike, *, validate: bool = True, max_bytes: int = MAX_GRAPH_BYTES,
         tags=DEFAULT_TAGS) -> Graph:
    """Read a graph file or a SavedModel.

    Args:
        path: A ``.meta``, ``.pb``, ``.pbtxt`` or events file; a checkpoint prefix (its ``.meta``); a
            checkpoint directory (the ``.meta`` of its newest checkpoint); or a SavedModel directory or its
            ``saved_model.pb``. The format is detected from the content.
        validate: Reject graphs TensorFlow could not import (duplicate names, inputs naming missing nodes).
        max_bytes: Refuse larger files without reading them.
        tags: For a SavedModel: the tag set of the meta graph to open (default ``{"serve"}``).

    Returns:
        A :class:`Graph`; for a SavedModel a :class:`SavedModelGraph` (with ``signature_specs``, and variables
        named by the checkpoint keys of ``variables/``).

    Raises:
        CheckpointNotFoundError: no such file.
        CorruptCheckpointError: the file is not a well-formed graph (truncated, damaged, or something else).

    Example:
        >>> g = ckpt.graph.load("model/regressionModel.ckpt.meta")        # doctest: +SKIP
        >>> for op in g.get_operations():
        ...     print(op.name, op.type)
    """
    if saved_model_file(path) is not None:
        return load_saved_model(path, tags=tags, validate=validate, max_bytes=max_bytes)
    found = read_graph_file(path, max_bytes=max_bytes, validate=validate)
    return Graph(found.graph_def, meta_graph_def=found.meta_graph_def, path=found.path, validate=False)


def _as_graph(graph, *, check: bool = True) -> Graph:
    """The graph to write; one whose constants a live to_torch module has trained is refused (``check``)."""
    if isinstance(graph, Graph):
        if check:
            from ._freeze import _check_not_tuned

            _check_not_tuned(graph)
        return graph
    if hasattr(graph, "_current_graph"):  # a to_torch module: its graph with the constants' current values
        return graph._current_graph()
    if isinstance(graph, (str, os.PathLike)):
        return load(graph)
    return Graph(graph)


def export_meta_graph(graph, path: str | os.PathLike, *, text: bool | None = None, clear_devices: bool = False,
                      sync: bool = True) -> Path:
    """Write a MetaGraphDef file (``.meta``), as ``Saver.save`` writes beside a checkpoint.

    Args:
        graph: A :class:`Graph`, a GraphDef or MetaGraphDef (ckpt's or TensorFlow's), a ``tf.Graph``, a path, or
            a :func:`to_torch` module (its graph with the constants' current values; variables stay variables,
            their values are what ``ckpt.save(module, ...)`` writes). A graph read from a ``.meta`` keeps its
            collections, saver and signatures.
        path: Destination, written atomically.
        text: Write text format; default: when ``path`` ends in ``.pbtxt``/``.txt``.
        clear_devices: Drop device placements from every node.
        sync: fsync before renaming into place.

    Returns:
        The path written.
    """
    g = _as_graph(graph)
    meta = _wrap_meta(g.graph_def) if g.meta_graph_def is None else g.meta_graph_def
    if clear_devices:
        copy = type(meta)()
        copy.CopyFrom(meta)
        for node in copy.graph_def.node:
            node.device = ""
        meta = copy
    path = Path(path)
    if text is None:
        text = path.suffix.lower() in (".pbtxt", ".txt")
    return write_message(meta, path, text=text, sync=sync)


def write_events(graph, logdir: str | os.PathLike, *, suffix: str = "") -> Path:
    """Write a TensorBoard events file holding the graph, so ``tensorboard --logdir`` shows it under Graphs.

    The file has TensorFlow's framing and records: ``file_version: "brain.Event:2"``, then a ``graph_def`` event
    (and a ``meta_graph_def`` event when the graph came from a MetaGraphDef, as TF1's ``FileWriter`` writes).

    Returns:
        The new file's path (``logdir/events.out.tfevents.<seconds>.<host><suffix>``).
    """
    import time

    g = _as_graph(graph, check=False)  # a picture of the structure, not a model to run
    now = time.time()
    records = [event_pb2.Event(wall_time=now, graph_def=g.graph_def.SerializeToString(deterministic=True))]
    if g.meta_graph_def is not None:
        records.append(event_pb2.Event(wall_time=now,
                                       meta_graph_def=g.meta_graph_def.SerializeToString(deterministic=True)))
    return _events.write_events(logdir, records, suffix=suffix)


def from_torch(module, example_inputs, *, method: str = "auto") -> Graph:
    """A GraphDef describing a PyTorch module, for TensorBoard, Netron and ``ckpt graph``.

    See :func:`ckpt.graph.torch.from_torch.from_torch` (imported lazily: only this function needs torch).
    """
    from .torch.from_torch import from_torch as _from_torch

    return _from_torch(module, example_inputs, method=method)


def to_torch(graph_or_path, checkpoint=None, *, inputs=None, outputs=None, constants_as_parameters=False,
             signature=None, tags=DEFAULT_TAGS):
    """A TensorFlow graph + checkpoint (or a SavedModel signature) as a trainable ``torch.nn.Module``; see
    :func:`ckpt.graph.torch.interpreter.to_torch` (imported lazily: only this function needs torch)."""
    from .torch.interpreter import to_torch as _to_torch

    return _to_torch(graph_or_path, checkpoint, inputs=inputs, outputs=outputs,
                     constants_as_parameters=constants_as_parameters, signature=signature, tags=tags)


def meta_writer(graph):
    """Check and serialize ``graph`` now; return ``write(prefix, *, sync=True)`` that writes ``PREFIX.meta``
    atomically later (``ckpt.save(..., graph=...)`` validates before writing the checkpoint, writes after).

    Raises:
        TypeError: ``graph`` is not something a MetaGraphDef can be made from.
    """
    from ._files import write_bytes

    g = _as_graph(graph)
    meta = _wrap_meta(g.graph_def) if g.meta_graph_def is None else g.meta_graph_def
    data = meta.SerializeToString(deterministic=True)

    def write(prefix: str, *, sync: bool = True) -> Path:
        return write_bytes(data, f"{os.fspath(prefix)}.meta", sync=sync)

    return write


__all__ += ["decode_jpeg", "load_labels", "top_k"]
