"""JAX adapter: jax.Array leaves, typed PRNG keys, optax states, abstract targets, and exact resume after SIGKILL.

A restore returns *new* JAX arrays (they are immutable), so every test checks the returned tree, bit for bit, and
that its arrays have the target's dtype, weak type and placement.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading

import ml_dtypes
import numpy as np
import pytest

import ckpt

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")


def same_bits(a, b) -> bool:
    """Equal dtype, shape and raw bytes (NaN payloads and -0.0 included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_trees_bit_equal(restored, expected, *, same_types: bool = True) -> None:
    """Leaf by leaf bit equality; ``same_types=False`` for trees from ``ckpt.load`` (look-alike namedtuples)."""
    if same_types:
        assert jax.tree.structure(restored) == jax.tree.structure(expected)
    assert len(jax.tree.leaves(restored)) == len(jax.tree.leaves(expected))
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        if isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            assert got.dtype == want.dtype
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        assert same_bits(got, want)


def random_bits(dtype, shape, seed: int = 0) -> np.ndarray:
    """Random bit patterns of ``dtype`` (NaNs, subnormals, -0.0), so any re-encoding would show."""
    dtype = np.dtype(dtype)
    raw = np.random.RandomState(seed).randint(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    if dtype == np.bool_:
        return (raw % 2).astype(np.bool_).reshape(shape)
    return raw.view(dtype).reshape(shape)


DTYPES = [np.float32, ml_dtypes.bfloat16, np.int8, np.bool_, np.float16, np.uint32, ml_dtypes.float8_e4m3fn]


# ================================================================================================== round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0, 3), (2, 3, 4)], ids=["scalar", "empty", "multi"])
def test_array_round_trip_is_bit_exact(tmp_path, dtype, shape):
    value = jnp.asarray(random_bits(dtype, shape))
    prefix = ckpt.save({"x": value}, tmp_path / "arr")

    loaded = ckpt.load(prefix)["x"]
    assert type(loaded) is np.ndarray and same_bits(loaded, value)

    target = {"x": jnp.zeros(shape, dtype)}
    restored = ckpt.restore(prefix, target)["x"]
    assert isinstance(restored, jax.Array) and restored is not target["x"]
    assert restored.dtype == value.dtype and same_bits(restored, value)
    assert restored.sharding == target["x"].sharding


def flax_like_params(seed: int = 0) -> dict:
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"params": {"Dense_0": {"kernel": jax.random.normal(k1, (4, 8)), "bias": jnp.zeros(8)},
                       "Dense_1": {"kernel": jax.random.normal(k2, (8, 2), jnp.bfloat16),
                                   "bias": jnp.arange(2, dtype=jnp.bfloat16)}},
            "batch_stats": {"BatchNorm_0": {"mean": jnp.full(8, 0.5), "var": jnp.ones(8)}}}


def test_flax_like_params_dict(tmp_path):
    params = flax_like_params()
    prefix = ckpt.save(params, tmp_path / "params")

    with ckpt.Reader(prefix) as reader:
        assert sorted(reader.keys()) == [
            "batch_stats/BatchNorm_0/mean", "batch_stats/BatchNorm_0/var",
            "params/Dense_0/bias", "params/Dense_0/kernel", "params/Dense_1/bias", "params/Dense_1/kernel"]
    loaded = ckpt.load(prefix)
    assert all(type(leaf) is np.ndarray for leaf in jax.tree.leaves(loaded))
    assert_trees_bit_equal(loaded, jax.tree.map(np.asarray, params))

    restored = ckpt.restore(prefix, jax.tree.map(jnp.zeros_like, params))
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(restored))
    assert_trees_bit_equal(restored, params)


def test_same_array_under_two_names_is_stored_once_and_restored_separately(tmp_path):
    shared = jnp.arange(4.0)
    prefix = ckpt.save({"a": shared, "b": shared}, tmp_path / "tied")
    with ckpt.Reader(prefix) as reader:
        assert list(reader.keys()) == ["a"]
    assert same_bits(ckpt.load(prefix)["b"], shared)

    # One zeros array used as the template for both names must not tie them together on restore.
    zeros = jnp.zeros(4)
    other = ckpt.save({"a": jnp.ones(4), "b": jnp.full(4, 2.0)}, tmp_path / "untied")
    restored = ckpt.restore(other, {"a": zeros, "b": zeros})
    assert same_bits(restored["a"], jnp.ones(4)) and same_bits(restored["b"], jnp.full(4, 2.0))


