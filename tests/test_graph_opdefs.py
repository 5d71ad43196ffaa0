"""Graph listings against TensorFlow's own import: operation order, output counts and output dtypes (from the
OpDefs), and a Saver created inside a variable scope.

Every graph is built by TensorFlow in the test run; ckpt's view of it must equal what ``tf.import_graph_def`` /
``import_meta_graph`` make of the same file.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt.graph as G  # noqa: E402

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf
v1 = tf.compat.v1


def _imported(graph_def):
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(graph_def, name="")
    return g


def _listing(ops):
    return [(op.name, op.type, [t.dtype if isinstance(t.dtype, str) else t.dtype.name for t in op.outputs])
            for op in ops]


def _shuffled(graph_def, seed=0):
    """The same graph with its nodes in a scrambled (non-topological) file order."""
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    nodes = list(out.node)
    order = np.random.RandomState(seed).permutation(len(nodes))
    del out.node[:]
    out.node.extend(nodes[i] for i in order)
    return out


def _strip_shapes(graph_def):
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    for node in out.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return out


def _control_flow_graph():
    """TF1 cond and while loop, TensorArrays, ArgMax(output_type), Shape of strings, Unique, TopK, Switch/Merge."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        s = v1.placeholder(tf.string, [None], name="s")
        w = v1.get_variable("w", [4, 3], initializer=v1.ones_initializer(), use_resource=False)
        y = tf.matmul(x, w)
        data, pred = v1.placeholder(tf.float32, [3], name="d"), v1.placeholder(tf.bool, [], name="p")
        from tensorflow.python.ops import control_flow_ops
        f, t = control_flow_ops.switch(data, pred)
        control_flow_ops.merge([f, t], name="merged")
        tf.argmax(y, 1, output_type=tf.int32, name="am32")
        tf.argmax(y, 1, name="am64")
        tf.shape(s, name="shape_s", out_type=tf.int64)
        tf.unique(tf.cast(tf.reshape(y, [-1]), tf.int32), out_idx=tf.int64, name="uniq")
        tf.nn.top_k(y, 2, name="topk")
        tf.split(y, 3, axis=1, name="spl")
        ta = tf.TensorArray(tf.float32, size=2, name="ta")
        ta.write(0, y[0]).stack(name="stacked")
    return g.as_graph_def()


def _v1_control_flow_graph():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        flag = v1.placeholder(tf.bool, [], name="flag")
        tf.identity(tf.cond(flag, lambda: x * 2.0, lambda: x - 1.0), name="cond_out")
        i0 = tf.constant(0)
        tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 2.0), [i0, x], name="loop")
    return g.as_graph_def()


def _check_against_tf(graph_def):
    theirs = _imported(graph_def).get_operations()
    ours = G.Graph(graph_def).get_operations()
    assert [op.name for op in ours] == [op.name for op in theirs]
    assert _listing(ours) == _listing(theirs)


def test_listings_equal_tensorflow_for_control_flow_and_multi_output_ops():
    gd = _control_flow_graph()
    _check_against_tf(gd)
    _check_against_tf(_strip_shapes(gd))  # counts and dtypes from the OpDefs, not from _output_shapes
    ours = G.Graph(_strip_shapes(gd))
    assert [t.dtype for t in ours.get_operation_by_name("merged").outputs] == ["float32", "int32"]
    assert ours.get_tensor_by_name("am32:0").dtype == "int32"
    assert ours.get_tensor_by_name("am64:0").dtype == "int64"
    assert ours.get_tensor_by_name("shape_s:0").dtype == "int64"
    assert [t.dtype for t in ours.get_operation_by_name("uniq").outputs] == ["int32", "int64"]


def test_tf1_cond_and_while_loop_listing_equal_tensorflow():
    v1.disable_control_flow_v2()
    try:
        gd = _v1_control_flow_graph()
    finally:
        v1.enable_control_flow_v2()
    assert {"Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond"} <= {n.op for n in gd.node}
    _check_against_tf(gd)
    _check_against_tf(_strip_shapes(gd))
    _check_against_tf(_shuffled(gd, 1))


def test_v2_control_flow_listing_equal_tensorflow():
    gd = _v1_control_flow_graph()  # control flow v2: If / While with a function library
    assert {"StatelessIf", "While"} & {n.op for n in gd.node} or {"If", "StatelessWhile"} & {n.op for n in gd.node}
    _check_against_tf(_strip_shapes(gd))


def test_operations_follow_tensorflows_import_order():
    g = tf.Graph()
    with g.as_default():
        a = v1.placeholder(tf.float32, [2], name="a")
        b = tf.constant([1.0, 2.0], name="b")
        c = tf.add(a, b, name="c")
        d = tf.multiply(c, b, name="d")
        tf.identity(d, name="e")
        tf.no_op(name="n")
    gd = g.as_graph_def()
    for seed in range(4):
        shuffled = _shuffled(gd, seed)
        _check_against_tf(shuffled)
        assert [n.name for n in shuffled.node] != [op.name for op in G.Graph(shuffled).operations] or seed == 0


# ================================================================================================ Saver in a scope


