"""ckpt.graph without TensorFlow: golden files, round trips, listing, attributes, freezing, export, events, CLI.

The golden files in ``tests/data/graphs`` and ``tests/data/tf1_saver/model.ckpt-30.meta`` were written by
TensorFlow 2.21 (see the README there); ``tests/test_graph_tf.py`` checks the same things against TensorFlow live.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import ml_dtypes
import numpy as np
import pytest

import ckpt
import ckpt.graph as G
from ckpt.cli.main import main
from ckpt.errors import CheckpointNotFoundError, CorruptCheckpointError, OperationNotFoundError, StateMismatchError
from ckpt.tf import events as events_format
from ckpt.tf.protos import graph_pb2, tensor_pb2
from ckpt.tf.tensor_proto import make_ndarray, make_tensor_proto

DATA = pathlib.Path(__file__).parent / "data"
GRAPHS = DATA / "graphs"
META = DATA / "tf1_saver" / "model.ckpt-30.meta"
PREFIX = DATA / "tf1_saver" / "model.ckpt-30"
GOLDEN = ["frozen.pb", "frozen.pbtxt", "frozen_resource.pb", "frozen_resource.pbtxt", "unfrozen_graph.pbtxt"]


@pytest.fixture
def tf1_saver(tmp_path):
    """A writable copy of the TF1 regression checkpoint and its .meta."""
    dst = tmp_path / "tf1_saver"
    shutil.copytree(DATA / "tf1_saver", dst)
    return dst


# ============================================================================================ reading, round trips


@pytest.mark.parametrize("name", GOLDEN + ["meta"])
def test_golden_files_round_trip_exactly(name, tmp_path):
    path = META if name == "meta" else GRAPHS / name
    g = G.load(path)
    out = g.save(tmp_path / path.name)
    assert out.read_bytes() == path.read_bytes()


def test_pb_and_pbtxt_are_the_same_graph(tmp_path):
    binary, text = G.load(GRAPHS / "frozen.pb"), G.load(GRAPHS / "frozen.pbtxt")
    assert binary.graph_def == text.graph_def
    assert binary.save(tmp_path / "a.pbtxt").read_text() == (GRAPHS / "frozen.pbtxt").read_text()
    assert text.save(tmp_path / "b.pb").read_bytes() == (GRAPHS / "frozen.pb").read_bytes()


def test_kind_is_detected_from_content_not_extension(tmp_path):
    (tmp_path / "graph.dat").write_bytes((GRAPHS / "frozen.pbtxt").read_bytes())
    (tmp_path / "meta.pb").write_bytes(META.read_bytes())
    (tmp_path / "graph.meta").write_bytes((GRAPHS / "frozen.pb").read_bytes())
    assert G.load(tmp_path / "graph.dat").graph_def == G.load(GRAPHS / "frozen.pb").graph_def
    assert G.load(tmp_path / "meta.pb").meta_graph_def is not None
    assert G.load(tmp_path / "graph.meta").meta_graph_def is None
    text_meta = G.load(META).save(tmp_path / "m.meta", text=True)
    assert text_meta.read_text().startswith("meta_info_def {")
    assert G.load(text_meta).meta_graph_def == G.load(META).meta_graph_def


def test_a_prefix_or_a_directory_means_its_meta_file():
    assert G.load(PREFIX).path == str(META)
    assert G.load(DATA / "tf1_saver").path == str(META)
    with pytest.raises(CheckpointNotFoundError, match="no graph file"):
        G.load(DATA / "tf1_saver" / "nothing-here")


def test_graph_is_read_from_an_events_file():
    g = G.load(GRAPHS / "tf1.events")
    assert len(g) > 0 and g.meta_graph_def is not None
    with pytest.raises(CorruptCheckpointError, match="holds no graph"):
        G.load(GRAPHS / "tf2.events")


# ============================================================================================ the Graph API


def test_operations_in_file_order_with_parsed_inputs():
    g = G.load(META)
    assert len(g) == 90
    names = [op.name for op in g.operations]
    assert names[:4] == ["x", "y_true", "alpha/initial_value", "alpha"]
    assert [op.name for op in g.get_operations()] == names
    restore = g.get_operation_by_name("save/Assign_1")
    assert [str(i) for i in restore.inputs] == ["beta", "save/RestoreV2:1"]
    assert restore.inputs[1] == G.Input("save/RestoreV2", 1, False)
    dep = g.get_operation_by_name("save/control_dependency")
    assert dep.inputs[1] == G.Input("save/SaveV2", 0, True) and dep.control_inputs == ["save/SaveV2"]
    assert [c.name for c in g.get_operation_by_name("alpha").consumers][:2] == ["alpha/Assign", "alpha/read"]


def test_attributes_decode_to_python_values():
    g = G.load(META)
    x = g.get_operation_by_name("x")
    assert x.attrs["dtype"] == "float32" and x.attrs["shape"] == (None,)
    assert g.get_operation_by_name("alpha").attrs["dtype"] == "float32"
    read = g.get_operation_by_name("alpha/read")
    assert read.attrs["_class"] == ["loc:@alpha"] and read.get_attr("T") == "float32"
    names = g.get_operation_by_name("save/SaveV2/tensor_names").attrs["value"]
    assert names.tolist() == [b"alpha", b"beta", b"global_step"]
    assert g.get_operation_by_name("save/SaveV2").attrs["dtypes"] == ["float32", "float32", "int64"]
    with pytest.raises(OperationNotFoundError, match="has no attribute 'nope'"):
        x.get_attr("nope")


def test_tensors_carry_dtype_and_static_shape():
    g = G.load(META)
    assert g.get_tensor_by_name("x:0").shape == (None,)
    alpha = g.get_tensor_by_name("alpha:0")
    assert (alpha.dtype, alpha.shape) == ("float32_ref", ())
    assert g.get_tensor_by_name("alpha/read:0").dtype == "float32"
    assert g.get_tensor_by_name("y").name == "y:0"
    restored = g.get_tensor_by_name("save/RestoreV2:2")
    assert restored.index == 2
    frozen = G.load(GRAPHS / "frozen.pb")  # no _output_shapes: shapes from the producers' attributes
    assert frozen.get_tensor_by_name("alpha:0").shape == ()
    assert frozen.get_tensor_by_name("x:0").shape == (None,)
    with pytest.raises(OperationNotFoundError, match="did you mean 'alpha'"):
        g.get_tensor_by_name("alpah:0")
    with pytest.raises(OperationNotFoundError, match="did you mean"):
        g.get_operation_by_name("alpha/raed")


def test_collections_saver_inputs_outputs_variables():
    g = G.load(META)
    cols = g.collections
    assert cols["train_op"] == ["GradientDescent"]
    assert [v["variable_name"] for v in cols["trainable_variables"]] == ["alpha:0", "beta:0"]
    assert cols["variables"][0] == {"variable_name": "alpha:0", "initializer_name": "alpha/Assign",
                                    "snapshot_name": "alpha/read:0", "initial_value_name": "alpha/initial_value:0",
                                    "trainable": True}
    assert g.saver_def == G.SaverInfo("save/Const:0", "save/control_dependency:0", "save/restore_all", 2, False,
                                      10000.0, "V2")
    assert [op.name for op in g.inputs] == ["x", "y_true"]
    assert [op.name for op in g.outputs] == ["loss"]
    assert [op.name for op in g.predictions] == ["y"]
    assert g.needed_inputs("loss") == ["x", "y_true"] and g.needed_inputs("y") == ["x"]
    assert [(v.name, v.dtype, v.checkpoint_name, v.trainable) for v in g.variables] == [
        ("alpha", "float32", "alpha", True), ("beta", "float32", "beta", True),
        ("global_step", "int64", "global_step", False)]
    assert g.role("save/SaveV2") == "saver" and g.role("init") == "init" and g.role("GradientDescent") == "train"
    assert g.role("y") == "model"
    # Without a MetaGraphDef the same answers come from the node names and types alone.
    plain = G.load(GRAPHS / "unfrozen_graph.pbtxt")
    assert [op.name for op in plain.outputs] == ["loss"] and plain.collections == {} and plain.saver_def is None


def test_partitioned_variables_map_to_their_full_checkpoint_name():
    g = G.load(GRAPHS / "sharded.meta")
    parts = {v.name: v for v in g.variables if v.name.startswith("part/")}
    assert parts["part/w/part_1"].checkpoint_name == "part/w"
    assert parts["part/w/part_1"].partition == ((5, 3), (3, 0)) and parts["part/w/part_1"].shape == (2, 3)
    assert {v.device for v in g.variables} == {"/device:CPU:0", "/device:CPU:1"}
    frozen = G.freeze(g, DATA / "tf1_sharded" / "model.ckpt",
                      ["part/w/part_0/read", "part/w/part_1/read", "dev0/strings/read"])
    with ckpt.Reader(DATA / "tf1_sharded" / "model.ckpt") as reader:
        full, strings = reader["part/w"], reader["dev0/strings"]
    assert frozen.get_operation_by_name("part/w/part_0").attrs["value"].tolist() == full[:3].tolist()
    assert frozen.get_operation_by_name("part/w/part_1").attrs["value"].tolist() == full[3:].tolist()
    assert frozen.get_operation_by_name("dev0/strings").attrs["value"].tolist() == strings.tolist()


# ============================================================================================ TensorProto codec


@pytest.mark.parametrize("dtype,field", [(np.float32, "float_val"), (np.float64, "double_val"), (np.int32, "int_val"),
                                         (np.int64, "int64_val"), (np.bool_, "bool_val"), (np.uint16, "int_val"),
                                         (np.complex64, "scomplex_val"), (np.float16, "half_val"),
                                         (ml_dtypes.bfloat16, "half_val"), (np.uint32, "uint32_val")])
def test_scalars_use_typed_fields_and_big_tensors_use_content(dtype, field):
    scalar = make_tensor_proto(np.array(3, dtype=dtype))
    assert len(getattr(scalar, field)) == (2 if field == "scomplex_val" else 1) and not scalar.tensor_content
    assert make_ndarray(scalar).tobytes() == np.array(3, dtype=dtype).tobytes()
    many = np.arange(6).reshape(2, 3).astype(dtype)
    proto = make_tensor_proto(many)
    content = dtype not in (np.bool_, np.uint16, np.complex64)
    assert bool(proto.tensor_content) == content
    back = make_ndarray(proto)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3) and back.tobytes() == many.tobytes()


def test_typed_fields_are_edge_padded_and_strings_kept_exact():
    proto = tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0])
    proto.tensor_shape.dim.add().size = 4
    assert make_ndarray(proto).tolist() == [1.0, 2.0, 2.0, 2.0]
    zeros = tensor_pb2.TensorProto(dtype=3)
    zeros.tensor_shape.dim.add().size = 3
    assert make_ndarray(zeros).tolist() == [0, 0, 0]
    strings = make_tensor_proto(np.array([b"a\x00b", b"", "\u00e9"], dtype=object))
    assert list(strings.string_val) == [b"a\x00b", b"", "\u00e9".encode()]
    assert make_ndarray(strings).tolist() == [b"a\x00b", b"", "\u00e9".encode()]
    half = make_tensor_proto(np.float16(1.5))
    assert list(half.half_val) == [np.float16(1.5).view(np.uint16)]


def test_malformed_tensor_protos_raise_corrupt():
    bad = tensor_pb2.TensorProto(dtype=1, tensor_content=b"\x00" * 7)
    bad.tensor_shape.dim.add().size = 2
    with pytest.raises(CorruptCheckpointError, match="tensor_content holds 7 bytes"):
        make_ndarray(bad)
    huge = tensor_pb2.TensorProto(dtype=1, float_val=[0.0])
    for _ in range(4):
        huge.tensor_shape.dim.add().size = 1 << 40
    with pytest.raises(CorruptCheckpointError, match="limit"):
        make_ndarray(huge)
    negative = tensor_pb2.TensorProto(dtype=1)
    negative.tensor_shape.dim.add().size = -1
    with pytest.raises(CorruptCheckpointError, match="unknown dimension"):
        make_ndarray(negative)


# ============================================================================================ freezing


def test_freeze_reproduces_tensorflows_frozen_graph_byte_for_byte(tmp_path):
    """unfrozen_graph.pbtxt + model.ckpt-30 -> exactly TF's convert_variables_to_constants output (frozen.pb)."""
    frozen = G.freeze(GRAPHS / "unfrozen_graph.pbtxt", PREFIX, ["y"])
    assert frozen.save(tmp_path / "y.pb").read_bytes() == (GRAPHS / "frozen.pb").read_bytes()
    assert frozen.save(tmp_path / "y.pbtxt").read_text() == (GRAPHS / "frozen.pbtxt").read_text()