def test_weak_type_and_python_scalars_survive(tmp_path):
    state = {"lr": jnp.asarray(0.25), "step": 7, "scale": jnp.float32(3.0)}
    assert state["lr"].weak_type
    prefix = ckpt.save(state, tmp_path / "scalars")
    restored = ckpt.restore(prefix, {"lr": jnp.asarray(0.0), "step": 0, "scale": jnp.float32(0.0)})
    assert restored["lr"].weak_type and float(restored["lr"]) == 0.25
    assert not restored["scale"].weak_type
    assert restored["step"] == 7 and type(restored["step"]) is int
    # A weakly typed float32 still defers to bfloat16, as before the restore.
    assert (restored["lr"] * jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16


# ================================================================================================== PRNG keys


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_typed_prng_key_round_trip(tmp_path, impl):
    key = jax.random.split(jax.random.key(42, impl=impl), 3)
    prefix = ckpt.save({"key": key, "one": key[0]}, tmp_path / "keys")

    loaded = ckpt.load(prefix)
    assert loaded["key"].dtype == np.uint32 and same_bits(loaded["key"], jax.random.key_data(key))
    assert same_bits(loaded["one"], jax.random.key_data(key[0]))

    target = {"key": jax.random.split(jax.random.key(0, impl=impl), 3), "one": jax.random.key(0, impl=impl)}
    restored = ckpt.restore(prefix, target)
    assert restored["key"].dtype == key.dtype and restored["key"].shape == (3,)
    assert_trees_bit_equal(restored, {"key": key, "one": key[0]})
    # The restored key draws exactly what the original draws.
    assert same_bits(jax.random.uniform(restored["one"], (5,)), jax.random.uniform(key[0], (5,)))


def test_typed_and_legacy_keys_restore_into_each_other(tmp_path):
    typed = jax.random.key(7)
    legacy = jax.random.PRNGKey(9)
    prefix = ckpt.save({"typed": typed, "legacy": legacy}, tmp_path / "keys")
    restored = ckpt.restore(prefix, {"typed": jax.random.PRNGKey(0), "legacy": jax.random.key(0)})
    assert restored["typed"].dtype == np.uint32 and same_bits(restored["typed"], jax.random.key_data(typed))
    assert jax.dtypes.issubdtype(restored["legacy"].dtype, jax.dtypes.prng_key)
    assert same_bits(jax.random.key_data(restored["legacy"]), legacy)


def test_key_implementations_with_different_sizes_do_not_mix(tmp_path):
    prefix = ckpt.save({"key": jax.random.key(0, impl="threefry2x32")}, tmp_path / "keys")
    with pytest.raises(ckpt.errors.StateMismatchError, match="key"):
        ckpt.restore(prefix, {"key": jax.random.key(0, impl="rbg")})


# ================================================================================================== optax


def adam_state_after_updates(params, steps: int = 3):
    opt = optax.adam(1e-2)
    state = opt.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1 * (i + 1)), params)
        _, state = opt.update(grads, state, params)
    return opt, state


def test_optax_adam_state_round_trip(tmp_path):
    params = flax_like_params()["params"]
    opt, opt_state = adam_state_after_updates(params)
    prefix = ckpt.save({"opt_state": opt_state}, tmp_path / "adam")

    with ckpt.Reader(prefix) as reader:
        assert "opt_state/0/count" in reader.keys()
        assert "opt_state/0/mu/Dense_0/kernel" in reader.keys()
    loaded = ckpt.load(prefix)["opt_state"]
    assert type(loaded[0]).__name__ == "ScaleByAdamState" and loaded[0]._fields == ("count", "mu", "nu")
    assert int(loaded[0].count) == 3

    restored = ckpt.restore(prefix, {"opt_state": opt.init(params)})["opt_state"]
    assert type(restored[0]) is type(opt_state[0])
    assert_trees_bit_equal(restored, opt_state)
    # The restored state keeps working with optax.
    grads = jax.tree.map(jnp.ones_like, params)
    assert_trees_bit_equal(opt.update(grads, restored, params), opt.update(grads, opt_state, params))


