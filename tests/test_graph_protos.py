"""ckpt's own .proto schemas (package ``ckpt.tf``) against TensorFlow 2.21's compiled descriptors.

Every message, nested message, enum, field name, number, type, label, oneof and packing option must match, so the
wire format and the text format are the same. Generated modules must also be current with their ``.proto`` files.
"""

from __future__ import annotations

import importlib
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

PROTOS = pathlib.Path(__file__).parent.parent / "src" / "ckpt" / "tf" / "protos"

# ours -> TensorFlow's module
PAIRS = {
    "tensor_shape": "tensorflow.core.framework.tensor_shape_pb2",
    "types": "tensorflow.core.framework.types_pb2",
    "versions": "tensorflow.core.framework.versions_pb2",
    "resource_handle": "tensorflow.core.framework.resource_handle_pb2",
    "tensor": "tensorflow.core.framework.tensor_pb2",
    "attr_value": "tensorflow.core.framework.attr_value_pb2",
    "full_type": "tensorflow.core.framework.full_type_pb2",
    "node_def": "tensorflow.core.framework.node_def_pb2",
    "op_def": "tensorflow.core.framework.op_def_pb2",
    "function": "tensorflow.core.framework.function_pb2",
    "graph_debug_info": "tensorflow.core.framework.graph_debug_info_pb2",
    "graph": "tensorflow.core.framework.graph_pb2",
    "variable": "tensorflow.core.framework.variable_pb2",
    "saver": "tensorflow.core.protobuf.saver_pb2",
    "trackable_object_graph": "tensorflow.core.protobuf.trackable_object_graph_pb2",
    "struct": "tensorflow.core.protobuf.struct_pb2",
    "saved_object_graph": "tensorflow.core.protobuf.saved_object_graph_pb2",
    "meta_graph": "tensorflow.core.protobuf.meta_graph_pb2",
    "saved_model": "tensorflow.core.protobuf.saved_model_pb2",
    "histogram": "tensorflow.compiler.xla.tsl.protobuf.histogram_pb2",
    "summary": "tensorflow.core.framework.summary_pb2",
    "event": "tensorflow.core.util.event_pb2",
    "tensor_bundle": "tensorflow.core.protobuf.tensor_bundle_pb2",
    "tensor_slice": "tensorflow.core.framework.tensor_slice_pb2",
    "checkpoint_state": "tensorflow.python.training.checkpoint_state_pb2",
}


def _type_name(full: str) -> str:
    for prefix in ("ckpt.tf.", "tensorflow."):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full


def _describe_enum(enum) -> dict:
    return {"values": sorted((v.name, v.number) for v in enum.values)}


def _describe_message(msg) -> dict:
    fields = {}
    for f in msg.fields:
        fields[f.number] = {
            "name": f.name, "type": f.type, "repeated": f.is_repeated if hasattr(f, "is_repeated") else f.label == 3,
            "message": _type_name(f.message_type.full_name) if f.message_type else None,
            "enum": _type_name(f.enum_type.full_name) if f.enum_type else None,
            "oneof": f.containing_oneof.name if f.containing_oneof and not f.containing_oneof.name.startswith("_")
            else None,
            "packed": f.is_packed if hasattr(f, "is_packed") else None,
            "presence": f.has_presence,
        }
    return {
        "fields": fields,
        "nested": {n.name: _describe_message(n) for n in msg.nested_types},
        "enums": {e.name: _describe_enum(e) for e in msg.enum_types},
        "map_entry": msg.GetOptions().map_entry,
    }


def _describe_file(module) -> dict:
    d = module.DESCRIPTOR
    return {"messages": {name: _describe_message(m) for name, m in d.message_types_by_name.items()},
            "enums": {name: _describe_enum(e) for name, e in d.enum_types_by_name.items()}}


def test_generated_modules_exist_for_every_proto():
    protos = sorted(p.stem for p in PROTOS.glob("*.proto"))
    modules = sorted(p.stem[: -len("_pb2")] for p in PROTOS.glob("*_pb2.py"))
    assert protos == modules
    assert set(PAIRS) == set(protos)


@pytest.mark.parametrize("ours", sorted(PAIRS))
def test_generated_module_matches_its_proto_source(ours):
    """The committed ``_pb2.py`` embeds the schema of the ``.proto`` beside it (run ``make protos`` if not)."""
    from google.protobuf import descriptor_pb2

    module = importlib.import_module(f"ckpt.tf.protos.{ours}_pb2")
    compiled = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(compiled)
    source = (PROTOS / f"{ours}.proto").read_text()
    assert compiled.package == "ckpt.tf" and f"package {compiled.package};" in source
    for message in compiled.message_type:
        assert f"message {message.name} {{" in source
        for field in message.field:
            assert f" {field.name} = {field.number}" in source, (ours, message.name, field.name)


@pytest.mark.tf
@pytest.mark.parametrize("ours", sorted(PAIRS))
def test_schema_matches_tensorflow(ours):
    pytest.importorskip("tensorflow")
    mine = _describe_file(importlib.import_module(f"ckpt.tf.protos.{ours}_pb2"))
    theirs = _describe_file(importlib.import_module(PAIRS[ours]))
    if ours == "types":
        # TensorFlow's enum may grow; every value ckpt declares must match, and ckpt must know all of TF's.
        assert mine["enums"]["DataType"]["values"] == theirs["enums"]["DataType"]["values"]
    assert mine == theirs
