"""Reading and writing graph files: binary and text GraphDef / MetaGraphDef, and the graph inside an events file.

The kind of file is decided from its content, the extension only breaks ties: text files start with a field name
(``node {``, ``meta_info_def {``), events files with a TFRecord header whose CRC checks out, and binary files are
parsed as both GraphDef and MetaGraphDef and the plausible reading wins (both start with field 1, so the first byte
alone cannot tell them apart).

Everything read is treated as untrusted: the file size is capped before it is read, protobuf decoding errors become
:class:`~ckpt.CorruptCheckpointError` naming the file, and the decoded graph is checked for what TensorFlow's
importer would reject (nameless nodes, duplicate names, malformed or dangling inputs).

Writes are atomic (temporary file, fsync, rename) and use the exact forms ``tf.io.write_graph`` uses: deterministic
binary serialization, or ``text_format.MessageToString``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from ..errors import CheckpointNotFoundError, CorruptCheckpointError
from ..tf import events as _events
from ..tf.protos import event_pb2, graph_pb2, meta_graph_pb2
from ._opdefs import is_variadic, output_count

__all__ = ["GraphFile", "read_graph_file", "parse_graph_bytes", "write_message", "write_bytes", "MAX_GRAPH_BYTES",
           "resolve_graph_path", "check_graph_def", "output_counts", "known_output_count", "MAX_OUTPUTS"]

#: Largest graph file read. Protobuf messages cannot exceed 2 GiB, so anything bigger is not a graph; the check
#: happens before a byte is read.
MAX_GRAPH_BYTES = (1 << 31) - 1

_TEXT_START = re.compile(rb"\A(?:\s*#[^\n]*\n)*\s*([A-Za-z_][A-Za-z0-9_]*)\s*[:{<]")
_META_FIELDS = {f.name for f in meta_graph_pb2.MetaGraphDef.DESCRIPTOR.fields}
_GRAPH_FIELDS = {f.name for f in graph_pb2.GraphDef.DESCRIPTOR.fields}
_INPUT = re.compile(r"\A\^?[^\^:]+(?::\d+)?\Z", re.S)

# How many outputs an operation has comes from TensorFlow 2.21's OpDefs (``_opdefs``), for the op types ckpt knows
# (every type to_torch runs, the Saver's, initialisers', control flow and common training ops). A graph file's input
# "x:N" is checked against these: the index is an untrusted number and must never size a list.

#: Highest number of outputs ckpt accepts for an operation whose count it cannot tell (an op type it does not
#: know, without ``_output_shapes``): an input ``"op:N"`` beyond it is refused as malformed.
MAX_OUTPUTS = 1 << 12


def known_output_count(node) -> int | None:
    """How many outputs ``node`` has by its op type's OpDef, or None when ckpt does not know the type."""
    return output_count(node)