def test_optax_empty_state_masked_node_and_none(tmp_path):
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adam(1e-3), {"w": True, "b": False}))
    _, opt_state = opt.update(jax.tree.map(jnp.ones_like, params), opt.init(params), params)
    inner = opt_state[1].inner_state[0]
    assert isinstance(opt_state[0], optax.EmptyState) and isinstance(inner.mu["b"], optax.MaskedNode)
    state = {"opt_state": opt_state, "empty": optax.EmptyState(), "nothing": None}
    prefix = ckpt.save(state, tmp_path / "masked")

    loaded = ckpt.load(prefix)
    assert loaded["empty"] == () and type(loaded["empty"]).__name__ == "EmptyState"
    assert loaded["nothing"] is None
    assert type(loaded["opt_state"][1].inner_state[0].mu["b"]).__name__ == "MaskedNode"

    target = {"opt_state": opt.init(params), "empty": optax.EmptyState(), "nothing": None}
    restored = ckpt.restore(prefix, target)
    assert isinstance(restored["empty"], optax.EmptyState) and restored["nothing"] is None
    assert_trees_bit_equal(restored, state)


# ================================================================================================== mismatches


def test_mismatched_shape_raises_before_anything_changes(tmp_path):
    prefix = ckpt.save({"w": jnp.ones((2, 3)), "b": jnp.ones(3), "host": np.ones(3, np.float32)}, tmp_path / "c")
    host = np.zeros(3, np.float32)  # NumPy leaves are written in place, so a partial restore would show here
    target = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3), "host": host}
    with pytest.raises(ckpt.errors.StateMismatchError) as err:
        ckpt.restore(prefix, target)
    assert "w: checkpoint float32[2, 3], state float32[3, 2]" in str(err.value)
    assert err.value.mismatched and not err.value.missing
    assert not host.any()
    assert same_bits(target["w"], jnp.zeros((3, 2)))


def test_mismatched_dtype_and_missing_names_are_all_listed(tmp_path):
    prefix = ckpt.save({"w": jnp.ones(3, jnp.float32), "extra": jnp.ones(1)}, tmp_path / "c")
    with pytest.raises(ckpt.errors.StateMismatchError) as err:
        ckpt.restore(prefix, {"w": jnp.zeros(3, jnp.bfloat16), "absent": jnp.zeros(1)})
    assert err.value.missing == ["absent"] and err.value.unexpected == ["extra"]
    assert "w: checkpoint float32[3], state bfloat16[3]" in str(err.value)


def test_non_strict_restore_reports_and_returns_tree(tmp_path):
    prefix = ckpt.save({"w": jnp.ones(3)}, tmp_path / "c")
    report = ckpt.restore(prefix, {"w": jnp.zeros(3), "new": jnp.zeros(2)}, strict=False)
    assert report.restored == ["w"] and report.missing == ["new"]
    assert same_bits(report.tree["w"], jnp.ones(3)) and same_bits(report.tree["new"], jnp.zeros(2))


# ================================================================================================== abstract targets


def test_restore_into_shape_dtype_structs(tmp_path):
    params = flax_like_params()
    opt, opt_state = adam_state_after_updates(params["params"])
    state = {"params": params, "opt_state": opt_state, "key": jax.random.key(5), "step": 3}
    prefix = ckpt.save(state, tmp_path / "state")

    abstract = jax.eval_shape(lambda: {"params": flax_like_params(), "opt_state": opt.init(params["params"]),
                                       "key": jax.random.key(0)})
    abstract["step"] = 0
    assert isinstance(abstract["params"]["params"]["Dense_0"]["kernel"], jax.ShapeDtypeStruct)
    restored = ckpt.restore(prefix, abstract)
    assert isinstance(restored["params"]["params"]["Dense_0"]["kernel"], jax.Array)
    assert_trees_bit_equal(restored, state)


