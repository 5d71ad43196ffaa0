"""The graph page in a real browser: headless Chromium opens it offline, runs the viewer without errors, and the
screenshot shows the graph.

The page reports its state in ``<body data-render=...>`` (``ok``, or ``error: <message>`` from ``window.onerror``),
which ``chromium --dump-dom`` prints after the scripts ran. Screenshots are kept under the test's ``tmp_path`` and
copied to ``$CKPT_ARTIFACTS`` when that is set.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install chromium``); skipped without it.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

import ckpt.graph as G

DATA = pathlib.Path(__file__).parent / "data"
META = DATA / "tf1_saver" / "model.ckpt-30.meta"
CHROMIUM = os.environ.get("CKPT_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"headless browser test needs Chromium at {CHROMIUM} "
                                       "(apt-get install chromium, or set CKPT_CHROMIUM)")

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
          "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def _chromium(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def _render(tmp_path: pathlib.Path, page: pathlib.Path, fragment: str = "") -> tuple[str, str]:
    run = _chromium(tmp_path, "--dump-dom", page.as_uri() + fragment)
    body = re.search(r"<body[^>]*>", run.stdout)
    assert body, run.stderr[-2000:]
    console_errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line and
                      ("Uncaught" in line or "Error" in line)]
    assert not console_errors, console_errors
    return body.group(0), run.stdout


def _screenshot(tmp_path: pathlib.Path, page: pathlib.Path, name: str, fragment: str = "") -> pathlib.Path:
    shot = tmp_path / name
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,800", page.as_uri() + fragment)
    assert shot.exists() and shot.stat().st_size > 5000, run.stderr[-2000:]
    if os.environ.get("CKPT_ARTIFACTS"):
        target = pathlib.Path(os.environ["CKPT_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / name)
    return shot


def _drawn_fraction(shot: pathlib.Path) -> float:
    """Share of pixels in the drawing area (left of the side panel, below the bar) that are not background."""
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(shot) as img:
        img = img.convert("RGB")
        width, height = img.size
        area = img.crop((0, 50, width - 345, height))
        pixels = list(getattr(area, "get_flattened_data", area.getdata)())
    background = max(set(pixels[:: max(1, len(pixels) // 2000)]), key=pixels[:: max(1, len(pixels) // 2000)].count)
    return sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, background)) > 30) / len(pixels)


def test_page_renders_in_chromium_and_shows_the_graph(tmp_path):
    page = G.write_html(G.load(META), tmp_path / "regression.html")
    body, dom = _render(tmp_path, page)
    assert 'data-render="ok"' in body, body
    assert "<title>model.ckpt-30.meta" in dom
    assert 'class="op' in dom and 'class="grp collapsed' in dom and 'class="edge' in dom
    shot = _screenshot(tmp_path, page, "graph-regression.png")
    assert _drawn_fraction(shot) > 0.01


def test_selecting_and_expanding_work(tmp_path):
    page = G.write_html(G.load(META), tmp_path / "regression.html")
    body, dom = _render(tmp_path, page, "#expand=all&select=alpha/read")
    assert 'data-render="ok"' in body, body
    # The side panel shows the selected op: type, attributes, shapes and inputs.
    panel = dom.split('id="side"', 1)[1]
    assert "<h2>alpha/read</h2>" in panel and "Identity" in panel and "loc:@alpha" in panel
    assert "Inputs (1)" in panel and "float32 []" in panel
    assert 'class="op sel"' in dom or 'class="op output sel"' in dom
    _screenshot(tmp_path, page, "graph-regression-expanded.png", "#expand=all&select=alpha/read")


def test_a_torch_model_page_renders(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 26 * 26, 10))
    page = G.write_html(G.from_torch(net, torch.zeros(1, 1, 28, 28)), tmp_path / "torch.html", title="torch CNN")
    body, dom = _render(tmp_path, page, "#select=_3")
    assert 'data-render="ok"' in body, body
    assert "Linear" in dom
    _screenshot(tmp_path, page, "graph-torch.png")


_PROTO_NAMES = ["constructor", "valueOf", "__proto__", "hasOwnProperty", "toString"]


def _prototype_named_graph():
    """Nodes and scopes named like Object.prototype members: ``constructor``, ``__proto__/valueOf``, ..."""
    from ckpt.tf.protos import graph_pb2

    gd = graph_pb2.GraphDef()
    x = gd.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = 1
    previous = "x"
    for i, name in enumerate(_PROTO_NAMES):
        for node_name in (name, f"{name}/{_PROTO_NAMES[(i + 1) % len(_PROTO_NAMES)]}"):
            node = gd.node.add(name=node_name, op="Identity", input=[previous])
            node.attr["T"].type = 1
            node.attr[name].s = b"attribute named like a prototype member"
            previous = node_name
    return G.Graph(gd)


def test_nodes_and_scopes_named_like_prototype_members_render(tmp_path):
    page = G.write_html(_prototype_named_graph(), tmp_path / "proto.html")
    body, dom = _render(tmp_path, page, "#expand=all&select=__proto__/hasOwnProperty")
    assert 'data-render="ok"' in body, body
    for i, name in enumerate(_PROTO_NAMES):
        for node_name in (name, f"{name}/{_PROTO_NAMES[(i + 1) % len(_PROTO_NAMES)]}"):
            assert f"<title>{node_name} (Identity)</title>" in dom, node_name
    panel = dom.split('id="side"', 1)[1]
    assert "<h2>__proto__/hasOwnProperty</h2>" in panel