def test_freeze_from_meta_prunes_and_keeps_order():
    frozen = G.freeze(G.load(META), PREFIX, "y")
    assert [(op.name, op.type) for op in frozen] == [
        ("x", "Placeholder"), ("alpha", "Const"), ("alpha/read", "Identity"), ("beta", "Const"),
        ("beta/read", "Identity"), ("Mul", "Mul"), ("y", "AddV2")]
    alpha = frozen.get_operation_by_name("alpha")
    assert sorted(alpha.node.attr) == ["dtype", "value"] and alpha.device == ""
    assert alpha.attrs["value"] == np.load(DATA / "tf1_saver" / "expected_values.npy")[0]
    read = frozen.get_operation_by_name("alpha/read")
    assert read.attrs["T"] == "float32" and "_output_shapes" not in read.node.attr
    assert read.attrs["_class"] == ["loc:@alpha"]
    assert "_output_shapes" in frozen.get_operation_by_name("Mul").node.attr  # other nodes are copied unchanged
    assert frozen.graph_def.HasField("library") and frozen.producer == 2474


def test_freeze_errors_are_specific(tmp_path):
    with pytest.raises(OperationNotFoundError, match="did you mean 'y'"):
        G.freeze(META, PREFIX, ["yy"])
    other = ckpt.save({"alpha": np.zeros(3, np.float32)}, str(tmp_path / "other"), sync=False)
    with pytest.raises(CheckpointNotFoundError, match="beta"):
        G.freeze(META, other, ["y"])
    wrong = ckpt.save({"alpha": np.zeros(3, np.float32), "beta": np.float64(1)}, str(tmp_path / "wrong"), sync=False)
    with pytest.raises(StateMismatchError) as info:
        G.freeze(META, wrong, ["y"])
    assert len(info.value.mismatched) == 2  # both problems reported at once


