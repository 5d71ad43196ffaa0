"""TensorBoard summaries without TensorFlow: :class:`SummaryWriter` writes events files, :func:`read` reads them.

The writer produces what ``tf.compat.v1.summary.FileWriter`` produces (TensorBoard, ``EventAccumulator`` and
``tf.compat.v1.train.summary_iterator`` read it): scalars as ``simple_value``, histograms with TensorFlow's bucket
layout, images as PNG, audio as WAV, text and hyperparameters through their TensorBoard plugins, and graphs.
The reader takes what ckpt, TensorFlow 1 and 2, ``torch.utils.tensorboard`` and tensorboardX write.

Example:
    >>> from ckpt.summary import SummaryWriter, read                      # doctest: +SKIP
    >>> with SummaryWriter("runs/exp1") as w:
    ...     for step in range(100):
    ...         w.scalar("loss", 1.0 / (step + 1), step)
    >>> [r.value for r in read("runs/exp1") if r.tag == "loss"][-1]
    0.01
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _fs
from ..errors import CheckpointError, CorruptCheckpointError
from ..tf import events as _events
from ..tf.protos import event_pb2, summary_pb2
from ..tf.tensor_proto import make_ndarray, make_tensor_proto
from . import _encode

__all__ = ["SummaryWriter", "read", "Row", "Histogram", "Image", "Audio", "latest_scalars"]

_FILE_COUNTER = itertools.count()  # per process: two writers in one second get different file names


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str):
        raise TypeError(f"summary tag must be a str, not {type(tag).__name__}")
    return tag  # recorded exactly as given (TensorBoard displays any string)


def _as_float(tag: str, value: Any) -> float:
    try:
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().item()
        elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a TF/JAX scalar
            value = np.asarray(value)
        return float(np.asarray(value).item()) if isinstance(value, np.ndarray) else float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"summary scalar {tag!r}: {value!r} is not a number ({exc})") from None


class SummaryWriter:
    """Write TensorBoard events files into ``logdir``.

    Files are named as TensorFlow names them, ``events.out.tfevents.<seconds>.<host>.<pid>.<n><suffix>``, and start
    with the ``brain.Event:2`` version record. Events are buffered and appended to the file on :meth:`flush`
    (also every ``max_queue`` events or ``flush_secs`` seconds, and on :meth:`close`); a reader sees whole records
    only, except possibly a last one still being written, which :func:`read` skips. With ``max_file_bytes`` the
    writer starts a new file once the current one reaches that size (TensorBoard reads all of them as one run).

    Every method takes ``step`` (default: the ``global_step`` attribute) and ``wall_time`` (default: now).
    Safe to call from several threads.

    Args:
        logdir: The run's directory (created if needed).
        max_queue: Events buffered before an automatic flush.
        flush_secs: Seconds after which the next event triggers a flush.
        filename_suffix: Appended to the file name (TensorFlow 2 uses ``.v2``).
        max_file_bytes: Rotate to a new file beyond this size; None: one file per writer.
        clock: Seconds since the epoch (tests pass a fake clock).
    """

    def __init__(self, logdir: str | os.PathLike, *, max_queue: int = 10, flush_secs: float = 120.0,
                 filename_suffix: str = "", max_file_bytes: int | None = None,
                 clock: Any = time.time) -> None:
        if max_file_bytes is not None and (not isinstance(max_file_bytes, int) or max_file_bytes < 1):
            raise ValueError(f"`max_file_bytes` must be a positive int or None, not {max_file_bytes!r}")
        if "/" in filename_suffix or os.sep in filename_suffix:
            raise ValueError(f"`filename_suffix` must not contain path separators: {filename_suffix!r}")
        self.logdir = os.fspath(logdir)
        self.max_queue = max(int(max_queue), 1)
        self.flush_secs = float(flush_secs)
        self.filename_suffix = filename_suffix
        self.max_file_bytes = max_file_bytes
        self.clock = clock
        #: The step used when a method is called without one.
        self.global_step = 0
        self._lock = threading.Lock()
        self._queue: list[bytes] = []
        self._file = None
        self._path: Path | None = None
        self._size = 0
        self._last_flush = float(clock())
        self._closed = False
        self.files: list[Path] = []
        os.makedirs(self.logdir, exist_ok=True)
        self._open_file()

    # -- files ---------------------------------------------------------------------------------------------------

    def _open_file(self) -> None:
        now = float(self.clock())
        host = socket.gethostname()
        while True:
            name = (f"events.out.tfevents.{int(now):010d}.{host}.{os.getpid()}.{next(_FILE_COUNTER)}"
                    f"{self.filename_suffix}")
            path = Path(self.logdir) / name
            try:
                # never append to or replace another writer's file, never write through a link
                self._file = os.fdopen(_fs.create(os.fspath(path)), "wb")
                break
            except FileExistsError:
                continue
        self._path = path
        self.files.append(path)
        first = event_pb2.Event(wall_time=now, file_version=_events.FILE_VERSION)
        first.source_metadata.writer = "ckpt"
        record = _events.frame_record(first.SerializeToString())
        self._file.write(record)
        self._file.flush()
        self._size = len(record)

    @property
    def path(self) -> Path | None:
        """The events file being written."""
        return self._path

    def flush(self) -> None:
        """Append the buffered events to the file and hand them to the operating system."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._file is None:
            return
        for record in self._queue:
            if self.max_file_bytes is not None and self._size >= self.max_file_bytes:
                self._file.close()
                self._open_file()
            self._file.write(record)
            self._size += len(record)
        self._queue.clear()
        self._file.flush()
        self._last_flush = float(self.clock())

    def close(self) -> None:
        """Flush, sync and close the file. Further writes raise; closing again does nothing."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
                if self._file is not None:
                    os.fsync(self._file.fileno())
            finally:
                if self._file is not None:
                    self._file.close()
                self._file = None
                self._closed = True

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SummaryWriter({self.logdir!r}{', closed' if self._closed else ''})"

    # -- events --------------------------------------------------------------------------------------------------

    def add_event(self, event: event_pb2.Event) -> None:
        """Queue a ready-made ``Event`` (its ``wall_time`` and ``step`` as given)."""
        data = _events.frame_record(event.SerializeToString())
        with self._lock:
            if self._closed:
                raise CheckpointError(f"summary writer for {self.logdir} is closed", path=self.logdir)
            self._queue.append(data)
            if len(self._queue) >= self.max_queue or float(self.clock()) - self._last_flush >= self.flush_secs:
                self._flush_locked()

    def _add(self, values: list[summary_pb2.Summary.Value], step: int | None, wall_time: float | None) -> None:
        step = self.global_step if step is None else step
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"summary step must be an int, not {step!r}")
        event = event_pb2.Event(wall_time=float(self.clock()) if wall_time is None else float(wall_time),
                                step=int(step))
        event.summary.value.extend(values)
        self.add_event(event)

    def scalar(self, tag: str, value: Any, step: int | None = None, *, wall_time: float | None = None) -> None:
        """A scalar (any number, NumPy/torch/TF scalar). NaN and infinities are recorded as they are."""
        tag = _check_tag(tag)
        self._add([summary_pb2.Summary.Value(tag=tag, simple_value=_as_float(tag, value))], step, wall_time)

    def scalars(self, values: Mapping[str, Any], step: int | None = None, *,
                wall_time: float | None = None) -> None:
        """Several scalars in one event: ``{tag: value}``."""
        checked = [summary_pb2.Summary.Value(tag=_check_tag(t), simple_value=_as_float(t, v))
                   for t, v in values.items()]
        self._add(checked, step, wall_time)

    def histogram(self, tag: str, values: Any, step: int | None = None, *, wall_time: float | None = None) -> None:
        """A histogram of ``values`` (any array), with ``tf.compat.v1.summary.histogram``'s buckets."""
        tag = _check_tag(tag)
        arr = values.detach().cpu().numpy() if hasattr(values, "detach") else values
        try:
            arr = np.asarray(arr, np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"summary histogram {tag!r}: values are not numbers ({exc})") from None
        value = summary_pb2.Summary.Value(tag=tag)
        fields = _encode.histogram_fields(arr)
        h = value.histo
        h.min, h.max, h.num, h.sum, h.sum_squares = (fields[k] for k in ("min", "max", "num", "sum", "sum_squares"))
        h.bucket_limit.extend(fields["bucket_limit"])
        h.bucket.extend(fields["bucket"])
        self._add([value], step, wall_time)

    def image(self, tag: str, image: Any, step: int | None = None, *, dataformats: str = "HWC",
              wall_time: float | None = None) -> None:
        """One image: ``uint8`` or floats in [0, 1], shape HxW, HxWx1 (grey), HxWx3 (RGB) or HxWx4 (RGBA) in
        the ``dataformats`` layout (``"CHW"`` for torch tensors). Stored as PNG.

        Raises:
            ValueError, TypeError: a shape or dtype that is not an image; nothing is written.
        """
        tag = _check_tag(tag)
        arr = _encode.image_array(tag, image, dataformats)
        value = summary_pb2.Summary.Value(tag=tag)
        value.image.height, value.image.width, value.image.colorspace = arr.shape
        value.image.encoded_image_string = _encode.encode_png(arr)
        self._add([value], step, wall_time)

    def audio(self, tag: str, samples: Any, step: int | None = None, *, sample_rate: int,
              wall_time: float | None = None) -> None:
        """A clip of floats in [-1, 1], shape [frames] or [frames, channels], stored as 16-bit WAV."""
        tag = _check_tag(tag)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
            raise ValueError(f"summary audio {tag!r}: sample_rate must be a positive int, not {sample_rate!r}")
        arr = _encode.audio_array(tag, samples)
        value = summary_pb2.Summary.Value(tag=tag)
        a = value.audio
        a.sample_rate, a.num_channels, a.length_frames = float(sample_rate), arr.shape[1], arr.shape[0]
        a.encoded_audio_string = _encode.encode_wav(arr, int(sample_rate))
        a.content_type = "audio/wav"
        self._add([value], step, wall_time)

    def text(self, tag: str, text: str, step: int | None = None, *, wall_time: float | None = None) -> None:
        """Text (Markdown in TensorBoard's Text tab), through the ``text`` plugin as TensorFlow writes it."""
        tag = _check_tag(tag)
        if not isinstance(text, str):
            raise TypeError(f"summary text {tag!r}: expected a str, not {type(text).__name__}")
        value = summary_pb2.Summary.Value(tag=tag)
        value.metadata.plugin_data.plugin_name = "text"
        value.tensor.CopyFrom(make_tensor_proto(np.array([text.encode("utf-8")], object), shape=[]))
        self._add([value], step, wall_time)

    def graph(self, graph: Any) -> None:
        """A graph for TensorBoard's Graphs tab: a :class:`ckpt.graph.Graph`, GraphDef, MetaGraphDef, path or
        anything ``ckpt.graph.load`` takes (what ``ckpt graph --logdir`` writes)."""
        from ..graph import _as_graph

        g = _as_graph(graph)
        now = float(self.clock())
        self.add_event(event_pb2.Event(wall_time=now, graph_def=g.graph_def.SerializeToString(deterministic=True)))
        if g.meta_graph_def is not None:
            self.add_event(event_pb2.Event(
                wall_time=now, meta_graph_def=g.meta_graph_def.SerializeToString(deterministic=True)))

    def hparams(self, hparams: Mapping[str, Any], *, group_name: str = "", wall_time: float | None = None) -> None:
        """This run's hyperparameters (``{name: bool | number | str}``) for TensorBoard's HParams tab, as the
        hparams plugin's ``session_start_info``; :meth:`close` does not end the session, :meth:`hparams_end` does.
        """
        for k, v in hparams.items():
            if not isinstance(k, str):
                raise TypeError(f"hparams names must be str, not {k!r}")
            if not isinstance(v, (bool, int, float, str, np.bool_, np.integer, np.floating)):
                raise TypeError(f"hparam {k!r}: {type(v).__name__} is not a bool, number or str")
        now = float(self.clock()) if wall_time is None else float(wall_time)
        self._hparams_value("_hparams_/session_start_info",
                            _encode.encode_session_start(dict(hparams), start_time=now, group_name=group_name), now)

    def hparams_end(self, *, wall_time: float | None = None) -> None:
        """Mark the hparams session finished (``session_end_info`` with ``STATUS_SUCCESS``)."""
        now = float(self.clock()) if wall_time is None else float(wall_time)
        self._hparams_value("_hparams_/session_end_info", _encode.encode_session_end(end_time=now), now)

    def _hparams_value(self, tag: str, content: bytes, now: float) -> None:
        value = summary_pb2.Summary.Value(tag=tag)
        value.metadata.plugin_data.plugin_name = "hparams"
        value.metadata.plugin_data.content = content
        value.tensor.CopyFrom(make_tensor_proto(np.float32(0.0)))  # the plugin reads the metadata only
        self._add([value], 0, now)