def output_counts(graph: graph_pb2.GraphDef, path: str) -> dict[str, int]:
    """Each node's number of outputs as far as the file tells, checking every ``"op:N"`` input against it.

    The count is the op's known output count (:func:`known_output_count`) when that is small and fixed, else the
    largest of ``_output_shapes``' length and the highest index used; so it never exceeds what the file spells out
    or the OpDef allows, and the total over the graph stays proportional to the file's size.

    Raises:
        CorruptCheckpointError: an input names an output its producer does not have (all listed, up to 5).
    """
    nodes = {node.name: node for node in graph.node}
    highest: dict[str, int] = {}
    for node in graph.node:
        for raw in node.input:
            if raw.startswith("^"):
                continue
            head, sep, tail = raw.rpartition(":")
            if sep and tail.isdigit() and head:
                index = int(tail) if len(tail) <= 12 else 10 ** 12  # int() of a huge digit string is refused
                if index > highest.get(head, -1):
                    highest[head] = index
            elif raw not in highest:
                highest[raw] = 0
    problems: list[str] = []
    counts: dict[str, int] = {}
    total_listed = 0
    for name, node in nodes.items():
        known = known_output_count(node)
        listed = len(node.attr["_output_shapes"].list.shape) if "_output_shapes" in node.attr else 0
        total_listed += listed
        used = highest.get(name, -1) + 1
        limit = known if known is not None else max(listed, MAX_OUTPUTS)
        if used > limit:
            what = f"{limit} output(s)" if known is not None else f"no output {used - 1} ckpt can accept (an op " \
                f"ckpt does not know, without _output_shapes, is allowed {MAX_OUTPUTS})"
            problems.append(f"an input refers to {name}:{used - 1}, but {name!r} ({node.op}) has {what}")
            if len(problems) >= 5:
                break
            continue
        if known is not None and (not is_variadic(node.op) or known <= max(listed, MAX_OUTPUTS)):
            counts[name] = known
        else:
            counts[name] = max(listed, used, 0 if known == 0 else 1)
    # Each output ckpt describes costs memory; high indices used once each could still add up to far more
    # outputs than the file has entries. Allow a generous multiple of what the file spells out.
    budget = 16 * (len(nodes) + sum(len(node.input) for node in graph.node)) + total_listed + MAX_OUTPUTS
    if not problems and sum(counts.values()) > budget:
        problems.append(f"its inputs refer to {sum(counts.values()):,} outputs in all, more than {budget:,} for a "
                        f"graph of {len(nodes):,} nodes")
    if problems:
        raise CorruptCheckpointError(f"{path}: the graph is malformed: {'; '.join(problems)}", path=path,
                                     found=problems)
    return counts


@dataclass
class GraphFile:
    """What a graph file held.

    Attributes:
        graph_def: The GraphDef (from the MetaGraphDef when the file held one).
        meta_graph_def: The MetaGraphDef, or None for a plain GraphDef.
        format: ``"binary"``, ``"text"`` or ``"events"``.
        path: Where it was read from.
    """

    graph_def: graph_pb2.GraphDef
    meta_graph_def: meta_graph_pb2.MetaGraphDef | None
    format: str
    path: str


