"""One adapter per library (row of the results): how it saves, restores into preallocated memory, loads, saves
asynchronously and reads one tensor of a big checkpoint.  Libraries are grouped by the process they run in
(``GROUPS``); a group's heavy imports happen once per worker process, before anything is timed.

Conventions, the same for every library:

* ``native(state)`` converts the flat ``{name: ndarray}`` state to the library's own objects (untimed); torch views
  share the NumPy memory, TensorFlow copies into ``tf.Variable``\\ s.
* ``save(native, directory, durable)`` writes into an empty ``directory``.  Libraries with ``self_durable`` make the
  files durable themselves when ``durable`` is true (ckpt's ``sync=True``, raw's ``fsync``); for the others the
  harness fsyncs every file and directory they wrote, inside the timed region.
* ``restore(directory, dest)`` fills preallocated, already-touched destination tensors.  Libraries that cannot
  read into existing memory load and copy, which is what their users do (``load_state_dict(torch.load(...))``).
* ``load(directory)`` loads every tensor (all held in memory at once, as a state dict is) and returns the checksum
  of them all: computing it touches every byte, so lazy and memory-mapped loaders pay for their reads.  The raw
  baseline pays the same checksum.
* ``lookup(directory, name)`` opens a checkpoint from scratch and reads one tensor.
"""

from __future__ import annotations

import bisect
import importlib.util
import inspect
import json
import mmap
import os
import struct

import numpy as np

from _workloads import checksum

ALL_OPS = ("save", "save_durable", "restore_warm", "restore_cold", "load_warm", "load_cold", "async", "async_again")
LOOKUP_OPS = ("lookup_cold", "lookup_warm")


class NotApplicable(Exception):
    """The library has no such operation (reported as n/a, not as an error)."""


def _write_all(fd: int, buf) -> None:
    """Write a whole buffer: Linux caps one write() at 2 GiB - 4 KiB, so loop until done."""
    view = memoryview(buf).cast("B")
    off, n = 0, len(view)
    while off < n:
        off += os.write(fd, view[off:])


def _read_into(f, array: np.ndarray) -> None:
    view = memoryview(array.reshape(-1).view(np.uint8))
    off, n = 0, len(view)
    while off < n:
        got = f.readinto(view[off:])
        if not got:
            raise EOFError("file shorter than expected")
        off += got


