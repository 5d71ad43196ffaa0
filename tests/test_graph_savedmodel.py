"""SavedModels against the real TensorFlow: written in the test run by ``tf.saved_model.save`` (a ``tf.Module``
whose ``tf.function`` has ``tf.cond`` and ``tf.while_loop``: functional ``StatelessIf``/``While`` in a function
library, called through ``StatefulPartitionedCall``), by Keras 3's ``model.export`` and by a TF1
``SavedModelBuilder`` (estimator-style: ``VariableV2``, a ``Saver``, a predict signature).

ckpt must list the signatures TensorFlow has, run them in PyTorch with the variables restored through the
SavedModel's own object mapping (within 1e-5 of TensorFlow's loaded model), and freeze a signature into a plain
GraphDef that TensorFlow imports and runs with the same outputs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402
import ckpt.graph as G  # noqa: E402
from ckpt.errors import CheckpointNotFoundError, CorruptCheckpointError  # noqa: E402

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.tf
v1 = tf.compat.v1


class _LoopModule(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.RandomState(3)
        self.w = tf.Variable(rng.randn(4, 3).astype(np.float32), name="w")
        self.b = tf.Variable(rng.randn(3).astype(np.float32), name="b")
        self.scale = tf.Variable(0.5, trainable=False, name="scale")

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                  tf.TensorSpec([], tf.int32, name="n")])
    def predict(self, x, n):
        y = tf.matmul(x, self.w) + self.b
        y = tf.cond(tf.reduce_sum(y) > 0, lambda: y * 2.0, lambda: y - self.scale)
        i, y = tf.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, tf.tanh(y) * self.scale + self.b), [0, y])
        return {"out": y, "steps": i}


@pytest.fixture(scope="module")
def loop_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("loop") / "export"
    module = _LoopModule()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.predict})
    return directory


def _tf_outputs(directory, signature, feeds):
    loaded = tf.saved_model.load(str(directory))
    result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in result.items()}, loaded


def _tf_spec(spec):
    return spec.dtype.name, None if spec.shape.rank is None else tuple(spec.shape.as_list())


def _check_signatures(graph, loaded):
    assert set(graph.signature_specs) == set(loaded.signatures)
    for key, fn in loaded.signatures.items():
        sig = graph.signature(key)
        inputs = fn.structured_input_signature[1]
        assert {k: (t.dtype, t.shape) for k, t in sig.inputs.items()} == {k: _tf_spec(s) for k, s in inputs.items()}
        outputs = fn.structured_outputs
        assert {k: (t.dtype, t.shape) for k, t in sig.outputs.items()} == {k: _tf_spec(s) for k, s in
                                                                             outputs.items()}


def _run_frozen(frozen, feeds: dict, fetches: list[str]):
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(tf.compat.v1.GraphDef.FromString(frozen.graph_def.SerializeToString()), name="")
        with v1.Session(graph=g) as sess:
            return sess.run(fetches, feeds)


# ================================================================================================ tf.Module


@pytest.mark.parametrize("n", [0, 3])
def test_module_with_cond_and_while_loop_runs_like_tensorflow(loop_model, n):
    x = np.random.RandomState(n).randn(5, 4).astype(np.float32)
    expected, loaded = _tf_outputs(loop_model, "serving_default", {"x": x, "n": np.int32(n)})
    graph = G.load(loop_model)
    assert isinstance(graph, G.SavedModelGraph) and graph.tags == {"serve"}
    body_ops = {n.op for f in graph.graph_def.library.function for n in f.node_def}
    assert "While" in body_ops and {"If", "StatelessIf"} & body_ops  # If: a branch reads a variable
    _check_signatures(graph, loaded)
    sig = graph.signature("serving_default")
    assert sorted(sig.inputs) == ["n", "x"] and sorted(sig.outputs) == ["out", "steps"]
    assert sig.inputs["x"].name == "serving_default_x:0" and sig.inputs["x"].shape == (None, 4)
    # Variables: the checkpoint keys the object graph gives the captured handles.
    with ckpt.Reader(graph.variables_prefix) as reader:
        keys = set(reader.keys())
    by_name = {v.name: v for v in graph.variables}
    assert {v.checkpoint_name for v in by_name.values()} <= keys
    assert by_name["w"].checkpoint_name == "w/.ATTRIBUTES/VARIABLE_VALUE"
    assert by_name["scale"].trainable is False and by_name["w"].trainable is True

    net = G.to_torch(loop_model, signature="serving_default")
    ours = net(x=torch.from_numpy(x), n=torch.tensor(n, dtype=torch.int32))
    assert set(ours) == {"out", "steps"}
    np.testing.assert_allclose(ours["out"].detach().numpy(), expected["out"], rtol=1e-5, atol=1e-5)
    assert int(ours["steps"]) == int(expected["steps"]) == n
    np.testing.assert_allclose(net.variables["w/.ATTRIBUTES/VARIABLE_VALUE"].detach().numpy(),
                               loaded.w.numpy())


def test_gradients_through_the_while_loop_equal_tensorflows(loop_model):
    x = np.random.RandomState(7).randn(3, 4).astype(np.float32)
    loaded = tf.saved_model.load(str(loop_model))
    with tf.GradientTape() as tape:
        out = loaded.predict(tf.constant(x), tf.constant(2))["out"]
        loss = tf.reduce_sum(out * out)
    expected = tape.gradient(loss, [loaded.w, loaded.b])
    net = G.to_torch(loop_model)
    result = net(x=torch.from_numpy(x), n=torch.tensor(2, dtype=torch.int32))
    (result["out"] ** 2).sum().backward()
    params = dict(net.named_parameters())
    names = net.__ckpt_names__()
    grads = {names[k]: p.grad for k, p in params.items()}
    np.testing.assert_allclose(grads["w/.ATTRIBUTES/VARIABLE_VALUE"].numpy(), expected[0].numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(grads["b/.ATTRIBUTES/VARIABLE_VALUE"].numpy(), expected[1].numpy(), rtol=1e-5,
                               atol=1e-5)


def test_freeze_inlines_the_signature_call_and_runs_in_tensorflow(loop_model, tmp_path):
    x = np.random.RandomState(1).randn(2, 4).astype(np.float32)
    expected, _ = _tf_outputs(loop_model, "serving_default", {"x": x, "n": np.int32(4)})
    graph = G.load(loop_model)
    sig = graph.signature()
    frozen = G.freeze(graph, graph.variables_prefix, sorted({t.name.split(":")[0] for t in sig.outputs.values()}))
    types = {op.type for op in frozen.operations}
    assert not types & {"VarHandleOp", "ReadVariableOp", "StatefulPartitionedCall", "PartitionedCall"}
    assert "While" in types and {"If", "StatelessIf"} & types
    frozen.save(tmp_path / "frozen.pb")
    out, steps = _run_frozen(G.load(tmp_path / "frozen.pb"), {sig.inputs["x"].name: x, sig.inputs["n"].name: 4},
                             [sig.outputs["out"].name, sig.outputs["steps"].name])
    np.testing.assert_allclose(out, expected["out"], rtol=1e-5, atol=1e-5)
    assert steps == 4
    from ckpt.cli.main import main

    assert main(["freeze", "--graph", str(loop_model), "-o", str(tmp_path / "cli.pb")]) == 0  # serving_default
    out_cli, = _run_frozen(G.load(tmp_path / "cli.pb"), {sig.inputs["x"].name: x, sig.inputs["n"].name: 4},
                           [sig.outputs["out"].name])
    np.testing.assert_allclose(out_cli, expected["out"], rtol=1e-5, atol=1e-5)
    # The frozen graph runs in PyTorch too (functional While with constants instead of variables).
    net = G.to_torch(frozen, inputs={"x": sig.inputs["x"].name, "n": sig.inputs["n"].name},
                     outputs=sig.outputs["out"].name)
    np.testing.assert_allclose(net(x=torch.from_numpy(x), n=torch.tensor(4, dtype=torch.int32)).detach().numpy(),
                               expected["out"], rtol=1e-5, atol=1e-5)


def test_listing_equals_tensorflows_import(loop_model):
    graph = G.load(loop_model / "saved_model.pb")
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(tf.compat.v1.GraphDef.FromString(graph.graph_def.SerializeToString()), name="")
    theirs = [(op.name, op.type, [t.dtype.name for t in op.outputs]) for op in g.get_operations()]
    assert [(op.name, op.type, [t.dtype for t in op.outputs]) for op in graph.operations] == theirs


def test_cli_graph_shows_signatures_and_inspect_shows_clean_names(loop_model, capsys):
    from ckpt.cli.main import main

    assert main(["graph", str(loop_model)]) == 0
    out = capsys.readouterr().out
    assert "serving_default (tensorflow/serving/predict)" in out
    assert "  input  x: serving_default_x:0 float32 [?, 4]" in out
    assert "  output out: StatefulPartitionedCall:" in out
    assert main(["graph", str(loop_model), "--variables"]) == 0
    assert "w VarHandleOp float32 [4, 3] -> w/.ATTRIBUTES/VARIABLE_VALUE" in capsys.readouterr().out
    assert main(["inspect", str(loop_model)]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[3:] if line.strip() and not line.startswith("-")]
    assert {"w", "b", "scale"} <= set(names) and not any(".ATTRIBUTES" in n for n in names)
    assert main(["inspect", str(loop_model / "variables"), "--names", "raw"]) == 0
    assert "w/.ATTRIBUTES/VARIABLE_VALUE" in capsys.readouterr().out


def test_tags_choose_the_meta_graph_and_bad_files_are_ckpt_errors(loop_model, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"no meta graph with tags \{'train'\}.*\{'serve'\}"):
        G.load(loop_model, tags={"train"})
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (loop_model / "saved_model.pb").read_bytes()
    (broken / "saved_model.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="saved_model.pb"):
        G.load(broken)
    with pytest.raises(ValueError, match="not a SavedModel"):
        G.to_torch(G.Graph(G.load(loop_model).graph_def), signature="serving_default")


# ================================================================================================ Keras 3


@pytest.mark.slow
def test_keras3_export_runs_and_freezes_like_tensorflow(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="softmax"),
    ])
    x = np.random.RandomState(0).rand(3, 8, 8, 3).astype(np.float32)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, np.eye(5, dtype=np.float32)[[0, 1, 2]], epochs=1, verbose=0)  # moving statistics change
    directory = tmp_path / "keras_export"
    model.export(str(directory), verbose=False)
    loaded = tf.saved_model.load(str(directory))
    key = "serving_default"
    expected = {k: v.numpy() for k, v in loaded.signatures[key](**{
        next(iter(loaded.signatures[key].structured_input_signature[1])): tf.constant(x)}).items()}
    graph = G.load(directory)
    _check_signatures(graph, loaded)
    sig = graph.signature(key)
    (in_key,) = sig.inputs
    with ckpt.Reader(graph.variables_prefix) as reader:
        keys = set(reader.keys())
    call = graph.get_operation_by_name(next(iter(sig.outputs.values())).name.split(":")[0])
    captured = {i.op for i in call.data_inputs}
    bound = [v for v in graph.variables if v.name in captured]  # Keras graphs hold other handles too
    assert len({v.checkpoint_name for v in bound}) == len(bound) == 8
    assert all(v.checkpoint_name in keys for v in bound)
    assert sum(v.trainable for v in bound) == 6  # moving mean and variance are not trainable
    net = G.to_torch(directory)
    ours = net(**{in_key: torch.from_numpy(x)})
    assert set(ours) == set(expected)
    for k in expected:
        np.testing.assert_allclose(ours[k].detach().numpy(), expected[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours[k].detach().numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    frozen = G.freeze(graph, graph.variables_prefix, [t.name.split(":")[0] for t in sig.outputs.values()])
    fetched = _run_frozen(frozen, {sig.inputs[in_key].name: x}, [t.name for t in sig.outputs.values()])
    for k, value in zip(sig.outputs, fetched):
        np.testing.assert_allclose(value, expected[k], rtol=1e-5, atol=1e-5)


# ================================================================================================ TF1 builder


def _build_tf1_saved_model(directory):
    """Estimator-style: VariableV2, a Saver, a predict signature under {serve} and a second meta graph {train}."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="features")
        with v1.variable_scope("dnn"):
            w = v1.get_variable("kernel", [3, 2], initializer=v1.random_normal_initializer(seed=2),
                                use_resource=False)
            b = v1.get_variable("bias", [2], initializer=v1.constant_initializer(0.25), use_resource=False)
        logits = tf.add(tf.matmul(x, w), b, name="logits")
        probs = tf.nn.softmax(logits, name="probabilities")
        classes = tf.argmax(logits, 1, name="classes")
        v1.train.get_or_create_global_step()
        builder = v1.saved_model.Builder(str(directory))
        sig = v1.saved_model.predict_signature_def({"features": x}, {"probabilities": probs, "classes": classes})
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.add_meta_graph(["train"])
            builder.save()
            feed = np.random.RandomState(4).rand(6, 3).astype(np.float32)
            expected = sess.run({"probabilities": probs, "classes": classes}, {x: feed})
    return feed, expected