def resolve_graph_path(path: str | os.PathLike) -> str:
    """A graph file path from what a user passes: a file, a checkpoint prefix (its ``.meta``) or a checkpoint
    directory (the ``.meta`` of its newest checkpoint).

    Raises:
        CheckpointNotFoundError: nothing usable there.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    tried = [path]
    if os.path.isdir(path):
        from ..tf.state_file import latest

        prefix = latest(path)
        if prefix is not None:
            tried.append(prefix + ".meta")
            if os.path.isfile(prefix + ".meta"):
                return prefix + ".meta"
        metas = sorted(p for p in os.listdir(path) if p.endswith(".meta"))
        if metas:
            return os.path.join(path, metas[-1])
        raise CheckpointNotFoundError(f"{path} is a directory without a .meta graph file (tried {', '.join(tried)})",
                                      path=path, tried=tried)
    if os.path.isfile(path + ".meta"):
        return path + ".meta"
    tried.append(path + ".meta")
    raise CheckpointNotFoundError(f"no graph file at {path} (tried {', '.join(tried)})", path=path, tried=tried)


def read_graph_file(path: str | os.PathLike, *, max_bytes: int = MAX_GRAPH_BYTES, validate: bool = True) -> GraphFile:
    """Read and decode a ``.meta``, ``.pb``, ``.pbtxt`` or events file (see the module docstring).

    Raises:
        CheckpointNotFoundError: no such file.
        CorruptCheckpointError: the file is not a well-formed graph (message names the file).
    """
    path = resolve_graph_path(path)
    size = os.path.getsize(path)
    if size > max_bytes:
        raise CorruptCheckpointError(
            f"{path}: {size:,} bytes is larger than any graph file can be (limit {max_bytes:,} bytes)",
            path=path, expected=f"<= {max_bytes}", found=size)
    from .. import _fs

    with _fs.open_read(path) as f:
        buf = f.read(min(size, max_bytes) + 1)  # read(n) allocates n bytes up front, whatever the file holds
    return parse_graph_bytes(buf, path=path, validate=validate)


def parse_graph_bytes(buf: bytes, *, path: str = "<bytes>", validate: bool = True) -> GraphFile:
    """Decode graph-file bytes; ``path`` is only used for messages and to break ties by extension."""
    if not buf:
        raise CorruptCheckpointError(f"{path}: the file is empty", path=path, expected="a GraphDef or MetaGraphDef",
                                     found="0 bytes")
    match = _TEXT_START.match(buf)
    if match and _is_text(buf):
        result = _parse_text(buf, match.group(1).decode("ascii"), path)
    elif _events.looks_like_records(buf):
        result = _parse_events(buf, path)
    else:
        result = _parse_binary(buf, path)
    if validate:
        check_graph_def(result.graph_def, path)
    return result


def _is_text(buf: bytes) -> bool:
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_text(buf: bytes, first_field: str, path: str) -> GraphFile:
    is_meta = first_field in _META_FIELDS and first_field not in _GRAPH_FIELDS
    message = meta_graph_pb2.MetaGraphDef() if is_meta else graph_pb2.GraphDef()
    try:
        text_format.Parse(buf.decode("utf-8"), message)
    except Exception as exc:  # text_format.ParseError, RecursionError on absurd nesting
        kind = "MetaGraphDef" if is_meta else "GraphDef"
        raise CorruptCheckpointError(f"{path}: not a valid text {kind}: {exc}", path=path) from None
    if is_meta:
        return GraphFile(message.graph_def, message, "text", path)
    return GraphFile(message, None, "text", path)


def _parse_events(buf: bytes, path: str) -> GraphFile:
    graph_bytes = meta_bytes = None
    for i, data in enumerate(_events.read_records(buf, path=path)):
        event = event_pb2.Event()
        try:
            event.ParseFromString(data)
        except Exception as exc:
            raise CorruptCheckpointError(f"{path}: record {i} is not an Event ({exc})", path=path) from None
        what = event.WhichOneof("what")
        if what == "graph_def" and graph_bytes is None:
            graph_bytes = event.graph_def
        elif what == "meta_graph_def" and meta_bytes is None:
            meta_bytes = event.meta_graph_def
    if graph_bytes is None and meta_bytes is None:
        raise CorruptCheckpointError(f"{path}: this events file holds no graph (no graph_def or meta_graph_def "
                                     "event)", path=path, expected="a graph event", found="none")
    meta = None
    if meta_bytes is not None:
        meta = _decode(meta_graph_pb2.MetaGraphDef(), meta_bytes, path, "MetaGraphDef")
    if graph_bytes is not None:
        graph = _decode(graph_pb2.GraphDef(), graph_bytes, path, "GraphDef")
        if meta is not None and meta.graph_def != graph:
            meta = None
        return GraphFile(graph, meta, "events", path)
    return GraphFile(meta.graph_def, meta, "events", path)


def _decode(message, data: bytes, path: str, kind: str):
    try:
        message.ParseFromString(data)
    except Exception as exc:  # DecodeError, or upb's recursion limit
        raise CorruptCheckpointError(f"{path}: not a valid binary {kind} ({exc or type(exc).__name__}); the file "
                                     "is truncated or damaged", path=path) from None
    return message


def _graph_plausible(graph: graph_pb2.GraphDef) -> bool:
    if not graph.node and not graph.HasField("versions") and not graph.HasField("library"):
        return False
    return all(n.name and n.op for n in graph.node)


def _meta_plausible(meta: meta_graph_pb2.MetaGraphDef) -> bool:
    if not (meta.HasField("graph_def") or meta.HasField("meta_info_def")):
        return False
    info = meta.meta_info_def
    if not meta.HasField("graph_def") and not (info.stripped_op_list.op or info.tensorflow_version):
        return False
    return not meta.HasField("graph_def") or _graph_plausible(meta.graph_def)


def _parse_binary(buf: bytes, path: str) -> GraphFile:
    readings: dict[str, object] = {}
    errors: dict[str, str] = {}
    fallback = None
    for kind, cls in (("meta", meta_graph_pb2.MetaGraphDef), ("graph", graph_pb2.GraphDef)):
        message = cls()
        try:
            message.ParseFromString(buf)
        except Exception as exc:  # DecodeError, or upb's recursion limit
            errors[kind] = str(exc) or type(exc).__name__
            continue
        if (_meta_plausible if kind == "meta" else _graph_plausible)(message):
            readings[kind] = message
        elif kind == "graph" and message.node:
            fallback = message  # decodes, but with nameless or op-less nodes: validation says which
    if not readings and fallback is not None:
        readings["graph"] = fallback
    if "meta" in readings and "graph" in readings:
        # Both readings make sense (rare for real files): let the extension decide, defaulting to GraphDef.
        prefer = "meta" if path.endswith(".meta") else "graph"
        readings = {prefer: readings[prefer]}
    if "meta" in readings:
        meta = readings["meta"]
        return GraphFile(meta.graph_def, meta, "binary", path)
    if "graph" in readings:
        return GraphFile(readings["graph"], None, "binary", path)
    kind = "MetaGraphDef" if path.endswith(".meta") else "GraphDef"
    detail = errors.get("meta" if kind == "MetaGraphDef" else "graph") or "its fields do not form a graph"
    raise CorruptCheckpointError(f"{path}: not a valid binary {kind} ({detail}); the file is truncated or damaged, "
                                 "or it is not a TensorFlow graph file", path=path, expected=kind)


def check_graph_def(graph: graph_pb2.GraphDef, path: str) -> None:
    """Raise CorruptCheckpointError for what TensorFlow's importer rejects: nodes without a name or an op,
    duplicate names, malformed inputs, data inputs after control inputs, inputs naming no node, and inputs naming
    an output their producer does not have (``x:1000000000`` of a Placeholder)."""
    names: set[str] = set()
    problems: list[str] = []
    for i, node in enumerate(graph.node):
        if not node.name or not node.op:
            problems.append(f"node #{i} has no {'name' if not node.name else 'op'}")
        elif node.name in names:
            problems.append(f"node name {node.name!r} appears twice")
        names.add(node.name)
        if len(problems) >= 5:
            break
    for node in graph.node:
        seen_control = False
        for raw in node.input:
            if not _INPUT.match(raw):
                problems.append(f"node {node.name!r} has a malformed input {raw!r}")
                continue
            control = raw.startswith("^")
            if seen_control and not control:
                problems.append(f"node {node.name!r} has data input {raw!r} after a control input")
            seen_control = seen_control or control
            source = raw[1:] if control else raw.rsplit(":", 1)[0] if ":" in raw else raw
            if source not in names:
                problems.append(f"node {node.name!r} has input {raw!r} but there is no node {source!r}")
        if len(problems) >= 5:
            break
    if problems:
        raise CorruptCheckpointError(f"{path}: the graph is malformed: {'; '.join(problems)}", path=path,
                                     found=problems)
    output_counts(graph, path)


def write_message(message, path: str | os.PathLike, *, text: bool = False, sync: bool = True) -> Path:
    """Write a protobuf message as ``tf.io.write_graph`` would (deterministic binary or text), atomically."""
    data = text_format.MessageToString(message).encode("utf-8") if text else message.SerializeToString(
        deterministic=True)
    return write_bytes(data, path, sync=sync)


def write_bytes(data: bytes, path: str | os.PathLike, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, directory fsync) through the file-system
    seam that the fault-injection tests exercise."""
    from .. import _fs

    path = Path(path)
    _fs.makedirs(str(path.parent))
    _fs.write_atomic(str(path), data, sync=sync)
    return path
