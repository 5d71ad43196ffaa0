"""Generated protobuf modules (``make protos``); the ``.proto`` sources sit beside them. Package ``ckpt.tf``."""
