"""A graph as one self-contained, offline HTML page (``ckpt graph --html``), and its notebook display.

The page embeds the graph as JSON (names, types, inputs as indices, attribute summaries, output dtypes and shapes,
roles) plus the viewer's CSS and JavaScript (:mod:`ckpt.graph._viewer`). Large constants are summarised, never
embedded, so the page stays small for frozen models. Graph text is escaped for the ``<script>`` element it sits in
and rendered by the viewer with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from ._attrs import _shape_text
from ._viewer import CSS, JS

__all__ = ["render_html", "graph_data", "iframe_html", "write_html", "GraphView", "show"]


def graph_data(graph, *, title: str | None = None) -> dict:
    """The JSON document the viewer draws (see :mod:`ckpt.graph._viewer`)."""
    ops = graph.operations
    index = {op.name: i for i, op in enumerate(ops)}
    outputs = {op.name for op in graph.outputs}
    roles = graph._roles
    nodes = []
    for op in ops:
        inputs = []
        for i in op.inputs:
            src = index.get(i.op, -1)
            entry = [src, i.index, 1 if i.control else 0]
            if src < 0:
                entry.append(str(i))
            inputs.append(entry)
        try:
            tensors = op.outputs
        except Exception:  # display is best effort on damaged graphs
            tensors = []
        attrs = [[k, v] for k, v in op.attr_summaries().items() if k != "_output_shapes"]
        nodes.append({"n": op.name, "t": op.type, "d": op.device, "in": inputs, "a": attrs,
                      "dt": [t.dtype or "" for t in tensors], "s": [_shape_text(t.shape, unknown="") for t in tensors],
                      "role": roles.get(op.name, "model"), "out": op.name in outputs})
    name = title or (os.path.basename(graph.path) if graph.path else "graph")
    kind = "MetaGraphDef" if graph.meta_graph_def is not None else "GraphDef"
    subtitle = f"{kind} · {len(ops)} operations"
    if graph.producer:
        subtitle += f" · producer {graph.producer}"
    try:
        variables = [index[v.name] for v in graph.variables if v.name in index]
    except Exception:
        variables = []
    return {"title": name, "subtitle": subtitle, "nodes": nodes,
            "inputs": [index[op.name] for op in graph.inputs], "outputs": [index[n] for n in outputs if n in index],
            "variables": variables}


def _script_json(data: dict) -> str:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    # Inside <script>, "</script>" or "<!--" in a node name would end or confuse the element.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="ckpt graph">
<title>{title}</title>
<style>{css}</style>
</head>
<body data-render="pending">
<div id="bar">
  <span class="title">{title}</span><span class="stats" id="stats"></span><span class="spacer"></span>
  <input id="search" type="search" placeholder="find op (press /)" aria-label="find operation">
  <button id="fit" title="fit to window (f)">Fit</button>
  <button id="expand" title="expand scopes">Expand</button>
  <button id="collapse" title="collapse all scopes">Collapse</button>
</div>
<svg id="canvas" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="side"></div>
<script type="application/json" id="ckpt-graph-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def render_html(graph, *, title: str | None = None) -> str:
    """The interactive page for ``graph`` as a string (no external resources)."""
    data = graph_data(graph, title=title)
    return _PAGE.format(title=html.escape(data["title"]), css=CSS, data=_script_json(data), js=JS)


def write_html(graph, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the page to ``path`` (atomically) and return the path."""
    from ._files import write_bytes

    return write_bytes(render_html(graph, title=title).encode("utf-8"), path)


def iframe_html(page: str, *, height: int = 640) -> str:
    """The page inside an ``<iframe srcdoc>``: notebooks show it isolated, with its scripts running."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;border:1px solid '
            f'#d0d7de;border-radius:6px" sandbox="allow-scripts"></iframe>')


class GraphView:
    """A displayable graph: Jupyter renders it through ``_repr_html_``; ``save`` writes the page to a file."""

    def __init__(self, graph, *, title: str | None = None, height: int = 640) -> None:
        self.html = render_html(graph, title=title)
        self.height = height

    def _repr_html_(self) -> str:
        return iframe_html(self.html, height=self.height)

    def save(self, path: str | os.PathLike) -> Path:
        from ._files import write_bytes

        return write_bytes(self.html.encode("utf-8"), path)


def show(graph, *, title: str | None = None, height: int = 640):
    """Display a graph in a notebook.

    Args:
        graph: A :class:`~ckpt.graph.Graph` or anything :func:`ckpt.graph.load` accepts.
        title: Page title (default: the file name).
        height: Height of the frame in pixels.

    Returns:
        An ``IPython.display.HTML`` object when IPython is installed (the notebook shows it), otherwise a
        :class:`GraphView`, which notebooks display as well and which can ``save(path)`` the page.
    """
    from ._model import Graph

    if not isinstance(graph, Graph):
        from . import load

        graph = load(graph)
    view = GraphView(graph, title=title, height=height)
    try:
        from IPython.display import HTML
    except ImportError:
        return view
    return HTML(view._repr_html_())