def test_saver_inside_a_variable_scope(tmp_path):
    g = tf.Graph()
    with g.as_default():
        with v1.variable_scope("pos_var_scope_zh"):
            x = v1.placeholder(tf.float32, [None, 3], name="x")
            w = v1.get_variable("w", [3, 2], initializer=v1.random_normal_initializer(seed=1))
            b = v1.get_variable("b", [2], initializer=v1.constant_initializer(0.5))
            y = tf.identity(tf.matmul(x, w) + b, name="y")
            saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"))
            feed = np.random.RandomState(0).rand(4, 3).astype(np.float32)
            expected = sess.run(y, {x: feed})
    graph = G.load(prefix + ".meta")
    assert graph.saver_def.filename_tensor_name.startswith("pos_var_scope_zh/save/")
    assert [op.name for op in graph.inputs] == ["pos_var_scope_zh/x"]
    assert graph.role("pos_var_scope_zh/w") == "model"
    assert graph.role("pos_var_scope_zh/save/Const") == "saver"
    assert [op.name for op in graph.outputs] == ["pos_var_scope_zh/y"]
    torch = pytest.importorskip("torch")
    net = G.to_torch(graph, prefix, outputs="pos_var_scope_zh/y:0")
    np.testing.assert_allclose(net(torch.from_numpy(feed)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    from ckpt.cli.main import main
    assert main(["graph", prefix + ".meta", "--inputs"]) == 0


# ================================================================================================ the OpDef table

# Op types the table holds beyond those ckpt runs (control flow, TensorArrays, I/O, the ops of issue 17).
EXTRA_OPS = """If StatelessIf While StatelessWhile Case StatelessCase PartitionedCall StatefulPartitionedCall
TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayGatherV3 TensorArrayScatterV3 TensorArraySizeV3
TensorArrayConcatV3 TensorArraySplitV3 TensorArrayCloseV3 TensorArrayGradV3 TensorListReserve TensorListFromTensor
TensorListStack TensorListGetItem TensorListSetItem TensorListPushBack TensorListPopBack TensorListLength
TensorListElementShape Enter RefEnter Exit RefExit NextIteration RefNextIteration LoopCond Merge RefMerge Switch
RefSwitch ControlTrigger Unique UniqueV2 UniqueWithCounts TopKV2 TopK ArgMax ArgMin Shape ShapeN Size Rank
ResizeBilinear ResizeBicubic ResizeNearestNeighbor DivNoNan DepthToSpace SpaceToDepth SpaceToBatchND BatchToSpaceND
Conv3D Conv3DBackpropInputV2 MaxPool3D AvgPool3D StaticRegexFullMatch StringJoin ShardedFilename MergeV2Checkpoints
SaveV2 RestoreV2 VarHandleOp ReadVariableOp AssignVariableOp DestroyResourceOp VarIsInitializedOp Placeholder
PlaceholderWithDefault Identity IdentityN NoOp Const StopGradient Pack Unpack Where Select SelectV2 Fill Range
ZerosLike OnesLike Cumsum Cumprod Cast Bitcast BroadcastArgs BroadcastGradientArgs Squeeze ExpandDims Reshape
MatrixBandPart MatrixDiag GatherNd ScatterNd ResourceGather ResourceScatterUpdate Softplus Sigmoid Tanh
FusedBatchNormV3 FusedBatchNormGradV3 Conv2DBackpropFilter Conv2DBackpropInput MaxPoolGrad AvgPoolGrad
SoftmaxCrossEntropyWithLogits SparseSoftmaxCrossEntropyWithLogits Assert Print PrintV2 StringFormat
HashTableV2 LookupTableFindV2 LookupTableImportV2 InitializeTableV2 MutableHashTableV2 NonMaxSuppressionV3
NonMaxSuppressionV4 NonMaxSuppressionV5 CropAndResize ReverseV2 Roll Relu6Grad SigmoidGrad TanhGrad
IteratorGetNext IteratorV2 MakeIterator OneShotIterator QueueDequeueV2 FIFOQueueV2 RandomShuffleQueueV2
ParseExample ParseExampleV2 ParseSingleExample DecodeRaw DecodeJpeg DecodePng EncodeJpeg StringToNumber
AsString RegexReplace StringSplit StringSplitV2 StringLength Substr DisableCopyOnRead
""".split()


def opdef_line(name: str) -> str:
    """One line of ckpt.graph._opdefs' table, from TensorFlow's registered OpDef (also how the table was made)."""
    from tensorflow.python.framework import op_def_registry

    od = op_def_registry.get(name)
    assert od is not None, name
    defaults = {a.name: a.default_value for a in od.attr if a.HasField("default_value")}
    args = []
    for a in od.output_arg:
        if a.type_list_attr:
            spec = f"[{a.type_list_attr}]"
        else:
            spec = a.type_attr if a.type_attr else "=" + tf.dtypes.as_dtype(a.type).name
            if a.type_attr and a.type_attr in defaults and defaults[a.type_attr].WhichOneof("value") == "type":
                spec += f"({tf.dtypes.as_dtype(defaults[a.type_attr].type).name})"
            if a.number_attr:
                spec = f"{a.number_attr}*{spec}"
        args.append(("&" if a.is_ref else "") and f"{a.name}:&{spec}" or f"{a.name}:{spec}")
    return f"{name} {' '.join(args) if args else '-'}"


def test_opdef_table_equals_tensorflows_registry():
    from ckpt.graph._opdefs import _TABLE

    lines = _TABLE.strip().splitlines()
    assert len(lines) > 250
    assert [opdef_line(line.split()[0]) for line in lines] == lines
