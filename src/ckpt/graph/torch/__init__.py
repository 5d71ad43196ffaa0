"""TensorFlow graphs <-> PyTorch: the interpreter that runs a graph as a ``torch.nn.Module`` (``interpreter``,
its kernels in ``ops``) and the tracer that draws a PyTorch module as a GraphDef (``from_torch``).

Every module here imports torch; the public entry points are :func:`ckpt.graph.to_torch` and
:func:`ckpt.graph.from_torch`, which import them lazily.
"""
