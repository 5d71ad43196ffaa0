"""SavedModels without TensorFlow: a directory with ``saved_model.pb`` (a ``SavedModel`` proto: one MetaGraphDef per
tag set, each with its graph, function library, signatures and object graph) and ``variables/variables.*`` (a
TensorFlow checkpoint).

:func:`load_saved_model` picks the meta graph by tag set (``{"serve"}`` by default) and returns a
:class:`SavedModelGraph`: a :class:`~ckpt.graph.Graph` whose variables carry the checkpoint keys the SavedModel's
own restore uses, and whose :attr:`~SavedModelGraph.signature_specs` list each signature's inputs and outputs with
names, dtypes and shapes.

How variables are found in the checkpoint:

* **TF2** (``tf.saved_model.save``, Keras ``model.export``): the graph holds one ``VarHandleOp`` per variable,
  captured by the signature's ``StatefulPartitionedCall``. The object graph (``object_graph_def``) says which of the
  call's trailing inputs are which saved objects (``SavedConcreteFunction.bound_inputs``); node ``i`` of the object
  graph is node ``i`` of the checkpoint's ``TrackableObjectGraph``, whose ``VARIABLE_VALUE`` attribute holds the key
  (``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``). That is how TensorFlow's loader binds them too.
* **TF1** (``SavedModelBuilder``): the graph's own Saver names the keys (``_saver_keys``), as for a ``.meta``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from ..errors import CheckpointNotFoundError, CorruptCheckpointError
from ..tf.protos import saved_model_pb2
from ..tf.tensor_proto import dtype_name, shape_from_proto
from ._files import MAX_GRAPH_BYTES, check_graph_def
from ._model import Graph, parse_input

__all__ = ["SavedModelGraph", "TensorSpec", "Signature", "load_saved_model", "saved_model_file",
           "DEFAULT_TAGS"]

DEFAULT_TAGS = ("serve",)
SAVED_MODEL_PB = "saved_model.pb"
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature.

    Attributes:
        key: The signature's name for it (``"x"``, ``"output_0"``).
        name: The graph tensor (``"serving_default_x:0"``).
        dtype: Type name (``"float32"``), None when the signature does not say.
        shape: Static shape with None for unknown dimensions; None for unknown rank.
    """

    key: str
    name: str
    dtype: str | None
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: ``inputs`` and ``outputs`` by key, and the method (``tensorflow/serving/predict``)."""

    key: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str


def saved_model_file(path: str | os.PathLike) -> str | None:
    """The ``saved_model.pb`` of a SavedModel directory, or ``path`` itself when it is a file of that name; None when
    ``path`` is not a SavedModel."""
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, SAVED_MODEL_PB)):
        return os.path.join(path, SAVED_MODEL_PB)
    if os.path.basename(path) == SAVED_MODEL_PB and os.path.isfile(path):
        return path
    return None


def _tag_text(tags) -> str:
    return "{" + ", ".join(repr(t) for t in sorted(tags)) + "}"


def read_saved_model(path: str, *, max_bytes: int = MAX_GRAPH_BYTES) -> saved_model_pb2.SavedModel:
    """Decode a ``saved_model.pb``.

    Raises:
        CorruptCheckpointError: too large, or not a SavedModel proto (truncated, damaged).
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise CorruptCheckpointError(f"{path}: {size:,} bytes is larger than any SavedModel can be (limit "
                                     f"{max_bytes:,} bytes)", path=path, expected=f"<= {max_bytes}", found=size)
    with open(path, "rb") as f:
        data = f.read(min(size, max_bytes) + 1)
    message = saved_model_pb2.SavedModel()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # DecodeError, or upb's recursion limit
        raise CorruptCheckpointError(f"{path}: not a valid SavedModel ({exc or type(exc).__name__}); the file is "
                                     "truncated or damaged", path=path, expected="SavedModel") from None
    if not message.meta_graphs:
        raise CorruptCheckpointError(f"{path}: the SavedModel has no meta graph", path=path,
                                     expected="at least one MetaGraphDef", found=0)
    return message


