"""Output arguments of TensorFlow's op types, from TensorFlow 2.21's OpDefs (the op registry), without TensorFlow.

One line per op type: ``Name arg:spec ...`` (``-`` for none). A spec is a type attribute (``T``), with its OpDef
default in parentheses when it has one (``output_type(int64)``), a fixed type (``=int32``), a count times a type
(``num_split*T``) or a type-list attribute (``[Tout]``); ``&`` marks a reference output. ``tests/test_graph_opdefs.py``
compares every line with TensorFlow's registry (its ``opdef_line`` is how the table was made). Graph listings take
output counts and dtypes from here; the counts also bound the ``"op:N"`` inputs a graph file may use (an untrusted
number must never size a list).
"""

from __future__ import annotations

__all__ = ["OP_OUTPUTS", "output_count", "output_dtypes", "output_arg_names", "is_variadic"]

_TABLE = """
Abs y:T
Add z:T
AddN sum:T
AddV2 z:T
All output:=bool
Any output:=bool
ApplyAdam out:&T
ApplyGradientDescent out:&T
ApplyMomentum out:&T
ApplyRMSProp out:&T
ArgMax output:output_type(int64)
ArgMin output:output_type(int64)
AsString output:=string
Assert -
Assign output_ref:&T
AssignAdd output_ref:&T
AssignAddVariableOp -
AssignSub output_ref:&T
AssignSubVariableOp -
AssignVariableOp -
AvgPool output:T
AvgPool3D output:T
AvgPoolGrad output:T
BatchMatMul output:T
BatchMatMulV2 output:T
BatchMatMulV3 output:Tout
BatchNormWithGlobalNormalization result:T
BatchToSpaceND output:T
BiasAdd output:T
BiasAddGrad output:T
BiasAddV1 output:T
Bitcast output:type
BroadcastArgs r0:T(int32)
BroadcastGradientArgs r0:T(int32) r1:T(int32)
BroadcastTo output:T
Case output:[Tout]
Cast y:DstT
Ceil y:T
CheckNumerics output:T
ClipByValue output:T
Concat output:T
ConcatV2 output:T
Const output:dtype
ControlTrigger -
Conv2D output:T
Conv2DBackpropFilter output:T
Conv2DBackpropInput output:T
Conv3D output:T
Conv3DBackpropInputV2 output:T
Cos y:T
CropAndResize crops:=float32
Cumprod out:T
Cumsum out:T
DecodeJpeg image:=uint8
DecodePng image:dtype(uint8)
DecodeRaw output:out_type
DepthToSpace output:T
DepthwiseConv2dNative output:T
DestroyResourceOp -
DisableCopyOnRead -
Div z:T
DivNoNan z:T
Einsum output:T
Elu activations:T
EncodeJpeg contents:=string
EnsureShape output:T
Enter output:T
Equal z:=bool
Erf y:T
Exit output:T
Exp y:T
ExpandDims output:T
Expm1 y:T
FIFOQueueV2 handle:=resource
Fill output:T
Floor y:T
FloorDiv z:T
FloorMod z:T
FusedBatchNorm y:T batch_mean:T batch_variance:T reserve_space_1:T reserve_space_2:T
FusedBatchNormGradV3 x_backprop:T scale_backprop:U offset_backprop:U reserve_space_4:U reserve_space_5:U
FusedBatchNormV2 y:T batch_mean:U batch_variance:U reserve_space_1:U reserve_space_2:U
FusedBatchNormV3 y:T batch_mean:U batch_variance:U reserve_space_1:U reserve_space_2:U reserve_space_3:U
Gather output:Tparams
GatherNd output:Tparams
GatherV2 output:Tparams
Greater z:=bool
GreaterEqual z:=bool
HashTableV2 table_handle:=resource
Identity output:T
IdentityN output:[T]
If output:[Tout]
InitializeTableV2 -
Inv y:T
IsFinite y:=bool
IsInf y:=bool
IsNan y:=bool
IsVariableInitialized is_initialized:=bool
IteratorGetNext components:[output_types]
IteratorV2 handle:=resource
L2Loss output:T
LRN output:T(float32)
LeakyRelu activations:T(float32)
Less z:=bool
LessEqual z:=bool
Log y:T
Log1p y:T
LogSoftmax logsoftmax:T
LogicalAnd z:=bool
LogicalNot y:=bool
LogicalOr z:=bool
LookupTableFindV2 values:Tout
LookupTableImportV2 -
LoopCond output:=bool
MakeIterator -
MatMul product:T
MatrixBandPart band:T
MatrixDiag output:T
Max output:T
MaxPool output:T(float32)
MaxPool3D output:T
MaxPoolGrad output:T(float32)
MaxPoolV2 output:T(float32)
Maximum z:T
Mean output:T
Merge output:T value_index:=int32
MergeV2Checkpoints -
Min output:T
Minimum z:T
MirrorPad output:T
Mod z:T
Mul z:T
MutableHashTableV2 table_handle:=resource
Neg y:T
NextIteration output:T
NoOp -
NonMaxSuppressionV3 selected_indices:=int32
NonMaxSuppressionV4 selected_indices:=int32 valid_outputs:=int32
NonMaxSuppressionV5 selected_indices:=int32 selected_scores:T(float32) valid_outputs:=int32
NotEqual z:=bool
OneHot output:T
OneShotIterator handle:=resource
OnesLike y:T
Pack output:T
Pad output:T
PadV2 output:T
ParseExample sparse_indices:Nsparse*=int64 sparse_values:[sparse_types] sparse_shapes:Nsparse*=int64 dense_values:[Tdense]
ParseExampleV2 sparse_indices:num_sparse*=int64 sparse_values:[sparse_types] sparse_shapes:num_sparse*=int64 dense_values:[Tdense] ragged_values:[ragged_value_types] ragged_row_splits:[ragged_split_types]
ParseSingleExample sparse_indices:num_sparse*=int64 sparse_values:[sparse_types] sparse_shapes:num_sparse*=int64 dense_values:[Tdense]
PartitionedCall output:[Tout]
Placeholder output:dtype
PlaceholderV2 output:dtype
PlaceholderWithDefault output:dtype
Pow z:T
PreventGradient output:T
Print output:T
PrintV2 -
Prod output:T
QueueDequeueV2 components:[component_types]
RandomShuffleQueueV2 handle:=resource
RandomStandardNormal output:dtype
RandomUniform output:dtype
RandomUniformInt output:Tout
Range output:Tidx(int32)
Rank output:=int32
ReadVariableOp value:dtype
RealDiv z:T
Reciprocal y:T
RefEnter output:&T
RefExit output:&T
RefIdentity output:&T
RefMerge output:&T value_index:=int32
RefNextIteration output:&T
RefSwitch output_false:&T output_true:&T
RegexReplace output:=string
Relu activations:T
Relu6 activations:T
Relu6Grad backprops:T
ReluGrad backprops:T
Reshape output:T
ResizeBicubic resized_images:=float32
ResizeBilinear resized_images:=float32
ResizeNearestNeighbor resized_images:T
ResourceApplyAdam -
ResourceApplyGradientDescent -
ResourceGather output:dtype
ResourceScatterUpdate -
Restore tensor:dt
RestoreSlice tensor:dt
RestoreV2 tensors:[dtypes]
ReverseV2 output:T
Roll output:T
Round y:T
Rsqrt y:T
Save -
SaveSlices -
SaveV2 -
ScatterAdd output_ref:&T
ScatterDiv output_ref:&T
ScatterMul output_ref:&T
ScatterNd output:T
ScatterSub output_ref:&T
ScatterUpdate output_ref:&T
Select output:T
SelectV2 output:T
Selu activations:T
Shape output:out_type(int32)
ShapeN output:N*out_type(int32)
ShardedFilename filename:=string
ShardedFilespec filename:=string
Sigmoid y:T
SigmoidGrad z:T
Sign y:T
Sin y:T
Size output:out_type(int32)
Slice output:T
Snapshot output:T
Softmax softmax:T
SoftmaxCrossEntropyWithLogits loss:T backprop:T
Softplus activations:T
Softsign activations:T
SpaceToBatchND output:T
SpaceToDepth output:T
SparseSoftmaxCrossEntropyWithLogits loss:T backprop:T
SparseToDense dense:T
Split output:num_split*T
SplitV output:num_split*T
Sqrt y:T
Square y:T
SquaredDifference z:T
Squeeze output:T
StatefulPartitionedCall output:[Tout]
StatelessCase output:[Tout]
StatelessIf output:[Tout]
StatelessWhile output:[T]
StaticRegexFullMatch output:=bool
StopGradient output:T
StridedSlice output:T
StringFormat output:=string
StringJoin output:=string
StringLength output:=int32
StringSplit indices:=int64 values:=string shape:=int64
StringSplitV2 indices:=int64 values:=string shape:=int64
StringToNumber output:out_type(float32)
Sub z:T
Substr output:=string
Sum output:T
Switch output_false:T output_true:T
Tanh y:T
TanhGrad z:T
TemporaryVariable ref:&dtype
TensorArrayCloseV3 -
TensorArrayConcatV3 value:dtype lengths:=int64
TensorArrayGatherV3 value:dtype
TensorArrayGradV3 grad_handle:=resource flow_out:=float32
TensorArrayReadV3 value:dtype
TensorArrayScatterV3 flow_out:=float32
TensorArraySizeV3 size:=int32
TensorArraySplitV3 flow_out:=float32
TensorArrayV3 handle:=resource flow:=float32
TensorArrayWriteV3 flow_out:=float32
TensorListElementShape element_shape:shape_type
TensorListFromTensor output_handle:=variant
TensorListGetItem item:element_dtype
TensorListLength length:=int32
TensorListPopBack output_handle:=variant tensor:element_dtype
TensorListPushBack output_handle:=variant
TensorListReserve handle:=variant
TensorListSetItem output_handle:=variant
TensorListStack tensor:element_dtype
Tile output:T
TopK values:T indices:=int32
TopKV2 values:T indices:index_type(int32)
Transpose y:T
TruncateDiv z:T
TruncateMod z:T
TruncatedNormal output:dtype
Unique y:T idx:out_idx(int32)
UniqueV2 y:T idx:out_idx(int32)
UniqueWithCounts y:T idx:out_idx(int32) count:out_idx(int32)
Unpack output:num*T
VarHandleOp resource:=resource
VarIsInitializedOp is_initialized:=bool
Variable ref:&dtype
VariableV2 ref:&dtype
Where index:=int64
While output:[T]
ZerosLike y:T
"""

