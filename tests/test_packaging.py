"""What a user gets from the package: a light `import ckpt`, a typed package, and a wheel + sdist that work.

The build test runs ``python -m build`` (sdist, then the wheel built from that sdist, as PyPI users get them) and
installs the wheel with --no-deps into a fresh venv that has only the core dependencies, outside the source tree.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest

import ckpt

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CORE_DEPS = ["numpy", "protobuf", "crc32c", "ml_dtypes"]

# Modules `import ckpt` must not load: the frameworks, and the costly helpers loaded on first use (ml_dtypes for
# bfloat16/float8/int4 tensors, the graph package and its protobuf modules, the other file formats' libraries, and
# crc32c, whose package imports importlib.metadata).
HEAVY = ["ml_dtypes", "crc32c", "torch", "jax", "tensorflow", "keras", "safetensors", "h5py", "ckpt.graph", "ckpt._convert",
         "ckpt.tf.protos.graph_pb2", "ckpt.tf.protos.meta_graph_pb2", "ckpt.tf.protos.event_pb2"]


def _fresh_modules(code: str) -> list[str]:
    """The modules a new interpreter has loaded after running ``code``, one per line, importing this checkout."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_ckpt_loads_no_framework_and_no_ml_dtypes():
    loaded = _fresh_modules("import ckpt")
    assert [m for m in HEAVY if m in loaded] == []
    # Only the protobuf modules a save or restore needs, out of the 27 in ckpt.tf.protos.
    protos = [m for m in loaded if m.startswith("ckpt.tf.protos.")]
    assert len(protos) <= 8, protos


def test_lazy_names_load_on_use():
    loaded = _fresh_modules("import ckpt; ckpt.convert, ckpt.diff, ckpt.graph.load")
    assert "ckpt.graph" in loaded and "ckpt._convert" in loaded and "ckpt._diff" in loaded
    assert [m for m in ("torch", "jax", "tensorflow") if m in loaded] == []
    assert {"convert", "diff", "graph", "ConvertResult", "DiffResult"} <= set(dir(ckpt))
    assert set(ckpt.__all__) <= set(dir(ckpt))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ckpt.nope  # noqa: B018


def test_ml_dtypes_is_loaded_only_for_its_types(tmp_path):
    # A float32 save and load stays without ml_dtypes; a bfloat16 tensor in a file brings it in, and reads as such.
    code = (f"import ckpt, numpy as np, sys\n"
            f"p = ckpt.save({{'w': np.ones(3, np.float32)}}, {str(tmp_path / 'a')!r})\n"
            f"assert ckpt.load(p)['w'].dtype == np.float32\n"
            f"assert 'ml_dtypes' not in sys.modules, 'ml_dtypes for float32'\n"
            f"import ml_dtypes\n"
            f"q = ckpt.save({{'b': np.ones(3, ml_dtypes.bfloat16)}}, {str(tmp_path / 'b')!r})\n"
            f"del sys.modules['ml_dtypes']\n")
    _fresh_modules(code)
    loaded = _fresh_modules(f"import ckpt, sys\nassert str(ckpt.Reader({str(tmp_path / 'b')!r})['b'].dtype) == "
                            f"'bfloat16'")
    assert "ml_dtypes" in loaded


def test_ml_dtypes_itemsizes_match_the_table():
    import ml_dtypes
    import numpy as np

    from ckpt.tf import dtypes

    narrow = [d for d in dtypes.DTYPES if isinstance(d.storage, str)]
    assert len(narrow) == 11
    for d in narrow:
        if hasattr(ml_dtypes, d.name):
            assert d.numpy == np.dtype(getattr(ml_dtypes, d.name)) and d.itemsize == d.numpy.itemsize, d
            assert dtypes.from_numpy(d.numpy) is d


def test_version_is_the_packaged_one():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == ckpt.__version__ == "0.2.0"
    assert (SRC / "ckpt" / "py.typed").is_file()


