"""``ckpt.graph.GraphBuilder`` without TensorFlow: typed attributes, names, scopes, rewiring, errors.

The TensorFlow round trips (the seed workflows) are in ``test_graph_build_tf.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import ckpt
import ckpt.graph as G
from ckpt.tf.protos import meta_graph_pb2, variable_pb2


def _small() -> G.GraphBuilder:
    b = G.GraphBuilder()
    x = b.placeholder("x", "float32", [None, 2])
    w = b.constant(np.ones((2, 2), np.float32), name="w")
    b.op("MatMul", [x, w], name="y")
    return b


def test_attr_value_kinds():
    assert G.attr_value(True).b is True
    assert G.attr_value(3).i == 3 and G.attr_value(np.int64(3)).i == 3
    assert G.attr_value(0.5).f == 0.5
    assert G.attr_value("SAME").s == b"SAME"
    assert G.attr_value(G.DType("float32")).type == 1 and G.attr_value(np.float64).type == 2
    assert G.attr_value(G.DType("float32_ref")).type == 101
    assert [d.size for d in G.attr_value(G.Shape([None, 3])).shape.dim] == [-1, 3]
    assert G.attr_value(G.Shape(None)).shape.unknown_rank
    assert list(G.attr_value([1, 2, 2, 1]).list.i) == [1, 2, 2, 1]
    assert list(G.attr_value([1, 2.5]).list.f) == [1.0, 2.5]
    assert list(G.attr_value([G.DType("int32"), np.float32]).list.type) == [3, 1]
    assert G.attr_value([]).HasField("list")
    assert G.attr_value(np.zeros(3, np.float32)).tensor.dtype == 1
    assert G.attr_value(G.Func("f", {"T": G.DType("float32")})).func.attr["T"].type == 1
    for bad in (None, [1, "a"], object()):
        with pytest.raises(ckpt.UnsupportedError):
            G.attr_value(bad)
    with pytest.raises(ckpt.UnsupportedError, match="unknown dtype"):
        G.attr_value(G.DType("float33"))


def test_node_name_sanitizes_to_tensorflows_rule():
    assert G.node_name("_0") == "0"
    assert G.node_name("a b:c") == "a_b_c"
    assert G.node_name("___") == "node"
    assert G.node_name("layer.1/weight") == "layer.1/weight"
    for n in ("_0", "a b", "-x", "/x", "x:0", "", "é"):
        assert G._build.NODE_NAME.match(G.node_name(n)), n


def test_op_fills_type_attributes_and_default_names():
    b = _small()
    assert b.graph_def.node[-1].attr["T"].type == 1
    assert b.op("Relu", ["y:0"]) == "Relu:0" and b.op("Relu", ["y"]) == "Relu_1:0"
    b.op("ConcatV2", ["Relu:0", "Relu_1:0", b.constant(1, name="axis")], name="cat")
    cat = b.graph_def.node[-1]
    assert cat.attr["N"].i == 2 and cat.attr["T"].type == 1 and cat.attr["Tidx"].type == 3
    assert b.dtype("cat:0") == "float32" and b.dtype("axis:0") == "int32"
    b.op("NoOp", [], name="init", control_inputs=["y"])
    assert list(b.graph_def.node[-1].input) == ["^y"]


def test_errors_name_what_is_wrong():
    b = _small()
    with pytest.raises(ckpt.errors.OperationNotFoundError, match="did you mean 'y'"):
        b.op("Relu", ["yy:0"])
    with pytest.raises(ckpt.UnsupportedError, match="already in the graph"):
        b.op("Relu", ["y:0"], name="y")
    with pytest.raises(ckpt.UnsupportedError, match="not a valid TensorFlow node name"):
        b.op("Relu", ["y:0"], name="_bad")
    with pytest.raises(ckpt.UnsupportedError, match="no attribute form"):
        b.op("Relu", ["y:0"], name="r", attrs={"bad": None})
    with pytest.raises(ckpt.UnsupportedError, match="control_inputs"):
        b.op("Relu", ["^y"])
    with pytest.raises(ckpt.UnsupportedError, match="would redefine"):
        b.import_graph(_small().graph)
    with pytest.raises(ckpt.UnsupportedError, match="float32 but"):
        b.replace("y:0", b.constant(1, name="one"))
    with pytest.raises(ckpt.UnsupportedError, match="already in the graph"):
        b.rename("y", "w")
    with pytest.raises(ckpt.errors.OperationNotFoundError):
        b.import_graph(_small().graph, scope="s", input_map={"nope:0": "y:0"})
    assert [n.name for n in b.graph_def.node] == ["x", "w", "y", "one"]  # failed calls added nothing


def test_import_under_scope_rewrites_inputs_colocation_and_collections():
    meta = meta_graph_pb2.MetaGraphDef()
    gd = _small().graph_def
    meta.graph_def.CopyFrom(gd)
    meta.graph_def.node[1].attr["_class"].list.s.append(b"loc:@x")
    var = variable_pb2.VariableDef(variable_name="w:0", initializer_name="w/Assign", snapshot_name="w:0")
    meta.collection_def["variables"].bytes_list.value.append(var.SerializeToString())
    meta.collection_def["train_op"].node_list.value.append("y")
    meta.saver_def.filename_tensor_name = "x:0"
    meta.saver_def.restore_op_name = "y"
    b = G.GraphBuilder()
    b.import_graph(G.Graph(meta), scope="net")
    assert [n.name for n in b.graph_def.node] == ["net/x", "net/w", "net/y"]
    assert list(b.graph_def.node[2].input) == ["net/x", "net/w"]
    assert list(b.graph_def.node[1].attr["_class"].list.s) == [b"loc:@net/x"]
    g = b.graph
    assert g.collections["variables"][0]["variable_name"] == "net/w:0"
    assert g.collections["train_op"] == ["net/y"]
    assert g.saver_def.filename_tensor_name == "net/x:0" and g.saver_def.restore_op_name == "net/y"
    b.rename("net/w", "net/weights")
    g = b.graph
    assert g.collections["variables"][0]["variable_name"] == "net/weights:0"
    assert list(b.graph_def.node[1].attr["_class"].list.s) == [b"loc:@net/x"]
    assert list(b.graph_def.node[2].input) == ["net/x", "net/weights"]
    dropped = b.prune(["net/x"])
    assert dropped == ["net/weights", "net/y"]
    assert "variables" not in b.graph.collections and b.graph.saver_def is None


def test_replace_skips_the_replacement_itself():
    b = _small()
    stop = b.op("StopGradient", ["y:0"], name="stop")
    out = b.op("Relu", ["y:0"], name="out")
    assert b.replace("y:0", stop) == ["out"]
    assert list(b.graph_def.node[-1].input) == ["stop"] and list(b.graph_def.node[-2].input) == ["y"]
    assert out == "out:0"


def test_save_writes_pb_pbtxt_meta_that_load_back(tmp_path):
    b = _small()
    for name in ("g.pb", "g.pbtxt", "g.meta"):
        path = b.save(tmp_path / name)
        back = G.load(path)
        assert [op.name for op in back.operations] == ["x", "w", "y"]
        assert (back.meta_graph_def is not None) == name.endswith(".meta")
    assert (tmp_path / "g.pbtxt").read_text().startswith("node {")
    from_pb = G.GraphBuilder(tmp_path / "g.pb")
    assert from_pb.graph_def.SerializeToString(deterministic=True) == b.graph_def.SerializeToString(deterministic=True)
    assert from_pb.graph.meta_graph_def is None and G.GraphBuilder(tmp_path / "g.meta").graph.meta_graph_def
    assert G.load(from_pb.save(tmp_path / "again.meta")).meta_graph_def is not None


def test_from_torch_names_are_valid():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    names = [op.name for op in G.from_torch(net, torch.zeros(1, 3)).operations]
    assert all(G._build.NODE_NAME.match(n) for n in names), names
    assert len(set(names)) == len(names)