def test_freeze_resource_variables_and_clear_devices(tmp_path):
    """A hand-made VarHandleOp/ReadVariableOp/ResourceGather graph freezes as TensorFlow's converter does it."""
    text = """
node { name: "ids" op: "Placeholder" device: "/device:CPU:0" attr { key: "dtype" value { type: DT_INT32 } } }
node { name: "emb" op: "VarHandleOp" device: "/device:CPU:0"
  attr { key: "dtype" value { type: DT_FLOAT } }
  attr { key: "shape" value { shape { dim { size: 4 } dim { size: 2 } } } }
  attr { key: "shared_name" value { s: "emb" } } }
node { name: "lookup" op: "ResourceGather" input: "emb" input: "ids" device: "/device:CPU:0"
  attr { key: "Tindices" value { type: DT_INT32 } } attr { key: "dtype" value { type: DT_FLOAT } }
  attr { key: "batch_dims" value { i: 0 } } attr { key: "validate_indices" value { b: true } } }
node { name: "read" op: "ReadVariableOp" input: "emb" attr { key: "dtype" value { type: DT_FLOAT } } }
node { name: "out" op: "AddV2" input: "lookup" input: "read" attr { key: "T" value { type: DT_FLOAT } } }
versions { producer: 2474 }
"""
    (tmp_path / "g.pbtxt").write_text(text)
    values = np.arange(8, dtype=np.float32).reshape(4, 2)
    prefix = ckpt.save({"emb": values}, str(tmp_path / "ck"), sync=False)
    frozen = G.freeze(tmp_path / "g.pbtxt", prefix, ["out"], clear_devices=True)
    assert [(n.name, n.op) for n in frozen.graph_def.node] == [  # file order; iteration is TF's import order
        ("ids", "Placeholder"), ("emb", "Const"), ("lookup", "GatherV2"), ("read", "Identity"), ("out", "AddV2"),
        ("lookup/axis", "Const")]
    assert all(op.device == "" for op in frozen)
    assert frozen.get_operation_by_name("emb").attrs["value"].tolist() == values.tolist()
    assert frozen.get_operation_by_name("emb").node.attr["value"].tensor.tensor_content == values.tobytes()
    lookup = frozen.get_operation_by_name("lookup")
    assert [str(i) for i in lookup.inputs] == ["emb", "ids", "lookup/axis"]
    assert lookup.attrs == {"Taxis": "int32", "Tindices": "int32", "Tparams": "float32"}
    assert frozen.get_operation_by_name("read").attrs == {"T": "float32"}