def load_saved_model(path: str | os.PathLike, *, tags=DEFAULT_TAGS, validate: bool = True,
                     max_bytes: int = MAX_GRAPH_BYTES) -> SavedModelGraph:
    """Open a SavedModel directory (or its ``saved_model.pb``) and pick the meta graph whose tag set is ``tags``.

    Raises:
        CheckpointNotFoundError: no ``saved_model.pb`` there, or no meta graph with those tags (the tag sets there
            are listed).
        CorruptCheckpointError: the file is not a well-formed SavedModel.
    """
    pb = saved_model_file(path)
    if pb is None:
        raise CheckpointNotFoundError(f"{os.fspath(path)} is not a SavedModel (no {SAVED_MODEL_PB})",
                                      path=os.fspath(path), tried=[os.path.join(os.fspath(path), SAVED_MODEL_PB)])
    message = read_saved_model(pb, max_bytes=max_bytes)
    wanted = {tags} if isinstance(tags, str) else set(tags)
    available = [set(m.meta_info_def.tags) for m in message.meta_graphs]
    for meta in message.meta_graphs:
        if set(meta.meta_info_def.tags) == wanted:
            break
    else:
        if len(message.meta_graphs) == 1 and tags is DEFAULT_TAGS and not available[0]:
            meta = message.meta_graphs[0]  # an untagged single meta graph: the only choice
        else:
            raise CheckpointNotFoundError(
                f"{pb}: no meta graph with tags {_tag_text(wanted)}; the SavedModel has "
                f"{', '.join(_tag_text(t) for t in available)} (pass tags=...)", path=pb,
                tried=[sorted(wanted)], available=[sorted(t) for t in available])
    if validate:
        check_graph_def(meta.graph_def, pb)
    return SavedModelGraph(meta, directory=os.path.dirname(os.path.abspath(pb)), path=pb)