# --- reading --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Histogram:
    """A histogram: bucket ``i`` counts ``counts[i]`` values in ``[limits[i-1], limits[i])`` (right edges, as
    ``HistogramProto.bucket_limit``); ``lefts`` are the left edges when the writer stored them (TensorFlow 2)."""

    limits: tuple[float, ...]
    counts: tuple[float, ...]
    min: float
    max: float
    num: float
    sum: float | None = None
    sum_squares: float | None = None
    lefts: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Image:
    """An encoded image (PNG, or JPEG/GIF from other writers); ``.array()`` decodes it (needs Pillow)."""

    height: int
    width: int
    colorspace: int
    encoded: bytes

    def array(self) -> np.ndarray:
        return _encode.decode_png(self.encoded)


@dataclass(frozen=True)
class Audio:
    """An encoded audio clip (usually WAV)."""

    sample_rate: float
    num_channels: int
    length_frames: int
    encoded: bytes
    content_type: str = "audio/wav"


@dataclass(frozen=True)
class Row:
    """One summary value.

    Attributes:
        run: The events file's directory relative to the logdir (``"."`` for the logdir itself).
        tag: The tag as written.
        step: The event's step.
        wall_time: Seconds since the epoch.
        kind: ``scalar`` (float), ``histogram`` (:class:`Histogram`), ``image`` (:class:`Image`), ``audio``
            (:class:`Audio`), ``text`` (str, or a list of str for a text tensor of several), ``hparams`` (dict: the
            session's hyperparameters, or its end), ``graph`` / ``meta_graph`` (serialized bytes), ``tensor`` (a
            NumPy array under another plugin; ``plugin`` names it).
        value: See ``kind``.
        plugin: The TensorBoard plugin the value belongs to, when recorded.
    """

    run: str
    tag: str
    step: int
    wall_time: float
    kind: str
    value: Any
    plugin: str = ""


