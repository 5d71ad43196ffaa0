"""Fetch-driven execution of real TF1 training graphs (``ckpt.graph.to_torch``), proven against TensorFlow's Session.

The meta graph is written by TensorFlow in the test, with everything a tutorial's training script leaves in it:
batch norm whose moving averages are updated by ``AssignSub`` (ref variables) or ``AssignSubVariableOp``
(resource variables) through ``UPDATE_OPS``, a ``tf.cond`` on ``is_training`` (``Switch``/``Merge``), Adam inside a
name scope (``loss/train_op``, ``loss/gradients/...``), a Saver, summaries, and a diagnostics head made of
operations ckpt has no kernel for. As in ``Session.run``, each fetch runs only its own subgraph: the inference
output converts and matches TensorFlow (1e-6), the loss and intermediate tensors too (1e-5), feeding a tensor
cuts the graph there, and fetching what cannot run names every operation in the way and the path to it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
torch = pytest.importorskip("torch")

import ckpt.graph  # noqa: E402
from ckpt.cli.main import main as cli_main  # noqa: E402
from ckpt.errors import UnsupportedOperationsError  # noqa: E402

TOL = 1e-6
LOSS_TOL = 1e-5


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module", params=["ref variables, Switch/Merge", "resource variables, Switch/Merge",
                                        "resource variables, StatelessIf"])
def trained(request, tf, tmp_path_factory):
    v1 = tf.compat.v1
    resource = request.param.startswith("resource")
    legacy = request.param.endswith("Switch/Merge")
    d = tmp_path_factory.mktemp("fetch")
    if legacy:
        v1.disable_control_flow_v2()
    try:
        g = tf.Graph()
        with g.as_default():
            v1.set_random_seed(1)
            x = v1.placeholder(tf.float32, [None, 4], name="x")
            y = v1.placeholder(tf.float32, [None, 1], name="y")
            is_training = v1.placeholder_with_default(False, [], name="is_training")
            with v1.variable_scope("model"):
                w = v1.get_variable("w", [4, 3], use_resource=resource)
                h = tf.matmul(x, w)
                gamma = v1.get_variable("gamma", [3], initializer=v1.ones_initializer(), use_resource=resource)
                beta = v1.get_variable("beta", [3], initializer=v1.zeros_initializer(), use_resource=resource)
                moving_mean = v1.get_variable("moving_mean", [3], initializer=v1.zeros_initializer(),
                                              trainable=False, use_resource=resource)
                moving_var = v1.get_variable("moving_variance", [3], initializer=v1.ones_initializer(),
                                             trainable=False, use_resource=resource)
                batch_mean, batch_var = tf.nn.moments(h, [0])
                mean, var = v1.cond(is_training, lambda: (batch_mean, batch_var),
                                    lambda: (tf.identity(moving_mean), tf.identity(moving_var)))
                for variable, value in ((moving_mean, batch_mean), (moving_var, batch_var)):
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS,
                                         v1.assign_sub(variable, (variable - value) * 0.1))
                h = tf.nn.relu(tf.nn.batch_normalization(h, mean, var, beta, gamma, 1e-3), name="Relu")
                w2 = v1.get_variable("w2", [3, 1], use_resource=resource)
                logits = tf.matmul(h, w2, name="logits")
                prediction = tf.sigmoid(logits, name="Sigmoid")
            with tf.name_scope("loss"):
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
                v1.summary.scalar("loss", loss)
                with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
                    train_op = v1.train.AdamOptimizer(0.05).minimize(loss, name="train_op")
            v1.summary.histogram("w", w)
            merged = v1.summary.merge_all()
            with tf.name_scope("diagnostics"):  # needs labels: not an inference output; no kernels in ckpt
                top = tf.math.lgamma(logits * y, name="Lgamma")
                tf.add(top, tf.math.bessel_i0e(logits), name="out")
            saver = v1.train.Saver()
            rng = np.random.default_rng(0)
            xs = rng.standard_normal((8, 4)).astype(np.float32)
            ys = (rng.random((8, 1)) > 0.5).astype(np.float32)
            with v1.Session(graph=g) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(4):
                    sess.run([train_op, merged], {x: xs, y: ys, is_training: True})
                prefix = saver.save(sess, str(d / "model.ckpt"), global_step=4)
                relu = sess.run(h, {x: xs})
                expected = {
                    "prediction": sess.run(prediction, {x: xs}),
                    "train_prediction": sess.run(prediction, {x: xs, is_training: True}),
                    "loss": sess.run(loss, {x: xs, y: ys}),
                    "relu": relu,
                    "cut": sess.run(prediction, {h: relu * 2}),
                }
    finally:
        if legacy:
            v1.enable_control_flow_v2()
    types = {op.type for op in g.get_operations()}
    assert ({"Switch", "Merge"} <= types) if legacy else bool({"If", "StatelessIf"} & types)
    assert {"ScalarSummary", "MergeSummary", "SaveV2", "Lgamma", "BesselI0e"} <= types
    assert ("AssignSubVariableOp" if resource else "AssignSub") in types
    assert any(t.startswith("ResourceApplyAdam" if resource else "ApplyAdam") for t in types)
    return {"meta": prefix + ".meta", "prefix": prefix, "dir": d, "xs": xs, "ys": ys, "expected": expected}


@pytest.mark.tf
def test_default_outputs_are_the_inference_outputs(trained):
    g = ckpt.graph.load(trained["meta"])
    names = [op.name for op in g.outputs]
    assert names == ["model/Sigmoid", "loss/Mean", "diagnostics/out"]  # no gradients, updates, savers, summaries
    assert not any("gradients" in n or "switch_" in n or "Assign" in n for n in names)
    assert g.predictions == []  # the loss's internals (logistic_loss/Select) are no prediction beside the Sigmoid
    assert g.role("loss/train_op") == "train" and g.role("Merge/MergeSummary") == "summary"
    assert g.role("loss/gradients/AddN") == "train"
    assert {g.role(op.name) for op in g.operations if op.type in ("AssignSub", "AssignSubVariableOp")} == {"update"}
    module = ckpt.graph.to_torch(trained["meta"], checkpoint=trained["prefix"])
    assert module.outputs == ["model/Sigmoid:0"] and module.inputs == ["x:0"]


@pytest.mark.tf
def test_module_runs_every_fetch_whose_subgraph_it_supports(trained):
    xs, ys, expected = trained["xs"], trained["ys"], trained["expected"]
    module = ckpt.graph.to_torch(trained["meta"], checkpoint=trained["prefix"])
    with torch.no_grad():
        np.testing.assert_allclose(module(xs).numpy(), expected["prediction"], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(module.run("loss/Mean:0", {"x:0": xs, "y:0": ys}).item(), expected["loss"],
                                   rtol=LOSS_TOL, atol=LOSS_TOL)
        np.testing.assert_allclose(module.run("model/Relu:0", {"x:0": xs}).numpy(), expected["relu"],
                                   rtol=TOL, atol=TOL)
        # The cond follows the mode: train() takes the batch statistics, as is_training=True does.
        module.train()
        np.testing.assert_allclose(module(xs).numpy(), expected["train_prediction"], rtol=TOL, atol=TOL)
        module.eval()
        # Feeding a tensor cuts the graph there: x is not needed, and the values are TensorFlow's.
        cut = module.run("model/Sigmoid:0", {"model/Relu:0": expected["relu"] * 2})
    np.testing.assert_allclose(cut.numpy(), expected["cut"], rtol=TOL, atol=TOL)
    # The loss trains in PyTorch (gradients reach the variables the optimizer in the graph would update).
    module.run("loss/Mean:0", {"x:0": xs, "y:0": ys}).backward()
    assert module.variables["model/w"].grad is not None


@pytest.mark.tf
def test_unsupported_operations_raise_only_for_fetches_that_need_them(trained):
    xs, ys = trained["xs"], trained["ys"]
    module = ckpt.graph.to_torch(trained["meta"], checkpoint=trained["prefix"])
    with pytest.raises(UnsupportedOperationsError) as info:
        module.run("diagnostics/out:0", {"x:0": xs, "y:0": ys})
    err = info.value
    # Every operation in the way, each with its path from the fetch.
    assert set(err.operations) == {"Lgamma", "BesselI0e"}
    assert err.paths["diagnostics/Lgamma"] == ["diagnostics/out:0", "diagnostics/Lgamma"]
    assert err.paths["diagnostics/bessel_i0e/BesselI0e"] == ["diagnostics/out:0",
                                                              "diagnostics/bessel_i0e/BesselI0e"]
    text = str(err)
    assert "Lgamma: diagnostics/Lgamma" in text and "BesselI0e: diagnostics/bessel_i0e/BesselI0e" in text
    assert "diagnostics/out:0 <- diagnostics/Lgamma" in text and "diagnostics/out:0" in err.outputs
    # Deeper: the path goes through the ops between.
    with pytest.raises(UnsupportedOperationsError) as info:
        module.run("Merge/MergeSummary:0", {"x:0": xs, "y:0": ys})
    assert {"MergeSummary", "ScalarSummary", "HistogramSummary"} <= set(info.value.operations)
    assert info.value.paths["loss/loss"] == ["Merge/MergeSummary:0", "loss/loss"]
    # Training ops: named with what to do instead.
    for fetch in ("loss/train_op", "loss/gradients/AddN:0"):
        with pytest.raises(UnsupportedOperationsError, match="training step.*loss.backward"):
            module.run(fetch, {"x:0": xs, "y:0": ys})
    # Feeding the unsupported ops' outputs cuts them off: the rest of the fetch runs.
    with torch.no_grad():
        out = module.run("diagnostics/out:0", {"diagnostics/Lgamma:0": np.ones((8, 1), np.float32),
                                               "diagnostics/bessel_i0e/BesselI0e:0": np.full((8, 1), 2, np.float32)})
    assert out.tolist() == [[3.0]] * 8
    # Asking for the diagnostics up front fails at conversion, with the same report.
    with pytest.raises(UnsupportedOperationsError, match="diagnostics/out:0 <- diagnostics/Lgamma"):
        ckpt.graph.to_torch(trained["meta"], checkpoint=trained["prefix"], outputs="diagnostics/out:0")


@pytest.mark.tf
def test_cli_run_prints_the_prediction_and_cuts_at_feeds(trained, capsys):
    d, xs, expected = trained["dir"], trained["xs"], trained["expected"]
    np.save(d / "x.npy", xs)
    assert cli_main(["run", trained["meta"], "--feed", f"x={d / 'x.npy'}", "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert list(outputs) == ["model/Sigmoid:0"]
    np.testing.assert_allclose(np.array(outputs["model/Sigmoid:0"]["value"]), expected["prediction"],
                               rtol=TOL, atol=TOL)
    np.save(d / "relu.npy", expected["relu"] * 2)
    assert cli_main(["run", trained["meta"], "--feed", f"model/Relu:0={d / 'relu.npy'}", "--fetch",
                     "model/Sigmoid:0", "--json"]) == 0
    value = json.loads(capsys.readouterr().out)["outputs"]["model/Sigmoid:0"]["value"]
    np.testing.assert_allclose(np.array(value), expected["cut"], rtol=TOL, atol=TOL)
    # Text output without --fetch: the prediction, not a gradient.
    assert cli_main(["run", trained["meta"], "--feed", f"x={d / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model/Sigmoid:0 (float32, shape [8, 1]):") and "gradients" not in out
    # Fed tensors cut off operations ckpt cannot run, on the command line too.
    np.save(d / "top.npy", np.ones((8, 1), np.float32))
    np.save(d / "bessel.npy", np.full((8, 1), 2, np.float32))
    assert cli_main(["run", trained["meta"], "--feed", f"diagnostics/Lgamma:0={d / 'top.npy'}", "--feed",
                     f"diagnostics/bessel_i0e/BesselI0e:0={d / 'bessel.npy'}", "--fetch", "diagnostics/out:0",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["diagnostics/out:0"]["value"] == [[3.0]] * 8
