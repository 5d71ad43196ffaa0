"""Property: any tree ckpt accepts comes back from ``save`` -> ``load(framework="auto")`` equal in structure,
container types, key types, leaf types, dtypes, shapes and bytes."""

from __future__ import annotations

import collections
import dataclasses
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ckpt
from ckpt.tf import dtypes as ckpt_dtypes
from ckpt.adapters.torch import to_numpy
from ckpt.tree import key_name

torch = pytest.importorskip("torch")

Point = collections.namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class Config:
    lr: object
    name: object


#: Every NumPy dtype ckpt stores (bfloat16, float8, int4 ... included).
DTYPES = sorted({np.dtype(d.numpy) for d in ckpt_dtypes.DTYPES if d.numpy is not None and d.native
                 and not d.is_string}, key=str)
SUB_BYTE = {"int4": (4, 8), "uint4": (4, 0), "int2": (2, 2), "uint2": (2, 0), "float4_e2m1fn": (4, 0)}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(SHAPES)
    count = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    codes = np.frombuffer(raw, np.uint8)
    if dtype == np.bool_:
        return (codes & 1).astype(bool).reshape(shape)
    if dtype.name in SUB_BYTE:  # one value a byte, of which only the low bits are valid
        bits, offset = SUB_BYTE[dtype.name]
        values = (codes & ((1 << bits) - 1)).astype(np.int8) - offset
        if dtype.name == "float4_e2m1fn":
            return (codes & 0x0F).copy().view(dtype).reshape(shape)
        return values.astype(dtype).reshape(shape)
    return np.frombuffer(raw, dtype).reshape(shape).copy()


strings = st.lists(st.binary(max_size=20), max_size=4).map(lambda items: np.array(items, dtype=object).reshape(-1))
string_arrays = st.one_of(strings, st.binary(max_size=8).map(lambda b: np.array(b, dtype=object)))

TORCH_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8,
                torch.uint8, torch.bool, torch.complex64]


@st.composite
def torch_tensors(draw):
    dtype = draw(st.sampled_from(TORCH_DTYPES))
    shape = draw(SHAPES)
    size = torch.empty((), dtype=dtype).element_size()
    count = int(np.prod(shape, dtype=np.int64))
    raw = bytearray(draw(st.binary(min_size=count * size, max_size=count * size)))
    if dtype == torch.bool:
        return torch.tensor([b & 1 for b in raw], dtype=torch.bool).reshape(shape)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape).clone() if raw else \
        torch.empty(shape, dtype=dtype)


python_scalars = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), st.floats(), st.booleans(), st.text(max_size=10),
    st.binary(max_size=10), st.complex_numbers(), st.none())
numpy_scalars = arrays().filter(lambda a: a.ndim == 0).map(lambda a: a[()])
leaves = st.one_of(arrays(), string_arrays, torch_tensors(), python_scalars, numpy_scalars)

# Names must not contain "/" (it joins levels) and keys of one dict must give distinct names.
name_text = st.text(alphabet="abcxyz019_.-", min_size=1, max_size=6)
atomic_keys = st.one_of(name_text, st.integers(-10**6, 10**6), st.booleans(), st.none(),
                        st.floats(allow_nan=False, allow_infinity=True))
keys = st.one_of(atomic_keys, st.tuples(atomic_keys, atomic_keys), st.tuples(), st.tuples(st.tuples(atomic_keys)))


def _distinct_names(mapping: dict) -> bool:
    return len({key_name(k) for k in mapping}) == len(mapping)


def containers(children):
    dicts = st.dictionaries(keys, children, max_size=4).filter(_distinct_names)
    return st.one_of(
        dicts,
        dicts.map(lambda d: collections.OrderedDict(d)),
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.tuples(children, children).map(lambda t: Point(*t)),
        st.tuples(children, children).map(lambda t: Config(*t)),
    )


trees = st.recursive(leaves, containers, max_leaves=12)
roots = containers(trees)


def _same(saved, loaded, where="<root>"):
    if isinstance(saved, collections.OrderedDict):
        assert type(loaded) is collections.OrderedDict, where
    elif isinstance(saved, dict):
        assert type(loaded) is dict, where
    if isinstance(saved, dict):
        assert [(type(k), repr(k)) for k in saved] == [(type(k), repr(k)) for k in loaded], where
        for (k, v) in saved.items():
            _same(v, loaded[k], f"{where}/{k!r}")
        return
    if isinstance(saved, tuple) and hasattr(saved, "_fields"):
        assert type(loaded).__name__ == type(saved).__name__ and loaded._fields == saved._fields, where
    elif dataclasses.is_dataclass(saved):
        assert type(loaded).__name__ == type(saved).__name__, where
        assert [f.name for f in dataclasses.fields(loaded)] == [f.name for f in dataclasses.fields(saved)]
        for f in dataclasses.fields(saved):
            _same(getattr(saved, f.name), getattr(loaded, f.name), f"{where}.{f.name}")
        return
    elif isinstance(saved, (list, tuple)):
        assert type(loaded) is type(saved), where
    if isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved), where
        for i, (a, b) in enumerate(zip(saved, loaded)):
            _same(a, b, f"{where}/{i}")
        return
    if isinstance(saved, torch.Tensor):
        assert isinstance(loaded, torch.Tensor) and loaded.dtype == saved.dtype, where
        assert loaded.shape == saved.shape, where
        assert to_numpy(loaded).tobytes() == to_numpy(saved).tobytes(), where
        return
    if isinstance(saved, np.ndarray):
        assert type(loaded) is np.ndarray and loaded.dtype == saved.dtype and loaded.shape == saved.shape, where
        if saved.dtype == object:
            assert loaded.tolist() == saved.tolist(), where
        else:
            assert loaded.tobytes() == saved.tobytes(), where
        return
    if isinstance(saved, np.generic):
        assert type(loaded) is type(saved) and loaded.tobytes() == saved.tobytes(), where
        return
    assert type(loaded) is type(saved), where
    if isinstance(saved, float):
        assert math.isnan(saved) and math.isnan(loaded) or saved.hex() == loaded.hex(), where
    elif isinstance(saved, complex):
        assert repr(saved) == repr(loaded), where
    else:
        assert loaded == saved, where


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(state=roots)
def test_save_load_round_trip_keeps_everything(tmp_path_factory, state):
    prefix = tmp_path_factory.mktemp("tree") / "ckpt"
    ckpt.save(state, prefix)
    loaded = ckpt.load(prefix, framework="auto")
    if isinstance(state, dict) and not state:
        assert loaded == {}
        return
    _same(state, loaded)


def test_the_strategy_covers_every_dtype():
    """The property above is only as good as its inputs."""
    assert {str(d) for d in DTYPES} >= {"bfloat16", "bool", "complex64", "complex128", "float8_e4m3fn", "int4",
                                         "uint64", "float16", "float4_e2m1fn"}


@pytest.mark.parametrize("state", [
    {"empty": {}, "empty_list": [], "empty_tuple": (), "none": None},
    [np.zeros((), ml_dtypes.bfloat16), np.zeros((0,), np.complex64), np.array([b"\x00\xff"], object)],
    (torch.ones((), dtype=torch.bfloat16), torch.zeros((0, 2)), 1 << 62, -0.0, float("nan"), 1 + 2j, b"", ""),
    collections.OrderedDict([(0, Point(None, Config([], {}))), ((1, (2.5,)), {None: True, False: ml_dtypes.int4(3)})]),
])
def test_each_kind_round_trips(tmp_path, state):
    ckpt.save(state, tmp_path / "c")
    _same(state, ckpt.load(tmp_path / "c", framework="auto"))