def _event_files(logdir: str) -> list[Path]:
    if os.path.isfile(logdir):
        return [Path(logdir)]
    if not os.path.isdir(logdir):
        raise CheckpointError(f"{logdir}: no such directory", path=logdir)
    found = []
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        found.extend(Path(root) / f for f in sorted(files) if "tfevents" in f and not f.startswith("."))
    return found


def _text(arr: np.ndarray) -> Any:
    items = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.ravel()]
    return items[0] if arr.size == 1 else items  # TensorBoard shows a one-element vector as plain text


def _rows_of_value(value, plugin: str, where: str) -> Iterator[tuple[str, Any]]:
    which = value.WhichOneof("value")
    if which == "simple_value":
        yield "scalar", float(value.simple_value)
    elif which == "histo":
        h = value.histo
        yield "histogram", Histogram(tuple(h.bucket_limit), tuple(h.bucket), h.min, h.max, h.num, h.sum,
                                     h.sum_squares)
    elif which == "image":
        im = value.image
        yield "image", Image(im.height, im.width, im.colorspace, bytes(im.encoded_image_string))
    elif which == "audio":
        a = value.audio
        yield "audio", Audio(a.sample_rate, a.num_channels, a.length_frames, bytes(a.encoded_audio_string),
                             a.content_type)
    elif plugin == "hparams":
        try:
            kind, info = _encode.decode_hparams(bytes(value.metadata.plugin_data.content))
        except ValueError as exc:
            raise CorruptCheckpointError(f"{where}: malformed hparams data ({exc})", path=where) from None
        yield "hparams", {"type": kind, **info}
    elif which == "tensor":
        arr = make_ndarray(value.tensor, where=f"{where}: tag {value.tag!r}")
        if plugin == "scalars" or (plugin == "" and arr.ndim == 0 and arr.dtype.kind in "fiu"):
            yield "scalar", float(arr.reshape(()))
        elif plugin == "text":
            yield "text", _text(arr)
        elif plugin == "histograms" and arr.ndim == 2 and arr.shape[1] == 3:
            counts = arr[:, 2].astype(np.float64)
            yield "histogram", Histogram(tuple(arr[:, 1].tolist()), tuple(counts.tolist()),
                                         float(arr[0, 0]) if len(arr) else 0.0,
                                         float(arr[-1, 1]) if len(arr) else 0.0, float(counts.sum()),
                                         lefts=tuple(arr[:, 0].tolist()))
        elif plugin == "images" and arr.dtype == object and arr.ndim == 1 and len(arr) >= 2:
            w, h = int(arr[0]), int(arr[1])
            for png in arr[2:]:
                yield "image", Image(h, w, 0, bytes(png))
        elif plugin == "audio" and arr.dtype == object and arr.ndim == 2:
            for clip in arr[:, 0]:
                rate, channels, frames = _encode.wav_info(bytes(clip)) or (0, 0, 0)
                yield "audio", Audio(float(rate), channels, frames, bytes(clip))
        else:
            yield "tensor", arr