def _bytes_view(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


class Lib:
    name = "?"
    module: str | None = None  # import needed (checked with find_spec)
    requires: tuple[str, ...] = ()  # further top-level modules it needs
    bulk = True  # takes part in the gpt2 / many / big workloads
    saves = True  # has its own save (else it reads the files of ``source``)
    source: str | None = None
    self_durable = False
    lookup_capable = False
    lookup_default = True  # in the lookup workload without --lookup-all

    @classmethod
    def available(cls) -> str | None:
        """None when usable, else why not."""
        for mod in cls.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not installed"
        if cls.module and importlib.util.find_spec(cls.module.split(".")[0]) is None:
            return f"{cls.module} not installed"
        if cls.module:
            try:
                if importlib.util.find_spec(cls.module) is None:
                    return f"{cls.module} not installed"
            except ModuleNotFoundError:
                return f"{cls.module} not installed"
        return None

    def __init__(self, workload):
        self.wl = workload
        self.names = list(workload.state)

    def version(self) -> str:
        return ""

    # -- bulk ---------------------------------------------------------------------------------------------------
    def native(self, state):
        return state

    def dest(self, state):
        """Preallocated destination, every page touched (a model's existing parameters)."""
        out = {}
        for k, v in state.items():
            a = np.empty_like(v)
            a.fill(0)
            out[k] = a
        return out

    def dest_arrays(self, dest):
        return dest.values()

    def clear_dest(self, dest) -> None:
        """Zero the destination again (untimed), so a restore that does nothing cannot pass verification."""
        for a in dest.values():
            a.fill(0)

    def save(self, native, directory: str, durable: bool) -> None:
        raise NotApplicable

    def restore(self, directory: str, dest) -> None:
        raise NotApplicable

    def load(self, directory: str) -> int:
        raise NotApplicable

    def save_async(self, native, directory: str):
        """Start an asynchronous save; return a function that waits for it to be complete and durable."""
        raise NotApplicable("no asynchronous save")

    # -- lookup -------------------------------------------------------------------------------------------------
    def lookup_setup(self, state, directory: str) -> None:
        raise NotApplicable

    def lookup(self, directory: str, name: str):
        raise NotApplicable


# ---------------------------------------------------------------------------------------------------- raw --------
class Raw(Lib):
    """The physical limit: the same bytes with plain file calls, one ``os.write`` loop per tensor into one file,
    ``fsync`` for durability, ``readinto`` preallocated buffers to read back.  Its "load" allocates fresh arrays and
    reads into them; the layout comes from the in-memory state (no index), so it is a lower bound."""

    name = "raw"
    self_durable = True
    lookup_capable = True

    def save(self, native, directory, durable):
        path = os.path.join(directory, "raw.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for name in self.names:
                _write_all(fd, _bytes_view(native[name]))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if durable:
            _fsync_dir(directory)

    def restore(self, directory, dest):
        with open(os.path.join(directory, "raw.bin"), "rb", buffering=0) as f:
            for name in self.names:
                _read_into(f, dest[name])

    def load(self, directory):
        state = self.wl.state
        arrays = {}
        with open(os.path.join(directory, "raw.bin"), "rb", buffering=0) as f:
            for name in self.names:
                ref = state[name]
                a = np.empty(ref.shape, ref.dtype)
                _read_into(f, a)
                arrays[name] = a
        return checksum(arrays.values())

    # Lookup: a data file plus a sorted fixed-width binary index (48-byte name, offset, size), binary-searched in
    # a memory map: logarithmic in the number of tensors, the lower bound for "open + read one".
    _REC = struct.Struct("<48sQQ")

    def lookup_setup(self, state, directory):
        names = sorted(state)
        with open(os.path.join(directory, "data.bin"), "wb") as data:
            offsets = {}
            for n in names:
                offsets[n] = data.tell()
                data.write(_bytes_view(state[n]))
        with open(os.path.join(directory, "index.bin"), "wb") as idx:
            for n in names:
                idx.write(self._REC.pack(n.encode(), offsets[n], state[n].nbytes))

    def lookup(self, directory, name):
        rec = self._REC
        with open(os.path.join(directory, "index.bin"), "rb") as idx:
            with mmap.mmap(idx.fileno(), 0, access=mmap.ACCESS_READ) as m:
                n = len(m) // rec.size

                class _Keys:
                    def __len__(self):
                        return n

                    def __getitem__(self, i):
                        return m[i * rec.size:i * rec.size + 48].rstrip(b"\0")

                key = name.encode()
                i = bisect.bisect_left(_Keys(), key)
                if i == n or _Keys()[i] != key:
                    raise KeyError(name)
                _, offset, size = rec.unpack_from(m, i * rec.size)
        out = np.empty(size // 4, np.float32)
        with open(os.path.join(directory, "data.bin"), "rb", buffering=0) as data:
            data.seek(offset)
            _read_into(data, out)
        return out


class RawJson(Raw):
    """Lookup only: the same data file with a JSON index, parsed whole on open (linear in the number of tensors)."""

    name = "raw (JSON index)"
    bulk = False

    def lookup_setup(self, state, directory):
        names = sorted(state)
        offsets, pos = {}, 0
        with open(os.path.join(directory, "data.bin"), "wb") as data:
            for n in names:
                offsets[n] = pos
                data.write(_bytes_view(state[n]))
                pos += state[n].nbytes
        index = {n: [offsets[n], state[n].nbytes, str(state[n].dtype), list(state[n].shape)] for n in names}
        with open(os.path.join(directory, "index.json"), "w") as f:
            json.dump(index, f)

    def lookup(self, directory, name):
        with open(os.path.join(directory, "index.json")) as f:
            offset, _size, dtype, shape = json.load(f)[name]
        out = np.empty(shape, dtype)
        with open(os.path.join(directory, "data.bin"), "rb", buffering=0) as data:
            data.seek(offset)
            _read_into(data, out)
        return out


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------- ckpt -------
class Ckpt(Lib):
    """``ckpt.save(state, prefix, sync=durable)``, ``ckpt.restore(prefix, into)``, ``ckpt.load(prefix, flat=True)``,
    ``ckpt.Reader(prefix)[name]``; asynchronous: ``ckpt.save(..., blocking=False)`` when the keyword exists."""

    name = "ckpt"
    module = "ckpt"
    self_durable = True
    lookup_capable = True

    def __init__(self, workload):
        super().__init__(workload)
        import ckpt

        self.ckpt = ckpt

    def version(self):
        return getattr(self.ckpt, "__version__", "")

    @staticmethod
    def _prefix(directory):
        return os.path.join(directory, "ckpt")

    def save(self, native, directory, durable):
        self.ckpt.save(native, self._prefix(directory), sync=durable)

    def restore(self, directory, dest):
        self.ckpt.restore(self._prefix(directory), dest)

    def load(self, directory):
        return checksum(self.ckpt.load(self._prefix(directory), flat=True).values())

    def save_async(self, native, directory):
        ckpt = self.ckpt
        if "blocking" not in inspect.signature(ckpt.save).parameters:
            raise NotApplicable("ckpt.save has no blocking= keyword")
        handle = ckpt.save(native, self._prefix(directory), sync=True, blocking=False)
        if handle is not None and not isinstance(handle, (str, bytes, os.PathLike)):  # str has .join
            for attr in ("result", "wait", "join"):
                fn = getattr(handle, attr, None)
                if callable(fn):
                    return fn
        for attr in ("wait", "wait_until_finished", "wait_for_saves"):
            fn = getattr(ckpt, attr, None)
            if callable(fn):
                return fn
        raise NotApplicable("ckpt.save(blocking=False) returned no handle to wait on and ckpt has no wait()")

    def lookup_setup(self, state, directory):
        self.ckpt.save(state, self._prefix(directory), sync=False)

    def lookup(self, directory, name):
        with self.ckpt.Reader(self._prefix(directory)) as r:
            return r[name]


# ---------------------------------------------------------------------------------------------------- torch ------
class Torch(Lib):
    """``torch.save(state_dict)``; restore = ``torch.load`` + ``copy_`` into the existing tensors (what
    ``load_state_dict`` does)."""

    name = "torch"
    module = "torch"
    # In the lookup workload only with --lookup-all: torch.load unpickles the whole dict even with mmap=True (linear
    # in the number of tensors: ~0.5 s at 10,000 here), and importing torch costs more than the others' lookups.
    lookup_capable = True
    lookup_default = False
    mmap = False

    def __init__(self, workload):
        super().__init__(workload)
        import torch

        self.torch = torch

    def version(self):
        return self.torch.__version__

    def native(self, state):
        return {k: self.torch.from_numpy(v) for k, v in state.items()}

    def dest(self, state):
        torch = self.torch
        out = {}
        for k, v in state.items():
            t = torch.empty(tuple(v.shape), dtype=torch.from_numpy(np.empty(0, v.dtype)).dtype)
            t.fill_(0)
            out[k] = t
        return out

    def dest_arrays(self, dest):
        return (t.numpy() for t in dest.values())

    def clear_dest(self, dest):
        for t in dest.values():
            t.zero_()

    def _load(self, directory):
        return self.torch.load(os.path.join(directory, "model.pt"), weights_only=True, mmap=self.mmap)

    def save(self, native, directory, durable):
        self.torch.save(native, os.path.join(directory, "model.pt"))

    def restore(self, directory, dest):
        sd = self._load(directory)
        with self.torch.no_grad():
            for k, t in dest.items():
                t.copy_(sd[k])

    def load(self, directory):
        return checksum(t.numpy() for t in self._load(directory).values())

    def lookup_setup(self, state, directory):
        self.torch.save(self.native(state), os.path.join(directory, "model.pt"))

    def lookup(self, directory, name):
        return self._load(directory)[name].numpy()


class TorchMmap(Torch):
    name = "torch (mmap=True)"
    saves = False
    source = "torch"
    mmap = True


# ---------------------------------------------------------------------------------------------------- safetensors
class SafetensorsNumpy(Lib):
    """``safetensors.numpy.save_file`` / ``load_file``; restore = load_file + copy; lookup = ``safe_open``."""

    name = "safetensors (numpy)"
    module = "safetensors.numpy"
    lookup_capable = True

    def __init__(self, workload):
        super().__init__(workload)
        import safetensors
        import safetensors.numpy

        self.st = safetensors
        self.mod = safetensors.numpy

    def version(self):
        return self.st.__version__

    def _path(self, directory):
        return os.path.join(directory, "model.safetensors")

    def save(self, native, directory, durable):
        self.mod.save_file(native, self._path(directory))

    def restore(self, directory, dest):
        loaded = self.mod.load_file(self._path(directory))
        for k, a in dest.items():
            np.copyto(a, loaded[k])

    def load(self, directory):
        return checksum(self.mod.load_file(self._path(directory)).values())

    def lookup_setup(self, state, directory):
        self.mod.save_file(state, self._path(directory))

    def lookup(self, directory, name):
        with self.st.safe_open(self._path(directory), framework="np") as f:
            return f.get_tensor(name)


class SafetensorsTorch(Torch):
    name = "safetensors (torch)"
    module = "safetensors.torch"
    requires = ("torch",)
    lookup_capable = False

    def __init__(self, workload):
        super().__init__(workload)
        import safetensors
        import safetensors.torch

        self.st = safetensors
        self.mod = safetensors.torch

    def version(self):
        return self.st.__version__

    def _path(self, directory):
        return os.path.join(directory, "model.safetensors")

    def _load(self, directory):
        return self.mod.load_file(self._path(directory))

    def save(self, native, directory, durable):
        self.mod.save_file(native, self._path(directory))


# ---------------------------------------------------------------------------------------------------- numpy ------
class NumpyNpz(Lib):
    """``np.savez`` / ``np.load`` (lazy ``NpzFile``); restore = load + copy."""

    name = "numpy.savez"
    module = "numpy"
    lookup_capable = True

    def version(self):
        return np.__version__

    def _path(self, directory):
        return os.path.join(directory, "state.npz")

    def save(self, native, directory, durable):
        np.savez(self._path(directory), **native)

    def restore(self, directory, dest):
        with np.load(self._path(directory)) as f:
            for k, a in dest.items():
                np.copyto(a, f[k])

    def load(self, directory):
        with np.load(self._path(directory)) as f:
            arrays = {k: f[k] for k in f.files}
        return checksum(arrays.values())

    def lookup_setup(self, state, directory):
        np.savez(self._path(directory), **state)

    def lookup(self, directory, name):
        with np.load(self._path(directory)) as f:
            return f[name]


# ---------------------------------------------------------------------------------------------------- TensorFlow -
class TensorFlow(Lib):
    """``tf.train.Checkpoint(v={name: tf.Variable}).write(prefix)``; restore = ``.read(prefix)`` into existing
    variables; load = ``tf.train.load_checkpoint(prefix).get_tensor`` for every variable; asynchronous =
    ``CheckpointOptions(enable_async=True)`` + ``sync()``; lookup = ``load_checkpoint(...).get_tensor(name)`` on a
    bundle written by ``tf.raw_ops.SaveV2``."""

    name = "tf.train.Checkpoint"
    module = "tensorflow"
    lookup_capable = True
    lookup_default = False  # only with --lookup-all: importing TensorFlow costs seconds for a millisecond read

    def __init__(self, workload):
        super().__init__(workload)
        import tensorflow as tf

        self.tf = tf

    def version(self):
        return self.tf.__version__

    def native(self, state):
        tf = self.tf
        variables = {k: tf.Variable(v) for k, v in state.items()}
        return tf.train.Checkpoint(v=variables)

    def dest(self, state):
        tf = self.tf
        variables = {k: tf.Variable(np.zeros_like(v)) for k, v in state.items()}
        return tf.train.Checkpoint(v=variables), variables

    def dest_arrays(self, dest):
        return (v.numpy() for v in dest[1].values())

    def clear_dest(self, dest):
        # Every 16th variable (and the first): enough for a restore that did nothing to fail verification, without
        # 10,000 eager assigns per clear.
        for i, v in enumerate(dest[1].values()):
            if i % 16 == 0:
                v.assign(self.tf.zeros_like(v))

    def _prefix(self, directory):
        return os.path.join(directory, "tf")

    def save(self, native, directory, durable):
        native.write(self._prefix(directory))

    def restore(self, directory, dest):
        dest[0].read(self._prefix(directory)).assert_consumed()

    def load(self, directory):
        reader = self.tf.train.load_checkpoint(self._prefix(directory))
        arrays = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
                  if key != "_CHECKPOINTABLE_OBJECT_GRAPH"}
        return checksum(arrays.values())

    def save_async(self, native, directory):
        tf = self.tf
        try:
            options = tf.train.CheckpointOptions(enable_async=True)
        except TypeError:
            options = tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)
        native.write(self._prefix(directory), options=options)
        return native.sync

    def lookup_setup(self, state, directory):
        tf = self.tf
        names = sorted(state)
        tf.raw_ops.SaveV2(prefix=self._prefix(directory), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(state[n]) for n in names])

    def lookup(self, directory, name):
        return self.tf.train.load_checkpoint(self._prefix(directory)).get_tensor(name)