class SavedModelGraph(Graph):
    """One meta graph of a SavedModel (see :func:`load_saved_model`).

    Attributes:
        directory: The SavedModel directory.
        tags: The chosen meta graph's tag set.
    """

    def __init__(self, meta_graph_def, *, directory: str, path: str) -> None:
        super().__init__(meta_graph_def=meta_graph_def, path=path, validate=False)
        self.directory = directory
        self.tags: frozenset[str] = frozenset(self.meta_graph_def.meta_info_def.tags)

    def __repr__(self) -> str:
        return f"<ckpt.graph.SavedModelGraph {self.directory} tags={_tag_text(self.tags)}: " \
               f"{len(self)} operations, signatures {sorted(self.signature_specs)}>"

    @property
    def variables_prefix(self) -> str:
        """The checkpoint prefix of the SavedModel's variables (``DIR/variables/variables``)."""
        return os.path.join(self.directory, "variables", "variables")

    @cached_property
    def signature_specs(self) -> dict[str, Signature]:
        """Every signature (``serving_default``...) with its inputs' and outputs' tensors, dtypes and shapes.
        TensorFlow's internal ``__saved_model_init_op`` is left out."""
        out = {}
        for key, sig in sorted(self.meta_graph_def.signature_def.items()):
            if key == "__saved_model_init_op":
                continue
            out[key] = Signature(key, _specs(sig.inputs), _specs(sig.outputs), sig.method_name)
        return out

    def signature(self, key: str = "serving_default") -> Signature:
        """One signature by key.

        Raises:
            OperationNotFoundError: no such signature (lists the ones there are).
        """
        from ..errors import OperationNotFoundError

        found = self.signature_specs.get(key)
        if found is None:
            raise OperationNotFoundError(f"{self.path}: no signature {key!r}; the SavedModel has "
                                         f"{', '.join(map(repr, self.signature_specs)) or 'none'}", path=self.path,
                                         key=key, available=list(self.signature_specs))
        return found

    @cached_property
    def _object_keys(self) -> dict[str, str]:
        """VarHandleOp name -> checkpoint key, through the object graph (see the module docstring)."""
        keys = self._checkpoint_object_keys(len(self.meta_graph_def.object_graph_def.nodes))
        return {op: keys[i] for op, i in self._object_ids.items() if i in keys}

    @cached_property
    def _object_ids(self) -> dict[str, int]:
        """VarHandleOp name -> the id of its variable in the object graph."""
        meta = self.meta_graph_def
        if not meta.HasField("object_graph_def"):
            return {}
        objects = meta.object_graph_def
        variables = {i for i, node in enumerate(objects.nodes) if node.WhichOneof("kind") == "variable"}
        found: dict[str, int] = {}
        for op in self.operations:
            if op.type not in _CALLS or "f" not in op.node.attr:
                continue
            fn = objects.concrete_functions.get(op.node.attr["f"].func.name)
            if fn is None or not fn.bound_inputs:
                continue
            data = op.data_inputs
            captured = data[len(data) - len(fn.bound_inputs):] if len(fn.bound_inputs) <= len(data) else []
            for ref, node_id in zip(captured, fn.bound_inputs):
                src = self._by_name.get(ref.op)
                if src is not None and src.type == "VarHandleOp" and node_id in variables:
                    found.setdefault(src.name, node_id)
        # Variables no signature captures: match the saved variable's name (objects bound above are taken; Keras
        # graphs hold unused same-named handles beside the captured ones).
        bound = set(found.values())
        named: dict[str, int] = {}
        for i in sorted(variables - bound):
            named.setdefault(objects.nodes[i].variable.name, i)
        for op in self.operations:
            if op.type == "VarHandleOp" and op.name not in found:
                shared = op.node.attr["shared_name"].s.decode("utf-8", "replace") if "shared_name" in op.node.attr \
                    else ""
                node_id = named.get(op.name, named.get(shared))
                if node_id is not None:
                    found[op.name] = node_id
        return found

    @cached_property
    def variables(self):
        """As :attr:`Graph.variables`; a TF2 variable's ``trainable`` comes from its saved object."""
        import dataclasses

        objects = self.meta_graph_def.object_graph_def.nodes
        out = []
        for v in super().variables:
            node_id = self._object_ids.get(v.name)
            if node_id is not None and node_id < len(objects):
                v = dataclasses.replace(v, trainable=bool(objects[node_id].variable.trainable))
            out.append(v)
        return out

    def _checkpoint_object_keys(self, count: int) -> dict[int, str]:
        """Object node id -> the ``VARIABLE_VALUE`` key of the checkpoint's object graph (same node numbering)."""
        from ..tf.object_graph import OBJECT_GRAPH_KEY, parse_object_graph
        from ..reader import Reader

        try:
            reader = Reader(self.variables_prefix, verify_checksums=True)
        except CheckpointNotFoundError:
            return {}
        with reader:
            if OBJECT_GRAPH_KEY not in reader.keys():
                return {}
            graph = parse_object_graph(reader[OBJECT_GRAPH_KEY].item(), path=reader.prefix)
        out = {}
        for i, node in enumerate(graph.nodes[:count]):
            for attr in node.attributes:
                if attr.name == "VARIABLE_VALUE" and attr.checkpoint_key:
                    out[i] = attr.checkpoint_key
        return out

    @cached_property
    def _saver_keys(self) -> dict[str, tuple[str, str]]:
        found = dict(super()._saver_keys)
        for op_name, key in self._object_keys.items():
            found.setdefault(op_name, (key, ""))
        return found

    @cached_property
    def _roles(self) -> dict[str, str]:
        roles = dict(super()._roles)
        saver = self.saver_def
        if saver is not None:  # TF2's saver is a call named StatefulPartitionedCall_N fed by saver_filename
            for name in (saver.filename_tensor_name, saver.save_tensor_name, saver.restore_op_name):
                if name and parse_input(name).op in self:
                    roles[parse_input(name).op] = "saver"
        return roles


def _specs(infos) -> dict[str, TensorSpec]:
    out = {}
    for key, info in sorted(infos.items()):
        shape = None
        if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
            shape = shape_from_proto(info.tensor_shape)
        out[key] = TensorSpec(key, info.name, dtype_name(info.dtype) if info.dtype else None, shape)
    return out
