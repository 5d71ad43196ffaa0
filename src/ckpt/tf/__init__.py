"""TensorFlow's on-disk formats: bytes <-> NumPy arrays and plain dataclasses. No framework imports here.

Modules: ``table`` (the .index sorted table), ``bundle`` (.index + .data-* files), ``state_file`` (the
``checkpoint`` file), ``dtypes``, ``slices`` (partitioned-variable keys), ``protos`` (ckpt's own copies of
TensorFlow's schemas, in package ``ckpt.tf``).
"""
