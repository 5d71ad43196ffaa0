"""Readable names for TensorFlow 2 object-based checkpoints, from their ``_CHECKPOINTABLE_OBJECT_GRAPH``
(docs/format.md section 4.2).

A TF2 bundle key spells out the object path plus TensorFlow's key grammar::

    model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE
    model/layer/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE

TensorFlow never parses these strings: restoring walks the ``TrackableObjectGraph`` stored in the checkpoint and
uses each ``SerializedTensor.checkpoint_key``. ckpt does the same to build *clean* names:

* a variable is named by the path of its object from the root, local names joined with ``/`` and not escaped
  (``model/layer/kernel``, ``model/config/scale/x``); an attribute other than ``VARIABLE_VALUE`` adds its name
  (``model/table/OBJECT_CONFIG_JSON``);
* an optimizer slot is attached to its variable, under the optimizer:
  ``<optimizer path>/<variable path>/<slot name>``, e.g. ``optimizer/model/layer/kernel/m``, the same shape as
  ckpt's PyTorch names (``optimizer/model/fc1/weight/exp_avg``). Slots are TensorFlow's ``slot_variables``; for
  Keras 3 optimizers, which have none, the slot lists that parallel ``_trainable_variables`` (``_momentums``,
  ``_velocities``) give ``optimizer/model/dense/kernel/momentum`` and ``.../velocity``;
* when an object is reachable by several paths (Keras 3 models are also tracked by their optimizer's
  ``_trainable_variables`` list), the path whose last step is a named attribute wins over one ending in a list
  index, then the shorter path, then TensorFlow's own breadth-first order;
* a leading ``_`` of a path element is dropped (Keras keeps ``Dense.kernel`` as ``_kernel``) unless that would make
  two siblings share a name;
* if two keys would still get the same clean name, both keep their raw key, so names stay unique and reversible;
* keys the graph does not mention keep their raw name; the graph tensor itself has no clean name.

Pure Python over ckpt's own copy of the schema; no TensorFlow needed.
"""

from __future__ import annotations

from collections import deque

from ..errors import CorruptCheckpointError
from .protos import trackable_object_graph_pb2

__all__ = ["OBJECT_GRAPH_KEY", "clean_names", "parse_object_graph"]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE = "VARIABLE_VALUE"
# A graph with more nodes than this is not a real model's object graph (each node costs at least 2 bytes of the
# serialized proto, so this also bounds the work a forged graph can cause).
_MAX_NODES = 10_000_000


def parse_object_graph(data: bytes, *, path: str | None = None) -> trackable_object_graph_pb2.TrackableObjectGraph:
    """Decode a serialized ``TrackableObjectGraph``.

    Raises:
        CorruptCheckpointError: the bytes are not a valid graph.
    """
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(bytes(data))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CorruptCheckpointError(f"{path or 'checkpoint'}: malformed {OBJECT_GRAPH_KEY} ({exc})", path=path,
                                     key=OBJECT_GRAPH_KEY) from None
    if len(graph.nodes) > _MAX_NODES:
        raise CorruptCheckpointError(f"{path or 'checkpoint'}: object graph has {len(graph.nodes)} nodes",
                                     path=path, key=OBJECT_GRAPH_KEY)
    return graph


def _paths(graph) -> dict[int, tuple[str, ...]]:
    """node id -> the preferred path of local names from the root (node 0)."""
    n = len(graph.nodes)
    if not n:
        return {}
    # 1. TensorFlow's own paths: breadth-first from the root, first found wins. Also collect every incoming edge.
    canonical: dict[int, tuple[str, ...]] = {0: ()}
    order = [0]
    incoming: dict[int, list[tuple[int, str]]] = {}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        for ref in graph.nodes[node_id].children:
            child = ref.node_id
            if not 0 <= child < n:
                continue
            incoming.setdefault(child, []).append((node_id, ref.local_name))
            if child not in canonical:
                canonical[child] = canonical[node_id] + (ref.local_name,)
                order.append(child)
                queue.append(child)
    # 2. Prefer an owner's attribute over a list that merely references the object, then the shorter path, then
    #    TensorFlow's order. Nodes are settled in breadth-first order, each from its parents' settled paths.
    preferred: dict[int, tuple[str, ...]] = {0: ()}
    for node_id in order[1:]:
        best = None
        for rank_order, (parent, local) in enumerate(incoming.get(node_id, ())):
            base = preferred.get(parent, canonical.get(parent))
            if base is None:
                continue
            path = base + (local,)
            rank = (local.isdigit(), len(path), rank_order)
            if best is None or rank < best[0]:
                best = (rank, path)
        preferred[node_id] = best[1] if best else canonical[node_id]
    return preferred