# ---------------------------------------------------------------------------------------------------- Orbax ------
class Orbax(Lib):
    """``orbax.checkpoint.StandardCheckpointer`` (asynchronous by design): save = ``save`` +
    ``wait_until_finished``; restore = ``restore(path, target)`` + copy (no in-place restore); load =
    ``restore(path)``.  Only measured when orbax-checkpoint is installed."""

    name = "orbax"
    module = "orbax.checkpoint"
    requires = ("jax",)

    def __init__(self, workload):
        super().__init__(workload)
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.ckptr = ocp.StandardCheckpointer()

    def version(self):
        try:
            from importlib.metadata import version

            return version("orbax-checkpoint")
        except Exception:
            return ""

    def native(self, state):
        return _unflatten(state)

    def _path(self, directory):
        return os.path.join(os.path.abspath(directory), "orbax")

    def save(self, native, directory, durable):
        self.ckptr.save(self._path(directory), native)
        self.ckptr.wait_until_finished()

    def restore(self, directory, dest):
        restored = _flatten(self.ckptr.restore(self._path(directory), _unflatten(dest)))
        for k, a in dest.items():
            np.copyto(a, np.asarray(restored[k]))

    def load(self, directory):
        return checksum(np.asarray(v) for v in _flatten(self.ckptr.restore(self._path(directory))).values())

    def save_async(self, native, directory):
        self.ckptr.save(self._path(directory), native)
        return self.ckptr.wait_until_finished


LIBS: dict[str, type[Lib]] = {c.name: c for c in (Raw, RawJson, Ckpt, Torch, TorchMmap, SafetensorsNumpy,
                                                   SafetensorsTorch, NumpyNpz, TensorFlow, Orbax)}
# Process groups: libraries measured in the same worker process (heavy imports shared; a library that reads
# another's files must follow it).
GROUPS: dict[str, list[str]] = {
    "raw": ["raw", "raw (JSON index)"],
    "ckpt": ["ckpt"],
    "torch": ["torch", "torch (mmap=True)"],
    "safetensors": ["safetensors (numpy)", "safetensors (torch)"],
    "numpy": ["numpy.savez"],
    "tensorflow": ["tf.train.Checkpoint"],
    "orbax": ["orbax"],
}
