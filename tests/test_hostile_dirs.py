"""Hostile checkpoint directories: links and special files (issue 13, items 2, 5 and part of 11).

ckpt never writes through a symbolic link and reads only regular files. Each case builds the hostile directory in
the test. Every call that could block runs under :func:`bounded`: if it has not returned after a generous timeout
(a hang guard, not a timing assertion), the FIFOs in the directory are opened for writing so the stuck reader sees
end-of-file, and the test fails instead of hanging the suite.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt.cli.main import main as cli
from ckpt.errors import CheckpointError, CorruptCheckpointError, CorruptCheckpointWarning

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "mkfifo"),
                                reason="needs FIFOs and symbolic links")

HANG_GUARD = 60.0  # seconds; only reached when a call blocks


_FIFOS: list[Path] = []  # every FIFO the tests made, to unblock a reader stuck on one


def _unblock() -> None:
    """Give every FIFO made here a writer that closes at once: a reader blocked on it sees end-of-file."""
    for path in _FIFOS:
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def bounded(fn, directory: Path):
    """``fn()``, in a thread; fails the test if it blocks, re-raises what it raised."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    if thread.is_alive():
        for _ in range(50):
            _unblock()
            thread.join(0.1)
            if not thread.is_alive():
                break
        pytest.fail(f"{getattr(fn, '__name__', fn)} blocked on a special file in {directory}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_cli(argv: list[str], directory: Path) -> tuple[int, str]:
    out = io.StringIO()

    def call():
        with redirect_stdout(out), redirect_stderr(out):
            return cli(argv)

    code = bounded(call, directory)
    return code, out.getvalue()


def state(step: int) -> dict:
    return {"w": np.arange(4.0) + step, "b": np.full((2, 3), step, np.int32)}


def two_steps(directory: Path) -> None:
    with ckpt.Manager(directory, sync=False) as manager:
        manager.save(1, state(1))
        manager.save(2, state(2))


def make_special(path: Path, kind: str, outside: Path) -> None:
    """Put a ``kind`` where ``path`` was: a FIFO, a directory, a link to /dev/zero or a link to a FIFO elsewhere."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        _FIFOS.append(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link-to-device":
        os.symlink("/dev/zero", path)
    elif kind == "link-to-fifo":
        target = outside / f"fifo-{path.name}"
        os.mkfifo(target)
        _FIFOS.append(target)
        os.symlink(target, path)
    else:
        raise AssertionError(kind)


KINDS = ["fifo", "directory", "link-to-device", "link-to-fifo"]
WHAT = {"fifo": "named pipe", "directory": "directory", "link-to-device": "character device",
        "link-to-fifo": "named pipe"}


@pytest.fixture(autouse=True)
def _no_stuck_readers():
    yield
    _unblock()  # leave no reader stuck, whatever happened
    _FIFOS.clear()


@pytest.fixture
def dirs(tmp_path):
    directory, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    two_steps(directory)
    yield directory, outside


def _equal(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


# ---------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("victim", ["data", "index"])
def test_a_special_file_in_a_checkpoint_is_refused_by_every_reader(dirs, victim, kind):
    directory, outside = dirs
    prefix = directory / "ckpt-2"
    path = directory / ("ckpt-2.data-00000-of-00001" if victim == "data" else "ckpt-2.index")
    make_special(path, kind, outside)
    message = re.compile(re.escape(str(path)) + r".*" + WHAT[kind] + r".*not a regular file")

    def read_all():
        with ckpt.Reader(prefix) as reader:
            return {name: reader.get(name) for name in reader.keys()}

    for fn in (read_all, lambda: ckpt.load(prefix), lambda: ckpt.restore(prefix, state(0))):
        with pytest.raises(CorruptCheckpointError, match=message):
            bounded(fn, directory)

    code, out = run_cli(["verify", str(directory)], directory)
    assert code == 1 and message.search(out), out

    # Those that may fall back do, to the older checkpoint, and say why.
    with pytest.warns(CorruptCheckpointWarning, match=re.escape(str(path))):
        assert bounded(lambda: ckpt.latest(directory, verify=True), directory) == str(directory / "ckpt-1")
    manager = bounded(lambda: ckpt.Manager(directory, sync=False), directory)
    into = state(0)
    with pytest.warns(CorruptCheckpointWarning, match=re.escape(str(path))):
        bounded(lambda: manager.restore(into), directory)
    assert _equal(into, state(1))
    manager.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_state_file_is_reported_and_the_directory_still_reads(dirs, kind):
    directory, outside = dirs
    path = directory / "checkpoint"
    make_special(path, kind, outside)
    # Without a readable state file, the newest checkpoint is found from the files themselves.
    assert bounded(lambda: ckpt.latest(directory, verify=True), directory) == str(directory / "ckpt-2")
    assert _equal(bounded(lambda: ckpt.load(directory), directory), state(2))
    into = state(0)
    bounded(lambda: ckpt.restore(directory, into), directory)
    assert _equal(into, state(2))
    into = state(0)
    with ckpt.Manager(directory, sync=False) as manager:
        bounded(lambda: manager.restore(into), directory)
    assert _equal(into, state(2))
    code, out = run_cli(["verify", str(directory)], directory)
    assert code == 1 and f"{path}: is a {WHAT[kind]}" in out, out


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_manager_record_is_a_clear_error(dirs, kind):
    directory, outside = dirs
    path = directory / "ckpt.manager.json"
    assert path.is_file()
    make_special(path, kind, outside)
    with pytest.raises(CorruptCheckpointError, match=re.escape(f"{path}: is a {WHAT[kind]}")):
        bounded(lambda: ckpt.Manager(directory, sync=False), directory)
    code, out = run_cli(["verify", str(directory)], directory)
    assert code == 1 and f"{path}: is a {WHAT[kind]}" in out, out
    # Plain reads do not need the record.
    assert _equal(bounded(lambda: ckpt.load(directory / "ckpt-2"), directory), state(2))


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_lock_file_neither_blocks_verify_nor_lets_a_save_write(dirs, kind):
    directory, outside = dirs
    lock = directory / ".ckpt.lock"
    make_special(lock, kind, outside)
    code, out = run_cli(["verify", str(directory)], directory)
    assert code == 0, out
    with pytest.raises(CheckpointError, match=re.escape(str(lock))):
        bounded(lambda: ckpt.save(state(3), directory / "other", sync=False), directory)
    assert not list(directory.glob("other*"))


# Run in a child: h5py (and possibly torch) open files while holding the GIL, so a reader stuck on a FIFO there
# would stop a watchdog thread in this process too.
_FOREIGN_CHILD = r"""
import json, sys
import ckpt
paths, fmt = json.loads(sys.argv[1]), sys.argv[2]
out = []
for path in paths:
    for given in (None, fmt):
        try:
            ckpt.Reader(path, format=given).close()
            out.append([path, given, "no error", ""])
        except ckpt.CheckpointError as exc:
            out.append([path, given, "CheckpointError", str(exc)])
        except BaseException as exc:
            out.append([path, given, type(exc).__name__, str(exc)])
print(json.dumps(out))
"""


@pytest.mark.parametrize("fmt", ["safetensors", "numpy", "torch", "keras", "tensorflow"])
def test_foreign_readers_refuse_special_files(tmp_path, fmt):
    if fmt == "torch":
        pytest.importorskip("torch")
    if fmt == "keras":
        pytest.importorskip("h5py")
    name = {"safetensors": "m.safetensors", "numpy": "m.npz", "torch": "m.pt", "keras": "m.weights.h5",
            "tensorflow": "m.index"}[fmt]
    paths = []
    for kind in KINDS:
        (tmp_path / kind).mkdir()
        paths.append(tmp_path / kind / name)
        make_special(paths[-1], kind, tmp_path / kind)
    try:
        child = subprocess.run([sys.executable, "-c", _FOREIGN_CHILD, json.dumps(list(map(str, paths))), fmt],
                               capture_output=True, text=True, timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a {fmt} reader blocked on a special file")
    assert child.returncode == 0, child.stderr
    for path, given, outcome, message in json.loads(child.stdout):
        assert outcome == "CheckpointError" and path in message, (path, given, outcome, message)


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_safetensors_shard_is_refused(tmp_path, kind):
    src = tmp_path / "src"
    ckpt.save({"a": np.arange(3000.0), "b": np.ones(3000)}, src, sync=False)
    out = tmp_path / "out" / "model.safetensors"
    ckpt.convert(src, out, shard_size=30000)
    shards = sorted(out.parent.glob("model-*.safetensors"))
    assert len(shards) == 2
    make_special(shards[1], kind, tmp_path)
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(shards[1]))):
        bounded(lambda: dict(ckpt.Reader(out.parent / "model.safetensors.index.json").items()), tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_graph_and_event_files_that_are_special_are_refused(tmp_path, kind):
    from ckpt.tf.events import read_events

    graph, events = tmp_path / "g.pb", tmp_path / "events.out.tfevents.1.host"
    make_special(graph, kind, tmp_path)
    make_special(events, kind, tmp_path)
    with pytest.raises(CheckpointError):
        bounded(lambda: ckpt.graph.load(graph), tmp_path)
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(events))):
        bounded(lambda: list(read_events(events)), tmp_path)


def test_reading_through_links_is_fine(tmp_path):
    """Checkpoints are often linked in: a linked directory, linked index and data files all read."""
    store, run = tmp_path / "store", tmp_path / "run"
    ckpt.save(state(5), store / "ck", sync=False)
    run.mkdir()
    for f in store.iterdir():
        os.symlink(f, run / f.name)
    assert _equal(ckpt.load(run / "ck"), state(5))
    code, out = run_cli(["verify", str(run / "ck")], tmp_path)
    assert code == 0, out
    os.symlink(store, tmp_path / "linked")
    assert ckpt.latest(tmp_path / "linked", verify=True) == str(tmp_path / "linked" / "ck")


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("saver", ["save", "manager"])
def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, saver):
    directory = tmp_path / "run"
    directory.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious contents\n")
    os.symlink(victim, directory / ".ckpt.lock")

    def save():
        if saver == "save":
            ckpt.save(state(1), directory / "ck", sync=False)
        else:
            with ckpt.Manager(directory, sync=False) as manager:
                manager.save(1, state(1))

    with pytest.raises(CheckpointError, match=r"\.ckpt\.lock: the lock file is a symbolic link") as info:
        save()
    assert info.value.path == str(directory / ".ckpt.lock")
    assert victim.read_bytes() == b"precious contents\n"
    assert sorted(p.name for p in directory.iterdir()) == [".ckpt.lock"]  # nothing written

    # A dangling link would have created a file outside the directory.
    (directory / ".ckpt.lock").unlink()
    nowhere = tmp_path / "elsewhere" / "created-by-ckpt"
    nowhere.parent.mkdir()
    os.symlink(nowhere, directory / ".ckpt.lock")
    with pytest.raises(CheckpointError, match="symbolic link"):
        save()
    assert not os.path.lexists(nowhere)

    (directory / ".ckpt.lock").unlink()  # once it is gone, saving works again
    save()
    assert _equal(ckpt.load(ckpt.latest(directory) if saver == "manager" else directory / "ck"), state(1))


def test_a_linked_checkpoint_directory_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with ckpt.Manager(tmp_path / "link", sync=True) as manager:
        manager.save(1, state(1))
        manager.save(2, state(2))
    ckpt.save(state(3), tmp_path / "link" / "sub" / "plain", sync=True)
    assert ckpt.latest(tmp_path / "link", verify=True) == str(tmp_path / "link" / "ckpt-2")
    assert _equal(ckpt.load(real / "sub" / "plain"), state(3))
    assert (real / "ckpt-2.index").is_file() and not (real / "ckpt-2.index").is_symlink()


def test_links_at_the_names_ckpt_writes_are_replaced_not_written_through(tmp_path):
    directory, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    with ckpt.Manager(directory, sync=False) as manager:
        manager.save(1, state(1))
    # Move the state file and the record out and link them back in (reading through the links works) ...
    for name in ("checkpoint", "ckpt.manager.json"):
        os.replace(directory / name, outside / name)
        os.symlink(outside / name, directory / name)
    before = {name: (outside / name).read_bytes() for name in ("checkpoint", "ckpt.manager.json")}
    with ckpt.Manager(directory, sync=False) as manager:
        assert [c.step for c in manager.checkpoints] == [1]
        manager.save(2, state(2))  # ... and the next save replaces the links with files of its own
    for name, content in before.items():
        assert (outside / name).read_bytes() == content
        assert (directory / name).is_file() and not (directory / name).is_symlink()
    assert ckpt.latest(directory) == str(directory / "ckpt-2")


@pytest.fixture
def fixed_token(monkeypatch):
    """Make temporary names predictable, as an attacker who guessed them would have them."""
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: "0badc0de")
    return "0badc0de"


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt"])
def test_a_convert_never_writes_through_a_link_at_its_temporary_name(tmp_path, fixed_token, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    ckpt.save(state(1), tmp_path / "src", sync=False)
    out = tmp_path / "out" / f"model{suffix}"
    out.parent.mkdir()
    nowhere = tmp_path / "outside" / "created-by-ckpt"
    nowhere.parent.mkdir()
    os.symlink(nowhere, f"{out}.tmp-{fixed_token}")
    with pytest.raises(OSError):
        ckpt.convert(tmp_path / "src", out, sync=False)
    assert not os.path.lexists(nowhere)
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt", ""])
def test_a_convert_replaces_a_link_at_its_destination(tmp_path, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    ckpt.save(state(1), tmp_path / "src", sync=False)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    out = tmp_path / f"model{suffix}"
    link = Path(f"{out}.index") if suffix == "" else out
    os.symlink(victim, link)
    ckpt.convert(tmp_path / "src", out, sync=False)
    assert victim.read_bytes() == b"keep me"
    assert link.is_file() and not link.is_symlink()
    assert _equal(ckpt.load(out, flat=True), ckpt.load(tmp_path / "src", flat=True))


def test_events_and_graph_files_never_written_through_links(tmp_path, fixed_token):
    from ckpt.tf.events import write_events
    from ckpt.graph._files import write_bytes

    nowhere = tmp_path / "outside" / "created-by-ckpt"
    nowhere.parent.mkdir()
    logdir = tmp_path / "logs"
    logdir.mkdir()
    os.symlink(nowhere, logdir / f".ckpt-events.tmp-{fixed_token}")
    with pytest.raises(FileExistsError):
        write_events(logdir, [])
    assert not os.path.lexists(nowhere)
    assert not list(logdir.glob("events.out.tfevents.*"))

    target = tmp_path / "graph.pb"
    os.symlink(nowhere, f"{target}.tmp-{fixed_token}")
    with pytest.raises(FileExistsError):
        write_bytes(b"\x0a\x00", target)
    assert not os.path.lexists(nowhere) and not target.exists()


def test_every_open_for_writing_in_ckpt_goes_through_fs():
    """A guard against a new writer that opens files itself: only ckpt/_fs.py calls os.open or opens for writing."""
    root = Path(ckpt.__file__).parent
    pattern = re.compile(r"\bos\.open\(|(?<!zf\.)(?<!_zip\.)(?<!wave\.)\bopen\([^)]*['\"][wax+]|\.tofile\(|\bwrite_(?:bytes|text)\(\w|"
                         r"\btempfile\.|\bmkstemp\(")
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "_fs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and "def write_bytes" not in code and "return write_bytes" not in code:
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