def test_cli_freeze(tf1_saver, capsys):
    meta = str(tf1_saver / "model.ckpt-30.meta")
    assert main(["freeze", "--graph", meta]) == 2
    err = capsys.readouterr().err
    assert "needs --outputs" in err and "loss" in err and "y " in err and "--outputs y" in err
    assert not list(tf1_saver.glob("*.pb"))
    out = tf1_saver / "frozen.pbtxt"
    assert main(["freeze", "--graph", meta, "--outputs", "y", "-o", str(out)]) == 0
    assert "froze 2 variable(s)" in capsys.readouterr().out
    assert G.load(out).graph_def == G.freeze(meta, tf1_saver / "model.ckpt-30", ["y"]).graph_def
    assert out.read_text().startswith("node {")
    assert main(["freeze", "--graph", meta, "--checkpoint", str(tf1_saver), "--outputs", "nope", "-o",
                 str(tf1_saver / "x.pb")]) == 2
    assert "has no operation named 'nope'" in capsys.readouterr().err


# ============================================================================================ CLI: ckpt graph


def test_cli_graph_lists_like_the_seed_loop(capsys):
    assert main(["graph", str(META)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["x Placeholder", "y_true Placeholder", "alpha/initial_value Const"]
    assert len(lines) == 90


def test_cli_graph_filters_and_json(capsys):
    assert main(["graph", str(META), "--inputs", "--outputs", "--variables"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "# inputs", "x Placeholder float32 [?]", "y_true Placeholder float32 [?]",
        "# outputs", "loss Mean float32 []",
        "# variables", "alpha VariableV2 float32 []", "beta VariableV2 float32 []", "global_step VariableV2 int64 []"]
    assert "y looks like the model's prediction" in out.err
    assert main(["graph", str(META), "--json", "--variables", "--outputs"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "MetaGraphDef" and doc["producer"] == 2474
    assert [v["checkpoint_name"] for v in doc["variables"]] == ["alpha", "beta", "global_step"]
    assert doc["outputs"] == [{"name": "loss", "type": "Mean", "dtype": "float32", "shape": [],
                               "needs": ["x", "y_true"]}]
    assert doc["predictions"] == ["y"]
    assert main(["graph", str(GRAPHS / "frozen.pb"), "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["operations"]
    assert ops[1]["name"] == "alpha" and ops[1]["attrs"]["value"] == "float32[] 1.7067256"


def test_cli_graph_writes_html_events_and_conversions(tmp_path, capsys):
    assert main(["graph", str(GRAPHS / "frozen.pb"), "--html", str(tmp_path / "g.html"), "--logdir",
                 str(tmp_path / "logs"), "--save", str(tmp_path / "g.pbtxt")]) == 0
    out = capsys.readouterr().out
    assert "wrote html" in out and "wrote events" in out and "Placeholder" not in out
    assert (tmp_path / "g.pbtxt").read_text() == (GRAPHS / "frozen.pbtxt").read_text()
    assert "ckpt-graph-data" in (tmp_path / "g.html").read_text()
    (events,) = (tmp_path / "logs").iterdir()
    assert G.load(events).graph_def == G.load(GRAPHS / "frozen.pb").graph_def


def test_cli_graph_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f garbage")
    assert main(["graph", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {bad}: not a valid binary GraphDef")
    assert "Traceback" not in err


def test_cli_escapes_hostile_names(tmp_path, capsys):
    graph = graph_pb2.GraphDef()
    graph.node.add(name="evil\x1b[31m", op="NoOp")
    (tmp_path / "evil.pb").write_bytes(graph.SerializeToString())
    assert main(["graph", str(tmp_path / "evil.pb")]) == 0
    assert capsys.readouterr().out == "evil\\x1b[31m NoOp\n"


# ============================================================================================ export, save, events


def test_export_meta_graph_and_save_with_graph(tmp_path):
    g = G.load(META)
    assert G.export_meta_graph(g, tmp_path / "copy.meta").read_bytes() == META.read_bytes()
    frozen = G.load(GRAPHS / "frozen.pb")
    out = G.export_meta_graph(frozen.graph_def, tmp_path / "f.meta")
    back = G.load(out)
    assert back.meta_graph_def is not None and back.graph_def == frozen.graph_def
    assert G.load(frozen.save(tmp_path / "saved.meta")).meta_graph_def is not None  # .meta means MetaGraphDef
    assert G.load(g.save(tmp_path / "only_graph.pb")).meta_graph_def is None
    prefix = ckpt.save({"alpha": np.float32(1.5), "beta": np.float32(-0.5)}, str(tmp_path / "run" / "model.ckpt"),
                       step=7, graph=g, sync=False)
    assert pathlib.Path(prefix + ".meta").read_bytes() == META.read_bytes()
    assert ckpt.latest(tmp_path / "run") == prefix
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]
    with pytest.raises(TypeError):
        ckpt.save({"a": np.float32(1)}, str(tmp_path / "nothing" / "m"), graph=object(), sync=False)
    assert not (tmp_path / "nothing").exists() or not list((tmp_path / "nothing").glob("m*"))


def test_events_file_framing_round_trip(tmp_path):
    g = G.load(GRAPHS / "frozen.pb")
    path = G.write_events(g, tmp_path)
    assert path.name.startswith("events.out.tfevents.")
    events = list(events_format.read_events(path))
    assert events[0].file_version == "brain.Event:2" and events[0].wall_time == int(events[0].wall_time)
    assert graph_pb2.GraphDef.FromString(events[1].graph_def) == g.graph_def
    again = G.write_events(g, tmp_path)
    assert again != path  # never overwrites
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    with pytest.raises(ckpt.errors.ChecksumMismatchError):
        list(events_format.read_records(bytes(data)))
    # The TF-written samples re-frame byte for byte.
    raw = (GRAPHS / "tf1.events").read_bytes()
    assert b"".join(events_format.frame_record(r) for r in events_format.read_records(raw)) == raw


# ============================================================================================ HTML


def test_html_page_is_self_contained_and_escapes_names(tmp_path):
    graph = graph_pb2.GraphDef()
    graph.node.add(name="a</script><script>alert(1)</script>", op="Placeholder")
    graph.node.add(name="scope/b&c", op="Identity", input=["a</script><script>alert(1)</script>"])
    page = G.Graph(graph).to_html()
    assert "<script>alert(1)" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    data = page.split('id="ckpt-graph-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["nodes"][1]["n"] == "scope/b&c"
    view = G.show(G.Graph(graph))
    html_text = view._repr_html_() if hasattr(view, "_repr_html_") else view.data
    assert html_text.startswith("<iframe srcdoc=")


def test_repr_html_for_notebooks():
    assert G.load(GRAPHS / "frozen.pb")._repr_html_().startswith("<iframe")


# ============================================================================================ torch


def test_from_torch_names_match_checkpoint_names(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 5, padding=2)
            self.fc1 = torch.nn.Linear(4 * 14 * 14, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            return self.fc1(torch.flatten(x, 1)).argmax(1)

    net = Net()
    g = G.from_torch(net, torch.zeros(2, 1, 28, 28))
    assert [(op.name, op.type) for op in g if op.type != "VariableV2"] == [
        ("x", "Placeholder"), ("conv1", "Conv2d"), ("relu", "relu"), ("max_pool2d", "max_pool2d"),
        ("flatten", "flatten"), ("fc1", "Linear"), ("argmax", "argmax"), ("output", "Identity")]
    assert sorted(v.name for v in g.variables) == sorted(ckpt.flatten(net))
    conv = g.get_operation_by_name("conv1")
    assert [str(i) for i in conv.inputs] == ["x", "conv1/weight", "conv1/bias"]
    assert conv.attrs["kernel_size"] == [5, 5] and conv.attrs["out_channels"] == 4
    assert g.get_tensor_by_name("max_pool2d:0").shape == (2, 4, 14, 14)
    assert g.get_tensor_by_name("argmax:0").dtype == "int64"
    prefix = ckpt.save(net, str(tmp_path / "net"), graph=g, sync=False)
    assert G.load(prefix + ".meta").graph_def == g.graph_def
    with ckpt.Reader(prefix) as reader:
        assert {v.checkpoint_name for v in g.variables} == set(reader.keys())


def test_from_torch_falls_back_to_torch_export():
    torch = pytest.importorskip("torch")

    class ShapeBranch(torch.nn.Module):  # fx cannot trace Python control flow on shapes; export specialises it
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) if x.shape[0] > 1 else x

    g = G.from_torch(ShapeBranch(), torch.ones(2, 3))
    assert [op.type for op in g if op.type != "VariableV2"] == ["Placeholder", "linear", "Identity"]
    assert [str(i) for i in g.get_operation_by_name("linear").inputs] == ["x", "lin/weight", "lin/bias"]
    assert g.get_tensor_by_name("linear:0").shape == (2, 3)
    with pytest.raises(ckpt.UnsupportedError, match="torch.fx"):
        G.from_torch(ShapeBranch(), torch.ones(2, 3), method="fx")


def test_import_ckpt_loads_no_framework():
    import subprocess

    code = ("import sys, ckpt, ckpt.graph; g = ckpt.graph.load(sys.argv[1]); g.to_html(); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(META)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
