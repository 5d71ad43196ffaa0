"""Sharded checkpoints from many processes: ``torch.distributed.checkpoint`` (DCP) storage in TensorFlow's format.

:class:`BundleStorageWriter` and :class:`BundleStorageReader` plug into ``torch.distributed.checkpoint.save`` /
``load`` / ``async_save``. DCP's planners decide who writes and reads what (deduplicating replicated tensors and
resharding on load); these classes put the bytes into one TensorFlow tensor bundle::

    prefix.data-0000r-of-0000N   one per rank r of N, written by that rank in parallel
    prefix.index                 the merged index (TensorFlow's MergeBundles), written by the coordinator last

A tensor saved whole (one chunk) is an ordinary entry; a sharded one is a partitioned tensor whose pieces are
slice entries (``TensorSliceProto``), exactly as TensorFlow stores partitioned variables, so ``ckpt.Reader``,
``ckpt.load``, ``ckpt verify`` and ``tf.train.load_checkpoint`` read the whole tensors.

Commit protocol (atomic across ranks): every rank writes its data file under a temporary name, fsyncs it and renames
it into place before reporting success; DCP gathers the results on the coordinator, which writes the index only if
every rank succeeded (an error on any rank is raised on all ranks by DCP's collectives), renames it into place,
fsyncs the directory and only then records the prefix in the directory's ``checkpoint`` file. A rank killed
mid-save leaves data files without an index: nothing that looks complete, and the previous checkpoint stays latest.

Non-tensor values of the state dict (an optimizer's ``param_groups``, step counters) must be JSON values; they are
kept in the bundle's ckpt record (``_CKPT_METADATA``), never pickled. torch is imported only when these classes are
used (``import ckpt`` does not import it).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _fs
from ._fs import TMP_MARKER
from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from .tf import dtypes as _dtypes
from .tf._crc import crc32c, mask
from .tf.bundle import (BUNDLE_VERSION, HEADER_KEY, BundleReader, TensorEntry, data_filename, encode_strings,
                        index_filename)
from .tf.bundle_reader import _encode_name
from .tf.bundle_writer import _encode_entry
from .tf.protos import tensor_bundle_pb2
from .tf.slices import encode_slice_key
from .tf.table import TableWriter
from .reader import METADATA_KEY

__all__ = ["BundleStorageWriter", "BundleStorageReader", "dcp_to_bundle", "bundle_to_dcp"]

#: Key of this module's part of the ckpt record.
RECORD_KEY = "distributed"
_RECORD_VERSION = 1

_CLASSES: dict[str, type] = {}


def _unlink_quietly(path: str) -> None:
    try:
        _fs.unlink(path)
    except OSError:
        pass


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples become lists), or UnsupportedError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, where) for k, v in value.items()}
    raise UnsupportedError(f"{where!r}: a {type(value).__name__} value cannot be stored in a ckpt bundle (only "
                           "tensors and JSON values: numbers, strings, bools, None, lists, str-keyed dicts; "
                           "ckpt never pickles)", key=where)


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _prefix_of(checkpoint_id: str | os.PathLike) -> str:
    from ._paths import local_path

    prefix = local_path(checkpoint_id, what="checkpoint")
    if os.path.isdir(prefix):
        raise CheckpointError(f"{prefix} is a directory; pass a checkpoint prefix inside it, e.g. "
                              f"{os.path.join(prefix, 'ckpt')}", path=prefix)
    return prefix


def _classes() -> dict[str, type]:
    """The DCP classes, defined on first use so that torch is imported only then."""
    if _CLASSES:
        return _CLASSES
    import dataclasses

    import torch
    from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                       MetadataIndex, StorageMeta, TensorProperties,
                                                       TensorStorageMetadata)
    from torch.distributed.checkpoint.planner import LoadItemType, WriteItemType
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
    from torch.futures import Future

    from .adapters import torch as _torch_adapter

    class _RankFile:
        """One rank's data file, written under the temporary name the coordinator chose (``token``); the
        coordinator renames every rank's file into place at commit."""

        def __init__(self, prefix: str, rank: int, world: int, token: str, sync: bool) -> None:
            self.final = data_filename(prefix, rank, world)
            self.tmp = f"{self.final}{TMP_MARKER}{token}"
            self.sync = sync
            self.size = 0
            _fs.makedirs(os.path.dirname(self.final) or ".")
            self.fd = _fs.create(self.tmp)

        def append(self, data) -> tuple[int, int]:
            offset = self.size
            view = memoryview(data).cast("B")
            _fs.write_all(self.fd, view)
            self.size += view.nbytes
            return offset, view.nbytes

        def close(self) -> None:
            """Make the bytes durable (``sync``) and close; the file keeps its temporary name."""
            if self.fd >= 0:
                if self.sync:
                    _fs.fsync(self.fd)
                fd, self.fd = self.fd, -1
                _fs.close(fd)

        def abort(self) -> None:
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                try:
                    _fs.close(fd)
                except OSError:
                    pass
            _unlink_quietly(self.tmp)

    class BundleStorageWriter(StorageWriter):
        """DCP ``StorageWriter`` writing a TensorFlow tensor bundle at ``checkpoint_id`` (a prefix such as
        ``run/model.ckpt-100``); each rank writes its own data file, the coordinator the merged index.

        Args:
            checkpoint_id: The checkpoint prefix (may also be given to ``dcp.save(checkpoint_id=...)``).
            sync: fsync data files, index and directory before the save completes (default).
            record_state: After the index is committed, make the prefix the newest entry of its directory's
                ``checkpoint`` state file (default), so ``ckpt.latest`` / ``tf.train.latest_checkpoint`` find it.
            overwrite: Allow replacing an existing checkpoint at the same prefix (its index is removed first, so
                it never looks complete while it is replaced). False (default) refuses, on every rank.
        """

        def __init__(self, checkpoint_id: str | os.PathLike | None = None, *, sync: bool = True,
                     record_state: bool = True, overwrite: bool = False) -> None:
            super().__init__()
            self.prefix = None if checkpoint_id is None else _prefix_of(checkpoint_id)
            self.sync = sync
            self.record_state = record_state
            self.overwrite = overwrite
            self.is_coordinator = False
            self._coordinator_file: _RankFile | None = None
            self._shape = (0, 1, "")  # (this rank's shard, number of data files, token), known once planned

        def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
            if checkpoint_id is not None:
                self.prefix = _prefix_of(checkpoint_id)
            self._coordinator_file = None

        @property
        def checkpoint_id(self) -> str | None:
            return self.prefix

        @classmethod
        def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
            try:
                _prefix_of(checkpoint_id)
            except (CheckpointError, TypeError, ValueError):
                return False
            return True

        def storage_meta(self) -> StorageMeta | None:
            return StorageMeta(checkpoint_id=self.prefix)

        def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("use_collectives", True) is False:
                raise UnsupportedError("BundleStorageWriter needs DCP's collectives (use_collectives=True): the "
                                       "coordinator merges the index of every rank")
            self.is_coordinator = is_coordinator

        def prepare_local_plan(self, plan):
            if self.prefix is None:
                raise CheckpointError("no checkpoint prefix: pass checkpoint_id to BundleStorageWriter or dcp.save")
            index = index_filename(self.prefix)
            if self.overwrite and self.is_coordinator and os.path.lexists(index):
                # Before any rank replaces a data file: the old checkpoint stops looking complete first.
                _fs.unlink(index)
            elif not self.overwrite and os.path.lexists(index):
                raise CheckpointError(f"a checkpoint already exists at {self.prefix} (pass overwrite=True to "
                                      "replace it)", path=self.prefix)
            return dataclasses.replace(plan, storage_data=self.prefix)  # the coordinator checks ranks agree

        def prepare_global_plan(self, plans):
            # Every rank learns its shard number, the number of data files and the temporary-name token, so the
            # coordinator knows every rank's temporary file (a rank with nothing to write still writes an empty one).
            prefixes = {p.storage_data for p in plans}
            if len(prefixes) > 1:
                ranks = {pre: [i for i, p in enumerate(plans) if p.storage_data == pre] for pre in prefixes}
                listing = "; ".join(f"rank(s) {r}: {pre}" for pre, r in sorted(ranks.items(), key=lambda x: x[1]))
                raise CheckpointError(f"the ranks disagree on the checkpoint (a different step?): {listing}",
                                      path=self.prefix)
            token = os.urandom(4).hex()
            return [dataclasses.replace(p, storage_data=(i, len(plans), token)) for i, p in enumerate(plans)]

        def write_data(self, plan, planner) -> Future:
            rank, world, token = plan.storage_data
            out = _RankFile(self.prefix, rank, world, token, self.sync)
            results = []
            try:
                for item in plan.items:
                    data = planner.resolve_data(item)
                    if item.type == WriteItemType.BYTE_IO:
                        results.append(WriteResult(index=item.index, size_in_bytes=0,
                                                   storage_data=("object", self._object(item, data))))
                        continue
                    tensor = data.detach()
                    array = np.ascontiguousarray(_torch_adapter.to_numpy(tensor))
                    dtype = _dtypes.from_numpy(array.dtype)
                    raw = array.reshape(-1).view(np.uint8)
                    if raw.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
                        raw = array.astype(array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
                    offset, size = out.append(raw)
                    chunk = item.tensor_data.chunk
                    info = ("tensor", dtype.enum, tuple(item.tensor_data.size), tuple(chunk.offsets),
                            tuple(chunk.sizes), rank, offset, size, mask(crc32c(raw)))
                    results.append(WriteResult(index=item.index, size_in_bytes=size, storage_data=info))
                if self.is_coordinator:
                    # Closed in finish(), after the record (which needs every rank's objects) is appended.
                    self._coordinator_file, self._shape = out, (rank, world, token)
                else:
                    out.close()
            except BaseException:
                out.abort()
                raise
            fut: Future = Future()
            fut.set_result(results)
            return fut

        @staticmethod
        def _object(item, data) -> Any:
            # The bytes are torch.save'd by the planner in this process from the state dict's own value; loading
            # them here only recovers that value so it can be stored as JSON (nothing from a file is unpickled).
            data.seek(0)
            value = torch.load(data, weights_only=True)
            return _jsonable(value, item.index.fqn)

        def finish(self, metadata, results) -> None:
            coord = self._coordinator_file
            if coord is None:
                raise CheckpointError("finish() called without this rank's write_data()", path=self.prefix)
            shard, world, token = self._shape
            directory = os.path.dirname(self.prefix) or "."
            temps = [f"{data_filename(self.prefix, r, world)}{TMP_MARKER}{token}" for r in range(world)]
            index_final = index_filename(self.prefix)
            index_tmp = f"{index_final}{TMP_MARKER}{token}"
            placed: list[str] = []
            try:
                tensors: dict[str, list[tuple]] = {}
                objects: dict[str, Any] = {}
                for rank_results in results:
                    for res in rank_results:
                        kind, *info = res.storage_data
                        if kind == "object":
                            objects[res.index.fqn] = info[0]
                        else:
                            tensors.setdefault(res.index.fqn, []).append(tuple(info))
                record = {RECORD_KEY: {"version": _RECORD_VERSION, "objects": objects}}
                payload, crc = encode_strings(np.asarray(json.dumps(record, sort_keys=True).encode(), dtype=object))
                rec_offset, rec_size = coord.append(payload)
                entries = {_encode_name(METADATA_KEY): _encode_entry(_dtypes.from_numpy(np.dtype(object)).enum, (),
                                                                    shard, rec_offset, rec_size, mask(crc))}
                for fqn, chunks in tensors.items():
                    _merge_entries(entries, fqn, chunks)
                coord.close()
                header = tensor_bundle_pb2.BundleHeaderProto(num_shards=world)
                header.version.producer = BUNDLE_VERSION
                table = TableWriter()
                table.add(HEADER_KEY, header.SerializeToString())
                for key in sorted(entries):
                    value = entries[key]
                    table.add(key, value if isinstance(value, bytes) else value.SerializeToString())
                fd = _fs.create(index_tmp)
                try:
                    _fs.write_all(fd, table.finish())
                    if self.sync:
                        _fs.fsync(fd)
                finally:
                    _fs.close(fd)
                from ._lock import DirectoryLock

                with DirectoryLock(directory):  # no ckpt.save / Manager of this directory commits meanwhile
                    # Data files first, the index last: an index only ever appears next to complete data.
                    for r, tmp in enumerate(temps):
                        _fs.replace(tmp, data_filename(self.prefix, r, world))
                        placed.append(data_filename(self.prefix, r, world))
                    _fs.replace(index_tmp, index_final)
                    placed.insert(0, index_final)
                    if self.sync:
                        _fs.fsync_dir(directory)
                    if self.record_state:
                        from .api import record_in_state

                        record_in_state(directory, self.prefix, sync=self.sync)
            except BaseException:
                coord.abort()
                for path in placed + temps + [index_tmp]:
                    _unlink_quietly(path)
                raise
            finally:
                self._coordinator_file = None

    def _merge_entries(entries: dict, fqn: str, chunks: list[tuple]) -> None:
        """The index entries of one tensor: a whole entry for one chunk covering it, else a partitioned tensor."""
        key = _encode_name(fqn)
        dtype, full, offsets0, sizes0 = chunks[0][:4]
        if len(chunks) == 1 and tuple(sizes0) == tuple(full) and not any(offsets0):
            _, _, _, _, shard, offset, size, crc = chunks[0]
            entries[key] = _encode_entry(dtype, tuple(full), shard, offset, size, crc)
            return
        whole = tensor_bundle_pb2.BundleEntryProto(dtype=dtype)
        whole.shape.SetInParent()
        for d in full:
            whole.shape.dim.add(size=d)
        for _, _, offsets, sizes, shard, offset, size, crc in sorted(chunks, key=lambda c: tuple(c[2])):
            # A whole dimension is (0, -1) in the slice's key and proto, as TensorFlow writes it.
            extents = tuple((s, -1) if s == 0 and n == d else (s, n) for s, n, d in zip(offsets, sizes, full))
            part = tensor_bundle_pb2.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size,
                                                      crc32c=crc)
            part.shape.SetInParent()
            for d in sizes:
                part.shape.dim.add(size=d)
            entries[encode_slice_key(key, extents)] = part
            proto_slice = whole.slices.add()
            for start, length in extents:
                ext = proto_slice.extent.add(start=start)
                if length != -1:
                    ext.length = length
        entries[key] = whole

    class BundleStorageReader(StorageReader):
        """DCP ``StorageReader`` for a TensorFlow tensor bundle (one written by :class:`BundleStorageWriter`,
        ``ckpt.save`` or TensorFlow, partitioned variables included).

        Each rank reads only the byte ranges of the stored pieces that overlap what its planner asks for (one
        ``pread`` per contiguous run); ``bytes_read`` counts them. A piece read whole has its CRC32C checked;
        ``ckpt verify`` checks every byte of a checkpoint.

        Args:
            checkpoint_id: The checkpoint prefix, or a directory with a ``checkpoint`` state file (its latest).
        """

        def __init__(self, checkpoint_id: str | os.PathLike | None = None) -> None:
            super().__init__()
            self.prefix = None if checkpoint_id is None else self._resolve(checkpoint_id)
            self.bytes_read = 0
            self._reader: BundleReader | None = None
            self._objects: dict[str, Any] = {}
            self._pieces: dict[Any, TensorEntry] = {}

        @staticmethod
        def _resolve(checkpoint_id) -> str:
            from .reader import resolve_checkpoint

            return resolve_checkpoint(checkpoint_id)

        def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
            if checkpoint_id is not None:
                self.prefix = self._resolve(checkpoint_id)
            self.bytes_read = 0

        @property
        def checkpoint_id(self) -> str | None:
            return self.prefix

        @classmethod
        def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
            try:
                cls._resolve(checkpoint_id)
            except (CheckpointError, TypeError, ValueError):
                return False
            return True

        def _open(self) -> BundleReader:
            if self._reader is None:
                if self.prefix is None:
                    raise CheckpointError("no checkpoint prefix: pass checkpoint_id to BundleStorageReader or dcp.load")
                self._reader = BundleReader(self.prefix)
            return self._reader

        def read_metadata(self, *args: Any, **kwargs: Any):
            reader = self._open()
            state: dict[str, Any] = {}
            self._pieces = {}
            for entry in reader.entries():
                if entry.name == METADATA_KEY:
                    self._objects = self._read_objects(reader, entry)
                    continue
                np_dtype = entry.dtype.numpy
                if entry.dtype.is_string or np_dtype is None:
                    continue  # no torch counterpart (strings, resources, variants): not part of a DCP state
                try:
                    torch_dtype = _torch_adapter.from_numpy(np.empty(0, np_dtype)).dtype
                except TypeError:
                    continue
                chunks = []
                for box, part in (reader._slice_parts(entry) if entry.slices else
                                  [(tuple((0, d) for d in entry.shape), entry)]):
                    offsets = tuple(s for s, _ in box)
                    chunks.append(ChunkStorageMetadata(offsets=torch.Size(offsets),
                                                       sizes=torch.Size(n for _, n in box)))
                    self._pieces[(entry.name, offsets)] = part
                state[entry.name] = TensorStorageMetadata(properties=TensorProperties(dtype=torch_dtype),
                                                          size=torch.Size(entry.shape), chunks=chunks)
            for fqn in self._objects:
                state[fqn] = BytesStorageMetadata()
            return Metadata(state_dict_metadata=state, storage_data={}, storage_meta=StorageMeta(
                checkpoint_id=self.prefix))

        def _read_objects(self, reader: BundleReader, entry: TensorEntry) -> dict[str, Any]:
            try:
                record = json.loads(bytes(reader.read_entry(entry)[()]))
            except (ValueError, TypeError) as exc:
                raise CorruptCheckpointError(f"{reader.index_path}: the ckpt record is not valid JSON ({exc})",
                                             path=reader.index_path, key=METADATA_KEY) from None
            part = record.get(RECORD_KEY) if isinstance(record, dict) else None
            objects = part.get("objects", {}) if isinstance(part, dict) else {}
            if not isinstance(objects, dict):
                raise CorruptCheckpointError(f"{reader.index_path}: malformed distributed record",
                                             path=reader.index_path, key=METADATA_KEY)
            return objects

        def set_up_storage_reader(self, metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
            if not self._pieces and self._reader is None:
                self.read_metadata()

        def prepare_local_plan(self, plan):
            return plan

        def prepare_global_plan(self, plans):
            return plans

        def read_data(self, plan, planner) -> Future:
            reader = self._open()
            if not self._pieces:
                self.read_metadata()
            for item in plan.items:
                fqn = item.storage_index.fqn
                if item.type == LoadItemType.BYTE_IO:
                    if fqn not in self._objects:
                        raise CheckpointNotFoundError(f"{self.prefix}: no value {fqn!r}", path=self.prefix, key=fqn)
                    buf = io.BytesIO()
                    # Serialized here from the JSON value just read; DCP's planner deserializes it.
                    torch.save(_from_json(self._objects[fqn]), buf)
                    buf.seek(0)
                    planner.load_bytes(item, buf)
                    continue
                offsets = tuple(item.storage_index.offset)
                part = self._pieces.get((fqn, offsets))
                if part is None:
                    raise CheckpointNotFoundError(f"{self.prefix}: tensor {fqn!r} has no piece at {list(offsets)}",
                                                  path=self.prefix, key=fqn)
                array = self._read_box(reader, part, tuple(item.storage_offsets), tuple(item.lengths))
                target = planner.resolve_tensor(item).detach()
                with torch.no_grad():
                    target.copy_(_torch_adapter.from_numpy(array))
                planner.commit_tensor(item, target)
            fut: Future = Future()
            fut.set_result(None)
            return fut

        def _read_box(self, reader: BundleReader, part: TensorEntry, start: tuple, lengths: tuple) -> np.ndarray:
            array, nbytes = read_box(reader, part, start, lengths)
            self.bytes_read += nbytes
            return array

    _CLASSES.update(BundleStorageWriter=BundleStorageWriter, BundleStorageReader=BundleStorageReader)
    return _CLASSES


def _runs(shape: Sequence[int], start: Sequence[int], lengths: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(element offset, element count) of the contiguous runs of the box ``start``/``lengths`` inside a C-order
    array of ``shape``, in order."""
    rank = len(shape)
    # The trailing dimensions the box covers whole merge into one run with the first partial dimension.
    k = rank
    while k > 0 and start[k - 1] == 0 and lengths[k - 1] == shape[k - 1]:
        k -= 1
    strides = [1] * rank
    for d in range(rank - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    if k == 0:
        yield 0, math.prod(shape)
        return
    run = lengths[k - 1] * strides[k - 1]
    outer = [range(start[d], start[d] + lengths[d]) for d in range(k - 1)]
    import itertools

    for idx in itertools.product(*outer):
        base = sum(i * strides[d] for d, i in enumerate(idx)) + start[k - 1] * strides[k - 1]
        yield base, run


def read_box(reader: BundleReader, part: TensorEntry, start: tuple, lengths: tuple) -> tuple[np.ndarray, int]:
    """The box ``start``/``lengths`` of the stored piece ``part`` (a whole-tensor or slice entry of ``reader``),
    reading only its bytes; returns the array and the number of bytes read. A piece read whole is CRC-checked."""
    dtype = part.dtype
    if dtype.numpy is None or dtype.is_string:
        raise UnsupportedError(f"{reader.prefix}: tensor {part.name!r} of {dtype.name} cannot be read in pieces",
                               path=reader.prefix, key=part.name)
    np_dtype = np.dtype(dtype.numpy).newbyteorder(">" if reader.big_endian else "<")
    shape = part.shape
    if len(start) != len(shape) or any(s < 0 or n < 0 or s + n > d for s, n, d in zip(start, lengths, shape)):
        raise CorruptCheckpointError(f"{reader.prefix}: box {list(start)}+{list(lengths)} is outside tensor "
                                     f"{part.name!r} {list(shape)}", path=reader.prefix, key=part.name)
    out = np.empty(lengths, dtype=np_dtype)
    if out.size == 0:
        return out.astype(np_dtype.newbyteorder("=")), 0
    whole = tuple(start) == (0,) * len(shape) and tuple(lengths) == tuple(shape)
    _, file_size = reader._shard(part.shard, part.name)
    reader._check_bounds(part, file_size)
    fd = reader._fd(part.shard)
    if whole and fd is None:
        view = reader._payload(part)  # bounds- and CRC-checked
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(view, np.uint8)
        nbytes = part.size
    else:
        flat = out.reshape(-1).view(np.uint8)
        item = np_dtype.itemsize
        pos = 0
        nbytes = 0
        for elem, count in _runs(shape, start, lengths):
            n = count * item
            off = part.offset + elem * item
            if fd is None:
                buf, _ = reader._shard(part.shard, part.name)
                flat[pos:pos + n] = np.frombuffer(buf, np.uint8, n, off)
            else:
                got = _fs_pread_into(fd, flat[pos:pos + n], off)
                if got != n:
                    raise CorruptCheckpointError(f"{reader.prefix}: tensor {part.name!r} is truncated",
                                                 path=reader.prefix, key=part.name)
            pos += n
            nbytes += n
        if whole and reader.verify_checksums:
            reader._check_crc(part, crc32c(flat))
    return (out if np_dtype.isnative else out.astype(np_dtype.newbyteorder("="))), nbytes


def _fs_pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    total = 0
    mv = memoryview(buf)
    while total < len(mv):
        n = os.preadv(fd, [mv[total:]], offset + total)
        if n <= 0:
            break
        total += n
    return total


def __getattr__(name: str) -> Any:
    if name in ("BundleStorageWriter", "BundleStorageReader"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dcp_to_bundle(dcp_dir: str | os.PathLike, prefix: str | os.PathLike, *, allow_pickle: bool = False) -> str:
    """Convert a checkpoint written by DCP's ``FileSystemWriter`` into a ckpt bundle at ``prefix`` (one process).

    DCP's ``.metadata`` file is a pickle, so reading it can run code from the file: pass ``allow_pickle=True``
    only for checkpoints you trust. This is never part of ckpt's normal load path.
    """
    if not allow_pickle:
        raise UnsupportedError(f"{dcp_dir}: DCP's .metadata file is a pickle; reading it can run code from the file. "
                               "Pass allow_pickle=True (CLI: --allow-pickle) only for a checkpoint you trust",
                               path=dcp_dir)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(os.fspath(dcp_dir)),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    writer = _classes()["BundleStorageWriter"](prefix, overwrite=True)
    dcp.save(state, storage_writer=writer, no_dist=True)
    return writer.prefix


def bundle_to_dcp(prefix: str | os.PathLike, dcp_dir: str | os.PathLike) -> str:
    """Convert a ckpt/TensorFlow bundle into a DCP ``FileSystemWriter`` checkpoint directory (one process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    _load_state_dict(state, storage_reader=_classes()["BundleStorageReader"](prefix),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(os.fspath(dcp_dir)), no_dist=True)
    return os.fspath(dcp_dir)


# ======================================================================= ckpt.save / ckpt.restore with DTensors


def has_dtensor(state: Any) -> bool:
    """Whether ``state`` holds a torch ``DTensor`` (directly or as a module's parameter); False without torch."""
    import sys

    if "torch" not in sys.modules:
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed support
        return False
    import torch

    def walk(node: Any, depth: int) -> bool:
        if depth > 100:
            return False
        if isinstance(node, DTensor):
            return True
        if isinstance(node, torch.nn.Module):
            # Parameters first: FSDP2 / tensor parallelism turn them into DTensors (stops at the first one).
            return any(isinstance(p, DTensor) for p in node.parameters()) or \
                any(isinstance(b, DTensor) for b in node.buffers())
        if isinstance(node, dict):
            return any(walk(v, depth + 1) for v in node.values())
        if isinstance(node, (list, tuple)):
            return any(walk(v, depth + 1) for v in node)
        return False

    return walk(state, 0)


def _flat_state(state: Any) -> dict[str, Any]:
    """``state`` as DCP's flat state dict, named as ckpt names things (path joined with ``/``; a module's
    ``a.b`` parameter names become ``a/b``)."""
    import torch

    out: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, torch.nn.Module):
            for key, value in node.state_dict().items():
                out[f"{path}/{key.replace('.', '/')}" if path else key.replace(".", "/")] = value
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{key}" if path else str(key))
        elif isinstance(node, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in node):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}" if path else str(i))
        else:
            if not path:
                raise UnsupportedError("a distributed state must be a dict, list or module")
            out[path] = node

    walk(state, "")
    return out


def save_collective(state: Any, prefix: str, *, sync: bool = True) -> str:
    """``ckpt.save`` of a state holding DTensors: called on every rank; each writes its shards, rank 0 commits
    (through :class:`BundleStorageWriter` and DCP's default planner, which writes replicated tensors once)."""
    import torch.distributed.checkpoint as dcp

    writer = _classes()["BundleStorageWriter"](prefix, sync=sync, overwrite=True)
    dcp.save(_flat_state(state), storage_writer=writer)
    return writer.prefix


def restore_collective(prefix: str, into: Any) -> dict[str, Any]:
    """``ckpt.restore`` into a state holding DTensors: called on every rank; each reads the parts of the stored
    tensors that overlap its shards, whatever the sharding at save time. Tensors are filled in place; returns
    the flat state dict (non-tensor values restored there)."""
    import torch.distributed.checkpoint as dcp

    flat = _flat_state(into)
    dcp.load(flat, storage_reader=_classes()["BundleStorageReader"](prefix))
    return flat