def test_tf1_saved_model_builder(tmp_path):
    directory = tmp_path / "tf1_export"
    feed, expected = _build_tf1_saved_model(directory)
    graph = G.load(directory)
    assert graph.tags == {"serve"} and G.load(directory, tags=["train"]).tags == {"train"}
    sig = graph.signature("serving_default")
    assert sig.inputs["features"] == G.TensorSpec("features", "features:0", "float32", (None, 3))
    assert (sig.outputs["classes"].dtype, sig.outputs["probabilities"].shape) == ("int64", (None, 2))
    assert {v.checkpoint_name for v in graph.variables} == {"dnn/kernel", "dnn/bias", "global_step"}
    net = G.to_torch(directory)
    ours = net(features=torch.from_numpy(feed))
    np.testing.assert_allclose(ours["probabilities"].detach().numpy(), expected["probabilities"], rtol=1e-5,
                               atol=1e-6)
    assert ours["classes"].tolist() == expected["classes"].tolist()
    frozen = G.freeze(graph, graph.variables_prefix, ["probabilities", "classes"])
    probs, classes = _run_frozen(frozen, {"features:0": feed}, ["probabilities:0", "classes:0"])
    np.testing.assert_allclose(probs, expected["probabilities"], rtol=1e-6)
    assert classes.tolist() == expected["classes"].tolist()