def test_shape_dtype_struct_placement_and_weak_type(tmp_path):
    prefix = ckpt.save({"x": jnp.arange(4.0), "lr": jnp.asarray(0.5)}, tmp_path / "c")
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    target = {"x": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=sharding),
              "lr": jax.ShapeDtypeStruct((), jnp.float32, weak_type=True)}
    restored = ckpt.restore(prefix, target)
    assert restored["x"].sharding == sharding and same_bits(restored["x"], jnp.arange(4.0))
    assert restored["lr"].weak_type and float(restored["lr"]) == 0.5


def test_shape_dtype_struct_with_wrong_shape_is_a_mismatch(tmp_path):
    prefix = ckpt.save({"x": jnp.arange(4.0)}, tmp_path / "c")
    with pytest.raises(ckpt.errors.StateMismatchError, match=r"x: checkpoint float32\[4\], state float32\[5\]"):
        ckpt.restore(prefix, {"x": jax.ShapeDtypeStruct((5,), jnp.float32)})


def test_abstract_and_deleted_arrays_cannot_be_saved_but_can_be_targets(tmp_path):
    with pytest.raises(ckpt.errors.InvalidStateError, match="ShapeDtypeStruct holds no values"):
        ckpt.save({"x": jax.ShapeDtypeStruct((2,), jnp.float32)}, tmp_path / "abstract")
    donated = jnp.ones(3)
    donated.delete()
    with pytest.raises(ckpt.errors.InvalidStateError, match="was deleted"):
        ckpt.save({"x": donated}, tmp_path / "deleted")
    assert not (tmp_path / "deleted.index").exists()

    prefix = ckpt.save({"x": jnp.arange(3.0)}, tmp_path / "c")
    assert same_bits(ckpt.restore(prefix, {"x": donated})["x"], jnp.arange(3.0))


def test_traced_values_cannot_be_saved(tmp_path):
    def inside_jit(x):
        ckpt.save({"x": x}, tmp_path / "traced")
        return x

    with pytest.raises(ckpt.errors.InvalidStateError, match="traced JAX value"):
        jax.jit(inside_jit)(jnp.ones(2))


def test_sharded_arrays_across_cpu_devices(tmp_path):
    """Arrays sharded over a 4-device CPU mesh: saved whole, restored with the target's sharding."""
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import ckpt
        assert jax.device_count() == 4, jax.devices()
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
        x = jax.device_put(jnp.arange(32.0).reshape(4, 8), NamedSharding(mesh, P("data", "model")))
        key = jax.device_put(jax.random.split(jax.random.key(1), 4), NamedSharding(mesh, P("data")))
        prefix = ckpt.save({{"x": x, "key": key}}, {str(tmp_path / "sharded")!r})
        assert np.array_equal(ckpt.load(prefix)["x"], np.arange(32.0).reshape(4, 8))
        spec = NamedSharding(mesh, P("model", None))
        out = ckpt.restore(prefix, {{"x": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=spec),
                                    "key": jax.random.split(jax.random.key(0), 4)}})
        assert out["x"].sharding == spec, out["x"].sharding
        assert np.array_equal(np.asarray(out["x"]), np.arange(32.0).reshape(4, 8))
        assert np.array_equal(jax.random.key_data(out["key"]), jax.random.key_data(key))
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# ================================================================================================== exact resume

