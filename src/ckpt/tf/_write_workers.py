"""The write workers of :class:`ckpt.tf.bundle_writer.BundleWriter`: one ``_Shard`` per data file (its write
buffer and file descriptor) and the ``_WriteWorker`` threads that write several shards in parallel.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _fs, _seam

#: Payloads smaller than this are copied into a shard's write buffer, flushed in writes of at least
#: ``_WRITE_BUFFER`` bytes, so that thousands of small tensors cost a few large writes instead of one each.
_SMALL_PAYLOAD = 1 << 20
#: Durable saves write large payloads in pieces this large, asking the kernel to start writing each to disk at once
#: (``_fs.start_writeback``) while the next is copied: the final fsync then has little left to wait for.
_WRITEBACK_CHUNK = 8 << 20
_WRITE_BUFFER = 8 << 20
_ZEROS = bytes(4096)


class _WriteWorker:
    """A thread writing the payloads of some shards, in the order they were handed to it.

    Ownership: a shard belongs to exactly one worker, so its bytes reach its file in order. ``submit`` hands the
    worker a payload: a flushed write buffer (never touched again by the saving thread) or a view of a caller's
    array (which must not change until ``BundleWriter.finish`` returns). The worker alone writes the shard's
    descriptor until ``stop`` has joined it; only then does the saving thread fsync and close it. The queue holds at
    most 4 payloads, bounding the memory waiting to be written.

    The first error stops it: later payloads are dropped and the error is raised in the writing thread by the next
    ``submit`` or after ``stop`` (a checkpoint with a failed write is aborted as a whole)."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue = queue.Queue(maxsize=4)  # bounds the write buffers waiting in memory
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ckpt-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            shard, data = item
            if self.error is None:
                try:
                    shard._write_out(data)
                except BaseException as exc:  # raised by the writer's thread at its next call
                    self.error = exc

    def submit(self, shard: _Shard, data) -> None:
        self.raise_error()
        self._queue.put((shard, data))

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Finish the queued writes and end the thread (errors stay in ``error``)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Shard:
    """One data file being written.

    Ownership: ``_buf`` (the small-payload write buffer) and ``size`` belong to the saving thread. ``flush`` hands
    the filled buffer to the writer and starts a new one, so a buffer being written is never appended to or reused.
    ``_write_out`` and ``_written`` belong to the writer: the worker thread when ``worker`` is set, else the saving
    thread.
    """

    __slots__ = ("tmp", "final", "fd", "size", "_buf", "_sync", "_written", "worker")

    def __init__(self, tmp: str, final: str, sync: bool = False) -> None:
        self.tmp = tmp
        self.final = final
        self.fd = _fs.create(tmp)
        self.size = 0  # bytes of the data file, buffered ones included
        self._buf = bytearray()
        self._sync = sync  # the file will be fsync'd: start writing back each large write at once
        self._written = 0  # bytes handed to write(2)
        self.worker: _WriteWorker | None = None  # writes this shard's bytes in another thread when set

    def _submit(self, data) -> None:
        if self.worker is None:
            self._write_out(data)
        else:
            self.worker.submit(self, data)

    def _write_out(self, data) -> None:
        _seam.point("write.out")
        if not self._sync:
            self._written += _fs.write_all(self.fd, data)
            return
        view = memoryview(data).cast("B")
        for start in range(0, max(len(view), 1), _WRITEBACK_CHUNK):  # the disk starts on each piece at once
            n = _fs.write_all(self.fd, view[start:start + _WRITEBACK_CHUNK])
            _fs.start_writeback(self.fd, self._written, n)
            self._written += n

    def append_small(self, data, n: int) -> None:
        """Append ``n`` bytes (fewer than ``_SMALL_PAYLOAD``) to the write buffer."""
        self._buf += data
        self.size += n
        if len(self._buf) >= _WRITE_BUFFER:
            self.flush()

    def write(self, data) -> None:
        n = data.nbytes if isinstance(data, (np.ndarray, memoryview)) else len(data)
        if n < _SMALL_PAYLOAD:
            self.append_small(data if isinstance(data, (bytes, bytearray)) else memoryview(data), n)
        else:
            self.flush()
            self._submit(data)
            self.size += n

    def pad(self, alignment: int) -> None:
        """Append zeros up to the next multiple of ``alignment`` (TensorFlow's ``PadAlignment``)."""
        n = -self.size % alignment
        while n:
            chunk = min(n, len(_ZEROS))
            self.write(_ZEROS[:chunk])
            n -= chunk

    def flush(self) -> None:
        if self._buf:
            buf, self._buf = self._buf, bytearray()  # the hand-off: ``buf`` is the writer's from here on
            self._submit(buf)