# ================================================================================================ hostile files


def _write_saved_model(directory, graph_text: str):
    from google.protobuf import text_format

    from ckpt.tf.protos import saved_model_pb2

    message = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    meta = message.meta_graphs.add()
    meta.meta_info_def.tags.append("serve")
    text_format.Parse(graph_text, meta.graph_def)
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(message.SerializeToString())


_CALL_MISSING = """
node { name: "x" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } }
node { name: "call" op: "StatefulPartitionedCall" input: "x"
  attr { key: "f" value { func { name: "nowhere" } } }
  attr { key: "Tin" value { list { type: DT_FLOAT } } } attr { key: "Tout" value { list { type: DT_FLOAT } } } }
"""

_BAD_BODY = """
node { name: "x" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } }
node { name: "call" op: "PartitionedCall" input: "x"
  attr { key: "f" value { func { name: "f" } } }
  attr { key: "Tin" value { list { type: DT_FLOAT } } } attr { key: "Tout" value { list { type: DT_FLOAT } } } }
library { function {
  signature { name: "f" input_arg { name: "a" type: DT_FLOAT } output_arg { name: "r" type: DT_FLOAT } }
  node_def { name: "y" op: "Neg" input: "a:x:y:z" attr { key: "T" value { type: DT_FLOAT } } }
  ret { key: "r" value: "y:y:99999999999999999999" } } }
"""


def test_hostile_saved_models_are_ckpt_errors(tmp_path):
    from ckpt.errors import CheckpointError, UnsupportedError, UnsupportedOperationsError
    from ckpt.tf.protos import saved_model_pb2

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "saved_model.pb").write_bytes(saved_model_pb2.SavedModel(saved_model_schema_version=1)
                                           .SerializeToString())
    with pytest.raises(CorruptCheckpointError, match="no meta graph"):
        G.load(empty)
    _write_saved_model(tmp_path / "missing", _CALL_MISSING)
    with pytest.raises(UnsupportedOperationsError, match="nowhere"):
        G.to_torch(tmp_path / "missing", outputs="call:0")
    with pytest.raises(UnsupportedError, match="nowhere"):
        G.freeze(tmp_path / "missing", ckpt.save({"v": np.zeros(1)}, str(tmp_path / "ck"), sync=False), ["call"])
    _write_saved_model(tmp_path / "bad", _BAD_BODY)
    for attempt in (lambda: G.to_torch(tmp_path / "bad", outputs="call:0"),
                    lambda: G.freeze(tmp_path / "bad", str(tmp_path / "ck"), ["call"])):
        with pytest.raises(CheckpointError):
            attempt()
