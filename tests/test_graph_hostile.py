"""Damaged and hostile graph files: ckpt raises its own errors (naming the file), never protobuf's or Python's.

A file cut at a field boundary is still a valid, smaller protobuf; for those "it loads" is the right answer, and then
every accessor must keep working. Everything else must be a :class:`ckpt.CheckpointError` (usually
:class:`ckpt.CorruptCheckpointError`), without large allocations.
"""

from __future__ import annotations

import os
import pathlib
import random
import struct

import pytest

import ckpt.graph as G
from ckpt.errors import CheckpointError, CorruptCheckpointError
from ckpt.tf import events as events_format
from ckpt.tf.protos import attr_value_pb2, graph_pb2

DATA = pathlib.Path(__file__).parent / "data"
GRAPHS = DATA / "graphs"
META = DATA / "tf1_saver" / "model.ckpt-30.meta"
SOURCES = {"pb": GRAPHS / "frozen.pb", "resource_pb": GRAPHS / "frozen_resource.pb", "meta": META,
           "pbtxt": GRAPHS / "frozen.pbtxt", "events": GRAPHS / "tf1.events"}


def _exercise(path) -> None:
    """Load and touch everything; only ckpt errors may escape."""
    try:
        g = G.load(path)
    except CheckpointError as exc:
        assert exc.path is None or str(path) in str(exc), exc
        return
    for op in g.operations:
        op.attr_summaries()
        try:
            assert isinstance(op.attrs, dict) and isinstance(op.outputs, list)
        except CheckpointError:
            pass
    for call in (lambda: g.inputs, lambda: g.outputs, lambda: g.predictions, lambda: g.variables,
                 lambda: g.collections, lambda: g.saver_def, lambda: g.signatures, lambda: g.to_html()):
        try:
            call()
        except CheckpointError:
            pass


def _write(tmp_path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_truncation_is_handled(kind, tmp_path):
    data = SOURCES[kind].read_bytes()
    step = max(1, len(data) // 300)  # every byte for the small files, ~300 cuts for the .meta
    for cut in range(0, len(data), step):
        _exercise(_write(tmp_path, f"cut{SOURCES[kind].suffix}", data[:cut]))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_bit_flips_are_handled(kind, tmp_path):
    data = SOURCES[kind].read_bytes()
    rng = random.Random(f"flip-{kind}")
    for _ in range(250):
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8))):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        _exercise(_write(tmp_path, f"flip{SOURCES[kind].suffix}", bytes(damaged)))


def test_random_garbage_is_handled(tmp_path):
    rng = random.Random(7)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        _exercise(_write(tmp_path, "junk.pb", blob))