@pytest.fixture
def own_tmp():
    # Not tmp_path: pytest prunes old numbered temp dirs, and concurrent pytest runs of the same user on a busy
    # machine can remove this one during the minute this test takes.
    path = pathlib.Path(tempfile.mkdtemp(prefix="ckpt-packaging-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_wheel_and_sdist_build_install_and_run(own_tmp):
    pytest.importorskip("build")
    tmp_path = own_tmp
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("ckpt-0.2.0-py3-none-any.whl"))
    sdists = list(dist.glob("ckpt-0.2.0.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())

    names = zipfile.ZipFile(wheels[0]).namelist()
    for needed in ("ckpt/py.typed", "ckpt/tf/protos/tensor_bundle.proto",
                   "ckpt/tf/protos/tensor_bundle_pb2.py", "ckpt/cli/main.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/")]
    with tarfile.open(sdists[0]) as tar:
        members = tar.getnames()
    assert "ckpt-0.2.0/src/ckpt/py.typed" in members and "ckpt-0.2.0/pyproject.toml" in members

    # No PYTHONPATH: the source tree (with the egg-info the sdist build leaves in src/) must not be visible.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + CORE_DEPS, check=True, env=env, cwd=tmp_path, timeout=900)
    subprocess.run(pip + ["--no-deps", str(wheels[0])], check=True, env=env, cwd=tmp_path, timeout=300)
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr  # the wheel's declared dependencies are satisfied
    version = subprocess.run([str(venv / "bin" / "ckpt"), "--version"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == "ckpt 0.2.0", version.stdout + version.stderr
    script = ("import ckpt, numpy as np, os, sys\n"
              "assert os.path.dirname(ckpt.__file__).startswith(sys.prefix), ckpt.__file__\n"
              "p = ckpt.save({'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': 3}, 'out/m', step=3)\n"
              "assert ckpt.latest('out') == p, p\n"
              "back = ckpt.load('out')\n"
              "assert back['w'].tobytes() == np.arange(6, dtype=np.float32).reshape(2, 3).tobytes()\n"
              "assert back['step'] == 3\n"
              "print('ok', p)\n")
    run = subprocess.run([str(py), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("ok "), run.stdout + run.stderr
    inspect = subprocess.run([str(venv / "bin" / "ckpt"), "inspect", "out"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=120)
    assert inspect.returncode == 0 and "w" in inspect.stdout, inspect.stdout + inspect.stderr


def test_public_surface_keeps_only_the_errors_a_user_catches():
    import ckpt.errors

    exported = {name for name in ckpt.__all__ if name.endswith(("Error", "Warning"))}
    assert exported == {"CheckpointError", "CheckpointNotFoundError", "CorruptCheckpointError", "UnsupportedError"}
    assert not hasattr(ckpt, "CkptError") and not hasattr(ckpt.errors, "CkptError")
    for name in ckpt.errors.__all__:  # every error is in ckpt.errors and derives from the base (the warning aside)
        value = getattr(ckpt.errors, name)
        assert issubclass(value, ckpt.CheckpointError) or issubclass(value, Warning), name
    assert callable(ckpt.verify) and ckpt.verify.__module__ == "ckpt._verify"  # the function, no module behind it


def test_format_citations_name_sections_of_docs_format_md():
    root = pathlib.Path(__file__).resolve().parent.parent
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", (root / "docs" / "format.md").read_text(), re.M))
    cited = set()
    for path in list((root / "src").rglob("*.py")) + list((root / "tests").glob("*.py")):
        text = " ".join(path.read_text(encoding="utf-8").split())  # citations may wrap across lines (and "# ")
        text = text.replace(" # ", " ")
        for first, last in re.findall(r"docs/format\.md sections? (\d+(?:\.\d+)?)(?: to (\d+(?:\.\d+)?))?", text):
            cited |= {first} | ({last} if last else set())
    assert cited and cited <= headings, sorted(cited - headings)