#: Op type -> ((argument name, spec), ...) as in the table above.
OP_OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    line.split()[0]: tuple(tuple(a.split(":", 1)) for a in line.split()[1:] if a != "-")  # type: ignore[misc]
    for line in _TABLE.strip().splitlines()
}


def is_variadic(op_type: str) -> bool:
    """Whether the op's output count depends on an attribute (``Split``, ``IdentityN``, ``While``...)."""
    return any("*" in spec or spec.lstrip("&").startswith("[") for _, spec in OP_OUTPUTS.get(op_type, ()))


def _arg_count(node, spec: str) -> int | None:
    spec = spec.lstrip("&")
    if spec.startswith("["):
        attr = node.attr.get(spec[1:-1]) if spec[1:-1] in node.attr else None
        return len(attr.list.type) if attr is not None and attr.WhichOneof("value") == "list" else None
    if "*" in spec:
        name = spec.split("*", 1)[0]
        attr = node.attr[name] if name in node.attr else None
        return max(int(attr.i), 0) if attr is not None and attr.WhichOneof("value") == "i" else None
    return 1


def _arg_types(node, spec: str, count: int) -> list[str | None]:
    from ..tf.tensor_proto import dtype_name

    ref = spec.startswith("&")
    spec = spec.lstrip("&")
    if spec.startswith("["):
        types: list[str | None] = [dtype_name(t) for t in node.attr[spec[1:-1]].list.type]
    else:
        spec = spec.split("*", 1)[-1]
        if spec.startswith("="):
            dtype: str | None = spec[1:]
        else:
            name, _, default = spec.partition("(")
            if name in node.attr and node.attr[name].WhichOneof("value") == "type":
                dtype = dtype_name(node.attr[name].type)
            else:
                dtype = default[:-1] or None  # stripped default attributes (SavedModels drop them)
        types = [dtype] * count
    return [t + "_ref" if ref and t is not None and not t.endswith("_ref") else t for t in types]


def output_count(node) -> int | None:
    """How many outputs ``node`` (a NodeDef) has by its OpDef; None for an op type not in the table, or a count
    attribute the node lacks."""
    args = OP_OUTPUTS.get(node.op)
    if args is None:
        return None
    total = 0
    for _, spec in args:
        count = _arg_count(node, spec)
        if count is None:
            return None
        total += count
    return total


def output_dtypes(node, limit: int) -> list[str | None] | None:
    """The dtype names of ``node``'s first ``limit`` outputs by its OpDef, or None when the table cannot tell."""
    args = OP_OUTPUTS.get(node.op)
    if args is None:
        return None
    out: list[str | None] = []
    for _, spec in args:
        if len(out) >= limit:
            break
        count = _arg_count(node, spec)
        if count is None:
            return None
        out.extend(_arg_types(node, spec, min(count, limit - len(out))))
    return out[:limit]


def output_arg_names(op_type: str) -> tuple[str, ...] | None:
    """The OpDef's output argument names (how function bodies spell outputs: ``node:output_true:0``)."""
    args = OP_OUTPUTS.get(op_type)
    return None if args is None else tuple(name for name, _ in args)