def read(logdir: str | os.PathLike) -> Iterator[Row]:
    """Yield a :class:`Row` for every summary value in the events files under ``logdir`` (or one events file).

    Files are read in directory and name order, events in file order. A last record cut short (a file still being
    written) ends that file quietly. Runs are the sub-directories holding events files.

    Raises:
        CheckpointError: ``logdir`` does not exist.
        ChecksumMismatchError / CorruptCheckpointError: a bad checksum or a malformed record, naming the file
            and byte offset.
    """
    logdir = os.fspath(logdir)
    base = logdir if os.path.isdir(logdir) else os.path.dirname(logdir) or "."
    plugins: dict[tuple[str, str], str] = {}  # TensorFlow 2 writes a tag's metadata with its first value only
    for path in _event_files(logdir):
        run = os.path.relpath(path.parent, base)
        where = str(path)
        with open(path, "rb") as f:
            buf = f.read()
        for i, data in enumerate(_events.read_records(buf, path=where, truncated_ok=True)):
            event = event_pb2.Event()
            try:
                event.ParseFromString(data)
            except Exception as exc:  # protobuf's DecodeError
                raise CorruptCheckpointError(f"{where}: record {i} is not an Event ({exc})", path=where) from None
            which = event.WhichOneof("what")
            if which == "graph_def":
                yield Row(run, "", event.step, event.wall_time, "graph", bytes(event.graph_def))
            elif which == "meta_graph_def":
                yield Row(run, "", event.step, event.wall_time, "meta_graph", bytes(event.meta_graph_def))
            elif which == "summary":
                for value in event.summary.value:
                    key = (run, value.tag)
                    if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                        plugins[key] = value.metadata.plugin_data.plugin_name
                    plugin = plugins.get(key, "")
                    for kind, v in _rows_of_value(value, plugin, where):
                        yield Row(run, value.tag, event.step, event.wall_time, kind, v, plugin)


def latest_scalars(logdir: str | os.PathLike) -> list[Row]:
    """The last scalar of each (run, tag) under ``logdir`` (highest step; the later one on a tie), sorted."""
    last: dict[tuple[str, str], Row] = {}
    for row in read(logdir):
        if row.kind == "scalar":
            key = (row.run, row.tag)
            if key not in last or row.step >= last[key].step:
                last[key] = row
    return [last[k] for k in sorted(last)]

