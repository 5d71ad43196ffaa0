"""TensorFlow's checkpoint V2 "tensor bundle": ``PREFIX.index`` + ``PREFIX.data-SSSSS-of-NNNNN``
(docs/format.md sections 1.4 to 2.6).

The public face of the bundle codec: reading is in :mod:`ckpt.tf.bundle_reader`, writing in
:mod:`ckpt.tf.bundle_writer` (its threads and per-file buffers in ``ckpt.tf._write_workers``).
"""

from __future__ import annotations

from .._fs import TMP_MARKER, fsync_dir
from .bundle_reader import (BUNDLE_VERSION, HEADER_KEY, MAX_RANK, BundleCheck, BundleReader, TensorEntry, check_bundle,
                            data_filename, index_filename)
from .bundle_writer import BundleWriter, encode_strings

__all__ = ["TensorEntry", "BundleReader", "BundleWriter", "BundleCheck", "check_bundle", "data_filename",
           "index_filename", "encode_strings", "HEADER_KEY", "BUNDLE_VERSION", "MAX_RANK", "TMP_MARKER", "fsync_dir"]