# One training program, run in this process (uninterrupted) and in subprocesses (killed, then resumed). Batches are
# reshuffled every epoch and dropout keys folded from the step, so the step alone decides what happens next.
TRAIN = textwrap.dedent("""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    BATCH = 16
    OPT = optax.adam(1e-2)


    def data():
        rs = np.random.RandomState(1234)
        x = rs.randn(96, 8).astype(np.float32)
        w = rs.randn(8, 1).astype(np.float32)
        y = (np.tanh(x @ w) + 0.1 * rs.randn(96, 1)).astype(np.float32)
        return x, y


    def fresh_state(seed=0):
        init_key, key = jax.random.split(jax.random.key(seed))
        k1, k2 = jax.random.split(init_key)
        params = {"l1": {"w": jax.random.normal(k1, (8, 32)) * 0.3, "b": jnp.zeros(32)},
                  "l2": {"w": jax.random.normal(k2, (32, 1)) * 0.3, "b": jnp.zeros(1)}}
        return {"params": params, "opt_state": OPT.init(params), "key": key, "step": 0}


    def loss_fn(params, x, y, key):
        h = jax.nn.relu(x @ params["l1"]["w"] + params["l1"]["b"])
        h = jnp.where(jax.random.bernoulli(key, 0.8, h.shape), h / 0.8, 0.0)  # dropout
        return jnp.mean((h @ params["l2"]["w"] + params["l2"]["b"] - y) ** 2)


    @jax.jit
    def train_step(params, opt_state, key, step, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, jax.random.fold_in(key, step))
        updates, opt_state = OPT.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss


    def batch(step, x, y):
        epoch, i = divmod(step, len(x) // BATCH)
        order = np.random.RandomState(epoch).permutation(len(x))
        return x[order[i * BATCH:(i + 1) * BATCH]], y[order[i * BATCH:(i + 1) * BATCH]]


    def run(state, total, on_step=None):
        x, y = data()
        while state["step"] < total:
            step = state["step"]
            params, opt_state, _ = train_step(state["params"], state["opt_state"], state["key"], step,
                                              *batch(step, x, y))
            state = {"params": params, "opt_state": opt_state, "key": state["key"], "step": step + 1}
            if on_step is not None:
                on_step(state)
        return state
""")

# The subprocess: saves every EVERY steps, reports each step and waits for "go" (so the parent kills it at an
# exact step), or resumes from the newest checkpoint.
MAIN = textwrap.dedent("""
    import os
    import sys

    import ckpt

    mode, directory, total, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    state = fresh_state()
    if mode == "resume":  # a target from another seed: every value, the key included, must come from the checkpoint
        state = ckpt.restore(ckpt.latest(directory), fresh_state(seed=1))
        print(f"resumed {state['step']}", flush=True)


    def on_step(state):
        step = state["step"]
        if step % every == 0 or step == total:
            ckpt.save(state, os.path.join(directory, "train.ckpt"), step=step)
        print(f"step {step}", flush=True)
        if sys.stdin.readline() != "go\\n":
            sys.exit(3)


    run(state, total, on_step)
    print("done", flush=True)
""")

TOTAL, EVERY = 30, 4


def _start(script, *args) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    watchdog = threading.Timer(90, proc.kill)  # a hung child fails the test instead of hanging it
    watchdog.daemon = True
    watchdog.start()
    proc.watchdog = watchdog
    return proc


def test_exact_resume_after_sigkill(tmp_path):
    namespace: dict = {}
    exec(compile(TRAIN, "train", "exec"), namespace)
    expected = namespace["run"](namespace["fresh_state"](), TOTAL)

    script = tmp_path / "train.py"
    script.write_text(TRAIN + MAIN)
    directory = tmp_path / "ckpts"
    kill_at = random.Random(2024).randrange(EVERY + 1, TOTAL - 1)  # after the first save, before the end
    if kill_at % EVERY == 0:
        kill_at += 1  # not right on a save step, so the resumed run must redo some steps

    proc = _start(script, "train", directory, TOTAL, EVERY)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line == f"step {kill_at}\n":
            proc.send_signal(signal.SIGKILL)
            break
        proc.stdin.write("go\n")
        proc.stdin.flush()
    proc.wait(timeout=60)
    proc.watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, (seen, proc.stderr.read()[-3000:])
    last_saved = kill_at - kill_at % EVERY
    assert ckpt.latest(directory) == str(directory / f"train.ckpt-{last_saved}")

    proc = _start(script, "resume", directory, TOTAL, EVERY)
    out, err = proc.communicate("go\n" * TOTAL, timeout=60)
    proc.watchdog.cancel()
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    assert lines[0] == f"resumed {last_saved}" and lines[-1] == "done"
    assert lines[1] == f"step {last_saved + 1}"

    final = ckpt.load(ckpt.latest(directory))
    assert final["step"] == TOTAL
    assert_trees_bit_equal(final["params"], expected["params"], same_types=False)
    assert_trees_bit_equal(final["opt_state"], expected["opt_state"], same_types=False)