def test_truncated_files_name_the_file(tmp_path):
    data = META.read_bytes()
    path = _write(tmp_path, "model.meta", data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as info:
        G.load(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    with pytest.raises(CorruptCheckpointError, match="is empty"):
        G.load(_write(tmp_path, "empty.pb", b""))


def test_size_cap_is_checked_before_reading(tmp_path):
    path = tmp_path / "huge.pb"
    with open(path, "wb") as f:  # sparse: no disk space used
        f.truncate(1 << 20)
    with pytest.raises(CorruptCheckpointError, match="larger than any graph file"):
        G.load(path, max_bytes=1 << 19)


def test_forged_huge_constant_is_refused_without_allocating(tmp_path):
    graph = graph_pb2.GraphDef()
    node = graph.node.add(name="big", op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = 1
    tensor.float_val.append(0.0)  # edge padding would expand this to 2**62 floats
    for _ in range(2):
        tensor.tensor_shape.dim.add().size = 1 << 31
    node.attr["dtype"].type = 1
    path = _write(tmp_path, "big.pb", graph.SerializeToString())
    g = G.load(path)
    assert "float32[2147483648, 2147483648]" in g.get_operation_by_name("big").attr_summaries()["value"]
    with pytest.raises(CorruptCheckpointError, match="limit"):
        g.get_operation_by_name("big").get_attr("value")
    assert g.get_tensor_by_name("big:0").shape == (1 << 31, 1 << 31)
    g.to_html()


def test_structural_problems_tensorflow_would_reject(tmp_path):
    def graph_with(*nodes) -> pathlib.Path:
        graph = graph_pb2.GraphDef()
        for name, op, inputs in nodes:
            graph.node.add(name=name, op=op, input=inputs)
        return _write(tmp_path, "g.pb", graph.SerializeToString())

    cases = {
        "appears twice": [("a", "NoOp", []), ("a", "NoOp", [])],
        "there is no node 'ghost'": [("a", "Identity", ["ghost:0"])],
        "after a control input": [("a", "NoOp", []), ("b", "NoOp", []), ("c", "Identity", ["^a", "b"])],
        "malformed input": [("a", "NoOp", []), ("c", "Identity", ["a:x:"])],
        "has no op": [("a", "", [])],
    }
    for message, nodes in cases.items():
        with pytest.raises(CorruptCheckpointError, match=message):
            G.load(graph_with(*nodes))
    assert len(G.load(graph_with(("a", "NoOp", []), ("c", "Identity", ["a:x:"])), validate=False)) == 2


def test_deep_nesting_and_bad_text(tmp_path):
    deep = "node { name: \"a\" op: \"Const\" attr { key: \"value\" value { tensor { " + \
        "variant_val { tensors { " * 200 + "} }" * 200 + " } } } }"
    with pytest.raises(CorruptCheckpointError, match="not a valid text GraphDef"):
        G.load(_write(tmp_path, "deep.pbtxt", deep.encode()))
    with pytest.raises(CorruptCheckpointError, match="not a valid text GraphDef"):
        G.load(_write(tmp_path, "bad.pbtxt", b'node { name: "a" op: 7 }'))
    nested = attr_value_pb2.AttrValue()
    inner = nested
    for _ in range(150):
        inner = inner.list.func.add().attr["x"]
    graph = graph_pb2.GraphDef()
    try:
        graph.node.add(name="f", op="NoOp").attr["deep"].CopyFrom(nested)
        blob = graph.SerializeToString()
    except Exception:  # the protobuf runtime itself may refuse to build it; nothing to test then
        return
    _exercise(_write(tmp_path, "deep.pb", blob))


def test_events_framing_errors(tmp_path):
    record = events_format.frame_record(b"\x0a\x02hi")
    assert events_format.looks_like_records(record)
    for cut in range(1, len(record)):
        with pytest.raises(CorruptCheckpointError):
            list(events_format.read_records(record[:cut]))
    forged = struct.pack("<Q", 1 << 40)
    from ckpt.tf._crc import crc32c, mask

    forged += struct.pack("<I", mask(crc32c(forged))) + b"\x00" * 8
    with pytest.raises(CorruptCheckpointError, match="claims"):
        list(events_format.read_records(forged))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_directories_and_special_paths(tmp_path):
    with pytest.raises(CheckpointError, match="without a .meta"):
        G.load(tmp_path)


# ------------------------------------------------------------------ numbers in the file that would size allocations


def _graph_def(*nodes) -> graph_pb2.GraphDef:
    """Nodes as ``(name, op, inputs)``; Placeholders get a float32 dtype."""
    graph = graph_pb2.GraphDef()
    for name, op, inputs in nodes:
        node = graph.node.add(name=name, op=op, input=inputs)
        if op == "Placeholder":
            node.attr["dtype"].type = 1
    return graph


@pytest.fixture
def tensors_made(monkeypatch):
    """How many Tensor descriptions ckpt builds (the allocation a forged output index used to drive)."""
    from ckpt.graph import _model

    made = [0]
    original = _model.Operation._tensor

    def counting(self, index):
        made[0] += 1
        return original(self, index)

    monkeypatch.setattr(_model.Operation, "_tensor", counting)
    return made


def test_an_input_naming_a_nonexistent_output_is_refused(tmp_path, tensors_made, capsys):
    from ckpt.cli.main import main as cli_main

    path = _write(tmp_path, "g.pb", _graph_def(("x", "Placeholder", []), ("y", "Identity", ["x:1000000000"]))
                  .SerializeToString())
    with pytest.raises(CorruptCheckpointError, match=r"x:1000000000, but 'x' \(Placeholder\) has 1 output"):
        G.load(path)
    assert cli_main(["graph", str(path), "--html", str(tmp_path / "g.html")]) == 2
    assert "has 1 output" in capsys.readouterr().err
    assert not (tmp_path / "g.html").exists()
    # Loaded without validation, every accessor stays bounded: the error comes when the outputs are asked for.
    g = G.load(path, validate=False)
    with pytest.raises(CorruptCheckpointError, match="has 1 output"):
        g.get_operation_by_name("x").outputs
    g.to_html()
    assert tensors_made[0] <= 10
    # Known op types are checked against their real output counts.
    for op, inputs, message in [("Switch", ["x", "x"], "has 2 output"), ("NoOp", [], "has 0 output"),
                                ("FusedBatchNormV3", ["x"] * 5, "has 6 output")]:
        bad = _graph_def(("x", "Placeholder", []), ("s", op, inputs), ("y", "Identity", ["s:6"]))
        with pytest.raises(CorruptCheckpointError, match=message):
            G.Graph(bad)
    split = _graph_def(("x", "Placeholder", []), ("s", "Split", ["x", "x"]), ("y", "Identity", ["s:3"]))
    split.node[1].attr["num_split"].i = 3
    with pytest.raises(CorruptCheckpointError, match=r"'s' \(Split\) has 3 output"):
        G.Graph(split)
    split.node[2].input[0] = "s:2"
    assert len(G.Graph(split).get_operation_by_name("s").outputs) == 3


def test_unknown_op_types_and_forged_counts_are_bounded(tmp_path, tensors_made):
    from ckpt.graph._files import MAX_OUTPUTS

    def custom(index: str) -> graph_pb2.GraphDef:
        return _graph_def(("m", "MyCustomOp", []), ("y", "Identity", [f"m:{index}"]))

    with pytest.raises(CorruptCheckpointError, match=f"is allowed {MAX_OUTPUTS}"):
        G.Graph(custom("1000000000"))
    g = G.Graph(custom(str(MAX_OUTPUTS - 1)))
    assert len(g.get_operation_by_name("m").outputs) == MAX_OUTPUTS
    # A 5000-digit index (Python's int() refuses those) is a ckpt error, validated or not.
    for validate in (True, False):
        with pytest.raises(CorruptCheckpointError):
            G.Graph(custom("9" * 5000), validate=validate)
    # An attribute may declare a huge count (num_split), but outputs are only described as far as the file uses
    # them, and the total stays proportional to the file.
    split = _graph_def(("x", "Placeholder", []), ("s", "Split", ["x", "x"]), ("y", "Identity", ["s:999999999"]))
    split.node[1].attr["num_split"].i = 10 ** 9
    with pytest.raises(CorruptCheckpointError, match="outputs in all"):
        G.Graph(split)
    many = _graph_def(*[node for i in range(2000) for node in (
        (f"m{i}", "MyCustomOp", []), (f"y{i}", "Identity", [f"m{i}:{MAX_OUTPUTS - 1}"]))])
    made_before = tensors_made[0]
    with pytest.raises(CorruptCheckpointError, match="outputs in all"):
        G.Graph(many)
    assert tensors_made[0] == made_before


def test_forged_fill_constants_are_bounded():
    graph = graph_pb2.GraphDef()
    node = graph.node.add(name="big", op="Const")
    node.attr["dtype"].type = 1
    tensor = node.attr["value"].tensor
    tensor.dtype = 1
    tensor.float_val.append(1.0)  # TensorFlow repeats it over the shape: 1 GiB from a few bytes
    tensor.tensor_shape.dim.add().size = 1 << 28
    g = G.Graph(graph)
    with pytest.raises(CorruptCheckpointError, match="limit"):
        g.get_operation_by_name("big").get_attr("value")
    tensor.tensor_shape.dim[0].size = 1000
    assert G.Graph(graph).get_operation_by_name("big").get_attr("value").sum() == 1000


def test_shapes_computed_in_the_graph_are_checked_before_allocating():
    pytest.importorskip("torch")
    import numpy as np

    from ckpt.tf.tensor_proto import make_tensor_proto
    from ckpt.graph.torch.interpreter import FeedError

    def const(graph, name, value, dtype):
        node = graph.node.add(name=name, op="Const")
        node.attr["dtype"].type = dtype
        node.attr["value"].tensor.CopyFrom(make_tensor_proto(np.array(value), dtype))

    cases = []
    g = graph_pb2.GraphDef()
    const(g, "dims", [1 << 20, 1 << 20], 3)
    const(g, "one", 1.0, 1)
    g.node.add(name="out", op="Fill", input=["dims", "one"]).attr["T"].type = 1
    cases.append((g, "Fill"))
    g = graph_pb2.GraphDef()
    const(g, "start", 0, 9)
    const(g, "limit", 10 ** 12, 9)
    const(g, "delta", 1, 9)
    g.node.add(name="out", op="Range", input=["start", "limit", "delta"]).attr["Tidx"].type = 9
    cases.append((g, "Range"))
    g = graph_pb2.GraphDef()
    const(g, "x", [1.0, 2.0, 3.0], 1)
    const(g, "pad", [[0, 10 ** 12]], 9)
    g.node.add(name="out", op="MirrorPad", input=["x", "pad"]).attr["mode"].s = b"REFLECT"
    cases.append((g, "MirrorPad"))
    g = graph_pb2.GraphDef()
    const(g, "x", [1.0, 2.0], 1)
    const(g, "m", [1 << 40], 9)
    g.node.add(name="out", op="Tile", input=["x", "m"]).attr["T"].type = 1
    cases.append((g, "Tile"))
    g = graph_pb2.GraphDef()
    const(g, "shape", [1 << 20, 1 << 20], 3)
    g.node.add(name="out", op="RandomUniform", input=["shape"]).attr["dtype"].type = 1
    cases.append((g, "RandomUniform"))
    for graph, what in cases:
        module = G.to_torch(graph, outputs="out:0")
        with pytest.raises(FeedError, match=f"{what}: .*(byte limit|do not fit)"):  # refused, not attempted
            module()
