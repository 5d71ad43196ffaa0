"""The test seam of ckpt's helper threads: every concurrent step calls :func:`point` with its name.

``hook`` is None in production, so a point costs one call and one global lookup (points sit at per-piece or
per-tensor steps of at least 1 MiB, never in per-small-tensor loops). Tests set ``hook`` to a callable taking the
point's name, to inject delays or yields there and so force the interleavings a loaded machine produces by chance
(``tests/test_threading.py``). The points, and the thread that reaches each:

``read.piece``
    the thread calling ``BundleReader.read_many_into``, after each ``preadv`` call, before that piece's checksum is
    computed or handed to the CRC thread;
``read.check``
    whichever thread computes the checksums of one read piece (the CRC thread, or the caller for small pieces);
``write.crc``
    the CRC thread of a save, before it checksums a large payload while the payload is being written;
``write.out``
    whichever thread hands a shard's bytes to ``write(2)`` (a shard's writer thread when shards are written in
    parallel, else the saving thread);
``snapshot.copy``
    each thread copying large tensors into an asynchronous save's snapshot, before each copy;
``async.job``
    the background thread of an asynchronous save, before it writes and commits.
"""

from __future__ import annotations

from collections.abc import Callable

#: Called with the name of each point reached; None (no-op) outside tests.
hook: Callable[[str], None] | None = None


def point(name: str) -> None:
    """Reached step ``name`` (see the module docstring); calls :data:`hook` if a test set one."""
    if hook is not None:
        hook(name)