def _strip_private(paths: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    """Drop a leading ``_`` from path elements where no sibling already uses the stripped spelling."""
    siblings: dict[tuple[str, ...], set[str]] = {}
    for path in paths.values():
        for i, part in enumerate(path):
            siblings.setdefault(path[:i], set()).add(part)
    out = {}
    for node_id, path in paths.items():
        parts = []
        for i, part in enumerate(path):
            plain = part.lstrip("_")
            if plain and plain != part and plain not in siblings.get(path[:i], ()):
                part = plain
            parts.append(part)
        out[node_id] = tuple(parts)
    return out


def _singular(name: str) -> str:
    name = name.lstrip("_")
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def _slots(graph):
    """``(optimizer node, variable node, slot name, slot node)`` for every optimizer slot in the graph.

    Two kinds: TensorFlow's own ``slot_variables`` (``tf.compat.v1`` and ``tf.keras`` optimizers, slot names
    ``m``, ``v``, ``momentum``), and Keras 3 optimizers, which track their variables in a ``_trainable_variables``
    list and keep each kind of slot in a list of the same length, in the same order (``_momentums``,
    ``_velocities``): element ``i`` of such a list is the slot of variable ``i``, named by the list in the singular
    (``momentum``, ``velocity``), as Keras names the variables themselves.
    """
    nodes = graph.nodes
    for node_id, node in enumerate(nodes):
        for slot in node.slot_variables:
            yield node_id, slot.original_variable_node_id, slot.slot_name, slot.slot_variable_node_id
        children = {ref.local_name: ref.node_id for ref in node.children if 0 <= ref.node_id < len(nodes)}
        tracked = children.get("_trainable_variables")
        if tracked is None:
            continue
        variables = _indexed(nodes[tracked])
        if not variables:
            continue
        for list_name, list_id in children.items():
            if list_name in ("_trainable_variables", "_variables") or list_id == tracked:
                continue
            elements = _indexed(nodes[list_id])
            if elements is None or len(elements) != len(variables) or set(elements) & set(variables):
                continue
            if not all(nodes[e].attributes and not nodes[e].children for e in elements):
                continue
            for var, slot_node in zip(variables, elements):
                yield node_id, var, _singular(list_name), slot_node


def _indexed(node) -> list[int] | None:
    """The element node ids of a list-like object (children named 0, 1, ... n-1 and nothing else), else None."""
    refs = list(node.children)
    if not refs or [r.local_name for r in refs] != [str(i) for i in range(len(refs))]:
        return None
    return [r.node_id for r in refs]


def clean_names(data: bytes, keys: set[str] | None = None, *, path: str | None = None) -> dict[str, str]:
    """Map each raw bundle key named by the object graph ``data`` to its clean name (see the module docstring).

    Args:
        data: The serialized ``TrackableObjectGraph`` (the value of ``_CHECKPOINTABLE_OBJECT_GRAPH``).
        keys: The bundle's keys; when given, graph entries pointing at keys that do not exist are ignored.
        path: The checkpoint, for error messages.

    Returns:
        ``{raw key: clean name}``; keys absent from the mapping keep their raw name.
    """
    graph = parse_object_graph(data, path=path)
    paths = _strip_private(_paths(graph))
    proposed: dict[str, str] = {}

    def add(node_id: int, base: tuple[str, ...]) -> None:
        for attr in graph.nodes[node_id].attributes:
            key = attr.checkpoint_key
            if not key or (keys is not None and key not in keys) or key in proposed:
                continue
            parts = base if attr.name in (_VALUE, "", ".TENSORS") else base + (attr.name,)
            name = "/".join(parts)
            if name:
                proposed[key] = name

    # Slot variables first: a slot reachable through ordinary children too is still named after its variable.
    for owner, var, slot_name, slot_node in _slots(graph):
        if not 0 <= slot_node < len(graph.nodes) or var not in paths or owner not in paths:
            continue
        add(slot_node, paths[owner] + paths[var] + (slot_name,))
    for node_id, base in paths.items():
        add(node_id, base)

    counts: dict[str, int] = {}
    for name in proposed.values():
        counts[name] = counts.get(name, 0) + 1
    taken = set(keys or ()) - set(proposed)  # raw names that stay as they are
    return {key: name for key, name in proposed.items() if counts[name] == 1 and name not in taken}
