"""The graph viewer's stylesheet and script, inlined into every page ``ckpt graph --html`` writes.

Kept as Python strings (not package data files) so the page needs nothing but this module: no network, no CDN,
no build step. The script reads the graph from a ``<script type="application/json">`` element and:

* groups operations by name scope (``conv_layer_1/...``) into boxes that start collapsed, as TensorBoard does;
  clicking a box expands it in place, clicking an expanded box's header collapses it;
* lays each level out with a Sugiyama-style layered layout (cycle breaking, longest-path layering with sources
  pulled down next to their consumers, dummy nodes on long edges, barycenter ordering sweeps, then x positions
  relaxed towards neighbours under a minimum separation); an expanded scope is laid out recursively and placed as
  one big node of its parent level, so boxes never overlap;
* pans (drag), zooms (wheel, at the pointer), fits (button or ``f``), searches (``/``), and shows an operation's
  type, device, attributes, output shapes, inputs and consumers when it is clicked;
* reports success in ``document.title`` and ``<body data-render="ok">`` (errors: ``data-render="error: ..."``),
  which is how the headless-browser test knows the page rendered;
* follows deep links: ``page.html#select=conv_layer_1/Conv2D`` reveals and selects an operation,
  ``#expand=all`` opens the scopes (up to a budget).

All text from the graph is inserted with ``textContent``, never as HTML.
"""

CSS = r"""
:root { --bg:#fafafa; --panel:#ffffff; --ink:#1f2328; --muted:#667085; --edge:#8c96a5; --sel:#e8590c; }
* { box-sizing: border-box; }
html, body { margin:0; height:100%; font: 13px/1.35 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color:var(--ink); background:var(--bg); overflow:hidden; }
#bar { position:absolute; left:0; right:0; top:0; height:42px; display:flex; align-items:center; gap:8px;
  padding:0 10px; background:var(--panel); border-bottom:1px solid #d0d7de; z-index:2; }
#bar .title { font-weight:600; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:40vw; }
#bar .stats { color:var(--muted); white-space:nowrap; }
#bar .spacer { flex:1; }
#bar button, #bar input { font:inherit; padding:4px 9px; border:1px solid #d0d7de; border-radius:6px;
  background:#f6f8fa; cursor:pointer; }
#bar input { width:220px; cursor:text; background:#fff; }
#canvas { position:absolute; left:0; top:42px; width:calc(100% - 340px); height:calc(100% - 42px); cursor:grab;
  display:block; }
#canvas.dragging { cursor:grabbing; }
#side { position:absolute; top:42px; right:0; bottom:0; width:340px; overflow:auto; padding:12px 14px;
  background:var(--panel); border-left:1px solid #d0d7de; }
#side h2 { font-size:15px; margin:0 0 2px 0; word-break:break-all; }
#side .type { color:var(--muted); margin-bottom:10px; }
#side h3 { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:14px 0 4px; }
#side table { border-collapse:collapse; width:100%; }
#side td { vertical-align:top; padding:2px 4px; border-top:1px solid #eef0f2; word-break:break-all; }
#side td.k { color:var(--muted); white-space:nowrap; width:1%; }
#side a { color:#0969da; cursor:pointer; text-decoration:none; }
#side a:hover { text-decoration:underline; }
#side .hint { color:var(--muted); }
#side .legend span { display:inline-block; margin:2px 6px 2px 0; padding:1px 6px; border-radius:4px;
  border:1px solid #0002; }
svg text { pointer-events:none; user-select:none; }
.op rect { stroke:#5b6675; stroke-width:1; }
.op .nm { font-size:11.5px; font-weight:600; fill:#1f2328; }
.op .ty { font-size:10px; fill:#4b5563; }
.op.aux { opacity:.55; }
.op.output rect { stroke:#cf222e; stroke-width:2; }
.op.sel rect, .grp.sel > rect.box { stroke:var(--sel); stroke-width:3; }
.grp rect.box { fill:#eef2f7; stroke:#7d8da1; stroke-width:1.2; }
.grp.collapsed rect.box { fill:#dbe4f0; }
.grp .nm { font-size:12px; font-weight:600; fill:#243042; }
.grp .ct { font-size:10px; fill:#4b5563; }
.grp .tog { font-size:14px; font-weight:700; fill:#243042; }
.grp rect.hdr { fill:#0000; cursor:pointer; }
.edge { fill:none; stroke:var(--edge); stroke-width:1.2; }
.edge.ctl { stroke-dasharray:4 3; stroke:#b4bcc8; }
.edge.aux { opacity:.3; }
.grp.aux { opacity:.55; }
.edge.hot { stroke:var(--sel); stroke-width:2.2; opacity:1; }
.op, .grp.collapsed { cursor:pointer; }
"""

JS = r"""
(function () {
  'use strict';
  var SVGNS = 'http://www.w3.org/2000/svg';
  // Every map keyed by names from the graph has no prototype: a scope or node called "constructor",
  // "__proto__" or "hasOwnProperty" is then an ordinary key.
  function dict() { return Object.create(null); }
  function fail(msg) {
    document.body.setAttribute('data-render', 'error: ' + msg);
    document.title = 'ckpt graph error: ' + msg;
  }
  window.onerror = function (message, source, line) { fail(String(message) + ' (line ' + line + ')'); };

  var DATA = JSON.parse(document.getElementById('ckpt-graph-data').textContent);
  var OPS = DATA.nodes;
  var NODE_H = 34, GROUP_H = 38, GAP_X = 22, GAP_Y = 46, PAD = 14, HEADER = 26, DUMMY_W = 8;
  var DUMMY_BUDGET = 20000;  // dummy nodes per level: keeps layout time bounded on huge flat graphs

  // ------------------------------------------------------------------ hierarchy of name scopes
  function Group(path, parent) {
    this.path = path; this.parent = parent; this.children = dict(); this.childOrder = []; this.ops = []; this.count = 0;
    this.name = path.slice(path.lastIndexOf('/') + 1);
  }
  var root = new Group('', null);
  var groups = dict();
  groups[''] = root;
  function ensureGroup(path) {
    if (groups[path]) { return groups[path]; }
    var cut = path.lastIndexOf('/');
    var parent = ensureGroup(cut < 0 ? '' : path.slice(0, cut));
    var g = new Group(path, parent);
    groups[path] = g; parent.children[path] = g; parent.childOrder.push(path);
    return g;
  }
  OPS.forEach(function (op, i) {
    var cut = op.n.lastIndexOf('/');
    op.scope = cut < 0 ? '' : op.n.slice(0, cut);
    op.short = op.n.slice(cut + 1);
    ensureGroup(op.scope);
  });
  OPS.forEach(function (op, i) {
    // An op whose name is also a scope ("alpha" next to "alpha/read") lives inside that scope's box.
    var home = groups[op.n] ? groups[op.n] : groups[op.scope];
    op.group = home; home.ops.push(i);
    for (var g = home; g; g = g.parent) { g.count += 1; g.model = (g.model || 0) + (op.role === 'model' ? 1 : 0); }
  });
  // Saver, initializer and training boxes (and edges touching them) are drawn faded, as TensorBoard sets
  // auxiliary nodes aside.
  function isAux(key) {
    if (key.indexOf('o:') === 0) { return OPS[+key.slice(2)].role !== 'model'; }
    var g = groups[key.slice(2)];
    return !!g && !g.model;
  }
  var consumers = OPS.map(function () { return []; });
  OPS.forEach(function (op, i) {
    op.in.forEach(function (e) { if (e[0] >= 0) { consumers[e[0]].push(i); } });
  });

  var expanded = dict();
  expanded[''] = true;
  // Open chains of single scopes ("import/" around a whole graph) so the first view shows something useful.
  (function () {
    var g = root;
    while (g.ops.length === 0 && g.childOrder.length === 1) { g = groups[g.childOrder[0]]; expanded[g.path] = true; }
  })();

  function reveal(i) {
    for (var g = OPS[i].group; g; g = g.parent) { expanded[g.path] = true; }
  }
  // The visible box an op is drawn in: itself, or its outermost collapsed scope.
  function visibleKey(i) {
    var chain = [];
    for (var g = OPS[i].group; g && g !== root; g = g.parent) { chain.push(g); }
    for (var k = chain.length - 1; k >= 0; k--) { if (!expanded[chain[k].path]) { return 'g:' + chain[k].path; } }
    return 'o:' + i;
  }
  // The child item of group G that contains op i (G must contain it).
  function itemIn(G, i) {
    var g = OPS[i].group;
    if (g === G) { return 'o:' + i; }
    while (g && g.parent !== G) { g = g.parent; }
    return g ? 'g:' + g.path : null;
  }
  function contains(G, i) {
    for (var g = OPS[i].group; g; g = g.parent) { if (g === G) { return true; } }
    return false;
  }

  // ------------------------------------------------------------------ measuring text
  var measureCtx = document.createElement('canvas').getContext('2d');
  function textWidth(s, px, bold) {
    measureCtx.font = (bold ? '600 ' : '') + px + 'px -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';
    return measureCtx.measureText(s).width;
  }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '\u2026' : s; }

  // ------------------------------------------------------------------ layered layout of one level
  function layered(items, edges) {
    var n = items.length, i, j;
    var succ = [], pred = [];
    for (i = 0; i < n; i++) { succ.push([]); pred.push([]); }
    var seen = dict();
    edges.forEach(function (e) {
      var a = e[0], b = e[1], key = a + ',' + b;
      if (a === b || seen[key]) { return; }
      seen[key] = 1; succ[a].push(b); pred[b].push(a);
    });
    // 1. break cycles: DFS in item order, reverse back edges.
    var state = new Array(n).fill(0), back = dict();
    for (i = 0; i < n; i++) {
      if (state[i]) { continue; }
      var stack = [[i, 0]]; state[i] = 1;
      while (stack.length) {
        var top = stack[stack.length - 1], v = top[0];
        if (top[1] < succ[v].length) {
          var w = succ[v][top[1]++];
          if (state[w] === 1) { back[v + ',' + w] = 1; }
          else if (state[w] === 0) { state[w] = 1; stack.push([w, 0]); }
        } else { state[v] = 2; stack.pop(); }
      }
    }
    var S = [], P = [];
    for (i = 0; i < n; i++) { S.push([]); P.push([]); }
    Object.keys(seen).forEach(function (key) {
      var ab = key.split(','), a = +ab[0], b = +ab[1];
      if (back[key]) { var t = a; a = b; b = t; }
      if (S[a].indexOf(b) < 0) { S[a].push(b); P[b].push(a); }
    });
    // 2. longest-path layering (Kahn, ties in item order), then sources pulled down next to their consumers.
    var indeg = P.map(function (p) { return p.length; }), order = [], queue = [];
    for (i = 0; i < n; i++) { if (!indeg[i]) { queue.push(i); } }
    while (queue.length) {
      var u = queue.shift(); order.push(u);
      S[u].forEach(function (w) { if (--indeg[w] === 0) { queue.push(w); } });
    }
    var layer = new Array(n).fill(0);
    order.forEach(function (u) { P[u].forEach(function (p) { layer[u] = Math.max(layer[u], layer[p] + 1); }); });
    for (j = order.length - 1; j >= 0; j--) {
      var x = order[j];
      if (!P[x].length && S[x].length) {
        var m = Infinity;
        S[x].forEach(function (s) { m = Math.min(m, layer[s]); });
        layer[x] = Math.max(layer[x], m - 1);
      }
    }
    // 3. dummy nodes on edges longer than one layer.
    var nodes = items.map(function (it, k) { return { w: it.w, h: it.h, layer: layer[k], real: k }; });
    var up = nodes.map(function () { return []; }), down = nodes.map(function () { return []; });
    function link(a, b) { down[a].push(b); up[b].push(a); }
    var budget = DUMMY_BUDGET;
    for (i = 0; i < n; i++) {
      S[i].forEach(function (b) {
        var prev = i, span = layer[b] - layer[i] - 1;
        if (span > budget) { link(i, b); return; }  // huge flat graphs: no more dummies, ordering still works
        budget -= span;
        for (var L = layer[i] + 1; L < layer[b]; L++) {
          nodes.push({ w: DUMMY_W, h: NODE_H, layer: L, real: -1 }); up.push([]); down.push([]);
          link(prev, nodes.length - 1); prev = nodes.length - 1;
        }
        link(prev, b);
      });
    }
    var layers = [];
    nodes.forEach(function (nd, k) { (layers[nd.layer] = layers[nd.layer] || []).push(k); });
    for (i = 0; i < layers.length; i++) { layers[i] = layers[i] || []; }
    var pos = new Array(nodes.length);
    function index() { layers.forEach(function (L) { L.forEach(function (k, r) { pos[k] = r; }); }); }
    index();
    // 4. barycenter sweeps.
    function sweep(L, neighbours) {
      var bary = dict();
      L.forEach(function (k) {
        var nb = neighbours[k];
        bary[k] = nb.length ? nb.reduce(function (s, q) { return s + pos[q]; }, 0) / nb.length : pos[k];
      });
      L.sort(function (a, b) { return (bary[a] - bary[b]) || (pos[a] - pos[b]); });
      L.forEach(function (k, r) { pos[k] = r; });
    }
    for (var it = 0; it < 6; it++) {
      for (i = 1; i < layers.length; i++) { sweep(layers[i], up); }
      for (i = layers.length - 2; i >= 0; i--) { sweep(layers[i], down); }
    }
    // 5. coordinates: layers stacked top to bottom; x relaxed towards neighbours with minimum separation.
    var y = 0, xs = new Array(nodes.length), ys = new Array(nodes.length);
    layers.forEach(function (L) {
      var h = 0, cx = 0;
      L.forEach(function (k) { h = Math.max(h, nodes[k].h); });
      L.forEach(function (k) {
        xs[k] = cx + nodes[k].w / 2; cx += nodes[k].w + GAP_X; ys[k] = y + (h - nodes[k].h) / 2;
      });
      y += h + GAP_Y;
    });
    function place(L, desired) {
      var k, r;
      for (r = 0; r < L.length; r++) {
        k = L[r];
        xs[k] = desired[k];
        if (r) { var p = L[r - 1]; xs[k] = Math.max(xs[k], xs[p] + (nodes[p].w + nodes[k].w) / 2 + GAP_X); }
      }
      for (r = L.length - 2; r >= 0; r--) {
        k = L[r]; var q = L[r + 1];
        var limit = xs[q] - (nodes[q].w + nodes[k].w) / 2 - GAP_X;
        if (xs[k] > limit) {
          var left = r ? xs[L[r - 1]] + (nodes[L[r - 1]].w + nodes[k].w) / 2 + GAP_X : -Infinity;
          xs[k] = Math.max(limit, left);
        }
      }
    }
    for (it = 0; it < 8; it++) {
      var fromAbove = it % 2 === 0;
      var seq = fromAbove ? layers : layers.slice().reverse();
      seq.forEach(function (L) {
        var desired = dict();
        L.forEach(function (k) {
          var nb = (fromAbove ? up[k] : down[k]).concat(fromAbove ? down[k] : up[k]);
          desired[k] = nb.length ? nb.reduce(function (s, q) { return s + xs[q]; }, 0) / nb.length : xs[k];
        });
        place(L, desired);
      });
    }
    var minX = Infinity, maxX = -Infinity;
    nodes.forEach(function (nd, k) {
      minX = Math.min(minX, xs[k] - nd.w / 2); maxX = Math.max(maxX, xs[k] + nd.w / 2);
    });
    if (!nodes.length) { minX = 0; maxX = 0; }
    var out = items.map(function (it, k) { return { x: xs[k] - minX - it.w / 2, y: ys[k] }; });
    return { pos: out, w: maxX - minX, h: Math.max(0, y - GAP_Y) };
  }

  // ------------------------------------------------------------------ recursive layout of expanded scopes
  var boxes = dict();  // key -> {x, y, w, h, kind}
  function opBox(i) {
    var op = OPS[i];
    var w = Math.max(textWidth(clip(op.short, 40), 11.5, true), textWidth(clip(op.t, 40), 10, false)) + 20;
    return { key: 'o:' + i, w: Math.max(56, Math.ceil(w)), h: NODE_H, kind: 'op', index: i };
  }
  function collapsedBox(g) {
    var w = Math.max(textWidth(clip(g.name, 40), 12, true) + 30, textWidth(g.count + ' ops', 10, false) + 30);
    return { key: 'g:' + g.path, w: Math.max(80, Math.ceil(w)), h: GROUP_H, kind: 'group', group: g };
  }
  function layoutGroup(G) {
    var items = [], at = dict();
    G.ops.forEach(function (i) { at['o:' + i] = items.length; items.push(opBox(i)); });
    G.childOrder.forEach(function (path) {
      var g = groups[path];
      at['g:' + path] = items.length;
      items.push(expanded[path] ? layoutGroup(g) : collapsedBox(g));
    });
    var edges = [];
    OPS.forEach(function (op, i) {
      if (G !== root && !contains(G, i)) { return; }
      var dst = itemIn(G, i);
      op.in.forEach(function (e) {
        if (e[0] < 0 || (G !== root && !contains(G, e[0]))) { return; }
        var src = itemIn(G, e[0]);
        if (src !== dst) { edges.push([at[src], at[dst]]); }
      });
    });
    var res = layered(items, edges);
    var top = G === root ? 0 : HEADER, side = G === root ? 0 : PAD;
    items.forEach(function (it, k) { it.rx = res.pos[k].x + side; it.ry = res.pos[k].y + top; });
    var box = { key: 'g:' + G.path, kind: 'expanded', group: G, items: items,
                w: Math.max(res.w + 2 * side, textWidth(G.name, 12, true) + 60),
                h: res.h + top + (G === root ? 0 : PAD) };
    return box;
  }
  function place(box, x, y) {
    box.x = x; box.y = y; boxes[box.key] = box;
    if (box.items) { box.items.forEach(function (it) { place(it, x + it.rx, y + it.ry); }); }
  }

  // ------------------------------------------------------------------ drawing
  var svg = document.getElementById('canvas');
  var view = { x: 20, y: 20, k: 1 };
  var layerG = document.createElementNS(SVGNS, 'g');
  svg.appendChild(layerG);
  var selected = null;  // 'o:i' or 'g:path'

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var a in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, a)) { e.setAttribute(a, attrs[a]); } }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function txt(s, attrs, parent) { var t = el('text', attrs, parent); t.textContent = s; return t; }
  function colorFor(op) {
    var t = op.t;
    if (op.role !== 'model') { return '#eceff3'; }
    if (t === 'Placeholder' || t === 'PlaceholderWithDefault') { return '#c8efd0'; }
    if (t === 'VariableV2' || t === 'VarHandleOp' || t === 'Variable') { return '#ffd8a8'; }
    if (t === 'Const') { return '#e9ecef'; }
    if (t === 'Identity' || t === 'ReadVariableOp') { return '#f1f3f5'; }
    var h = 0;
    for (var i = 0; i < t.length; i++) { h = (h * 31 + t.charCodeAt(i)) >>> 0; }
    return 'hsl(' + (h % 360) + ',55%,86%)';
  }
  var edgeEls = [];
  function render() {
    boxes = dict();
    var top = layoutGroup(root);
    place(top, 0, 0);
    while (layerG.firstChild) { layerG.removeChild(layerG.firstChild); }
    var gGroups = el('g', {}, layerG), gEdges = el('g', {}, layerG), gNodes = el('g', {}, layerG);
    Object.keys(boxes).forEach(function (key) {
      var b = boxes[key];
      if (b.kind === 'expanded' && b.group !== root) { drawExpanded(b, gGroups); }
      else if (b.kind === 'group') { drawCollapsed(b, gNodes); }
      else if (b.kind === 'op') { drawOp(b, gNodes); }
    });
    // Aggregated edges between visible boxes.
    var agg = dict();
    OPS.forEach(function (op, i) {
      var dst = visibleKey(i);
      op.in.forEach(function (e) {
        if (e[0] < 0) { return; }
        var src = visibleKey(e[0]);
        if (src === dst) { return; }
        var key = src + '>' + dst;
        var a = agg[key] || (agg[key] = { src: src, dst: dst, n: 0, ctl: true, label: '', ops: [] });
        a.n += 1; a.ctl = a.ctl && e[2] === 1; a.ops.push(e[0], i);
        if (!a.label && e[2] !== 1) {
          var so = OPS[e[0]];
          a.label = (so.dt[e[1]] || '') + (so.s[e[1]] ? ' ' + so.s[e[1]] : '');
        }
      });
    });
    edgeEls = [];
    Object.keys(agg).forEach(function (key) {
      var a = agg[key], s = boxes[a.src], d = boxes[a.dst];
      if (!s || !d) { return; }
      var x1 = s.x + s.w / 2, y1 = s.y + s.h, x2 = d.x + d.w / 2, y2 = d.y;
      if (y2 < y1) { y1 = s.y + s.h / 2; y2 = d.y + d.h / 2; }
      var dy = Math.max(20, Math.abs(y2 - y1) / 2);
      a.aux = isAux(a.src) || isAux(a.dst);
      var d = 'M' + x1 + ',' + y1 + ' C' + x1 + ',' + (y1 + dy) + ' ' + x2 + ',' + (y2 - dy) + ' ' + x2 + ',' + y2;
      var path = el('path', { d: d, 'class': edgeClass(a, false), 'marker-end': 'url(#arrow)' }, gEdges);
      if (a.n > 1) { path.setAttribute('stroke-width', String(Math.min(1.2 + Math.log2(a.n), 5))); }
      var title = el('title', {}, path);
      title.textContent = (a.label || (a.ctl ? 'control dependency' : '')) + (a.n > 1 ? ' (' + a.n + ' edges)' : '');
      path.__edge = a;
      edgeEls.push(path);
    });
    highlight();
    document.getElementById('stats').textContent =
      OPS.length + ' ops \u00b7 ' + Object.keys(boxes).length + ' boxes shown';
    var rootBox = boxes['g:'];
    document.body.setAttribute('data-size', Math.round(rootBox.w) + 'x' + Math.round(rootBox.h));
  }
  function drawOp(b, parent) {
    var op = OPS[b.index];
    var cls = 'op' + (op.role !== 'model' ? ' aux' : '') + (op.out ? ' output' : '') +
      (selected === b.key ? ' sel' : '');
    var g = el('g', { 'class': cls, transform: 'translate(' + b.x + ',' + b.y + ')' }, parent);
    el('rect', { width: b.w, height: b.h, rx: 9, fill: colorFor(op) }, g);
    txt(clip(op.short, 40), { x: b.w / 2, y: 14, 'text-anchor': 'middle', 'class': 'nm' }, g);
    txt(clip(op.t, 40), { x: b.w / 2, y: 27, 'text-anchor': 'middle', 'class': 'ty' }, g);
    var title = el('title', {}, g); title.textContent = op.n + ' (' + op.t + ')';
    g.addEventListener('click', function (ev) { ev.stopPropagation(); select(b.key); });
  }
  function drawCollapsed(b, parent) {
    var cls = 'grp collapsed' + (isAux(b.key) ? ' aux' : '') + (selected === b.key ? ' sel' : '');
    var g = el('g', { 'class': cls, transform: 'translate(' + b.x + ',' + b.y + ')' }, parent);
    el('rect', { 'class': 'box', width: b.w, height: b.h, rx: 6 }, g);
    el('rect', { width: b.w - 4, height: b.h - 4, x: 2, y: 2, rx: 5, fill: 'none', stroke: '#7d8da1',
                 'stroke-dasharray': '2 2' }, g);
    txt('+', { x: 10, y: 16, 'class': 'tog' }, g);
    txt(clip(b.group.name, 40), { x: b.w / 2 + 6, y: 16, 'text-anchor': 'middle', 'class': 'nm' }, g);
    txt(b.group.count + ' ops', { x: b.w / 2 + 6, y: 30, 'text-anchor': 'middle', 'class': 'ct' }, g);
    var title = el('title', {}, g); title.textContent = b.group.path + ' (click to expand)';
    g.addEventListener('click', function (ev) { ev.stopPropagation(); toggle(b.group, true); });
  }
  function drawExpanded(b, parent) {
    var cls = 'grp' + (selected === b.key ? ' sel' : '');
    var g = el('g', { 'class': cls, transform: 'translate(' + b.x + ',' + b.y + ')' }, parent);
    el('rect', { 'class': 'box', width: b.w, height: b.h, rx: 8 }, g);
    var hdr = el('rect', { 'class': 'hdr', width: b.w, height: HEADER, rx: 8 }, g);
    txt('\u2212', { x: 10, y: 17, 'class': 'tog' }, g);
    txt(clip(b.group.path, 60) + '  (' + b.group.count + ')', { x: 24, y: 17, 'class': 'nm' }, g);
    var title = el('title', {}, hdr); title.textContent = b.group.path + ' (click to collapse)';
    hdr.addEventListener('click', function (ev) { ev.stopPropagation(); toggle(b.group, false); });
  }
  function toggle(group, open) {
    expanded[group.path] = open;
    selected = 'g:' + group.path;
    render();
    showGroup(group);
  }
  function edgeClass(a, hot) {
    return 'edge' + (a.ctl ? ' ctl' : '') + (a.aux ? ' aux' : '') + (hot ? ' hot' : '');
  }
  function highlight() {
    var on = dict();
    if (selected && selected.indexOf('o:') === 0) { on[selected] = 1; }
    edgeEls.forEach(function (p) {
      var a = p.__edge;
      p.setAttribute('class', edgeClass(a, on[a.src] || on[a.dst]));
    });
  }

  // ------------------------------------------------------------------ side panel
  var side = document.getElementById('side');
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function h(tag, text, parent, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function opRow(table, i) {
    var row = h('tr', null, table);
    opLink(i, OPS[i].n, h('td', null, row));
    h('td', OPS[i].t, row, 'k');
  }
  function opLink(i, label, parent) {
    var a = h('a', label, parent);
    a.addEventListener('click', function () { focusOp(i); });
    return a;
  }
  function showOp(i) {
    var op = OPS[i];
    clear(side);
    h('h2', op.n, side);
    var kind = op.t + (op.role !== 'model' ? '  \u00b7  ' + op.role + ' node' : '') +
      (op.out ? '  \u00b7  output' : '');
    h('div', kind, side, 'type');
    var t = h('table', null, side), row;
    if (op.d) { row = h('tr', null, t); h('td', 'device', row, 'k'); h('td', op.d, row); }
    h('h3', 'Outputs', side);
    t = h('table', null, side);
    if (!op.dt.length) { h('div', 'none', side, 'hint'); }
    op.dt.forEach(function (dt, k) {
      row = h('tr', null, t);
      h('td', ':' + k, row, 'k');
      h('td', (dt || '?') + ' ' + (op.s[k] || '<unknown shape>'), row);
    });
    h('h3', 'Inputs (' + op.in.length + ')', side);
    t = h('table', null, side);
    op.in.forEach(function (e) {
      row = h('tr', null, t);
      var cell = h('td', null, row);
      if (e[0] < 0) { h('span', e[3], cell); return; }
      var src = OPS[e[0]];
      opLink(e[0], (e[2] ? '^' : '') + src.n + (e[1] ? ':' + e[1] : ''), cell);
      h('td', e[2] ? 'control' : ((src.dt[e[1]] || '') + ' ' + (src.s[e[1]] || '')), row, 'k');
    });
    h('h3', 'Consumers (' + consumers[i].length + ')', side);
    t = h('table', null, side);
    consumers[i].slice(0, 200).forEach(function (c) { opRow(t, c); });
    h('h3', 'Attributes', side);
    t = h('table', null, side);
    if (!op.a.length) { h('div', 'none', side, 'hint'); }
    op.a.forEach(function (kv) { row = h('tr', null, t); h('td', kv[0], row, 'k'); h('td', kv[1], row); });
  }
  function showGroup(g) {
    clear(side);
    h('h2', g.path || '(root)', side);
    h('div', 'name scope \u00b7 ' + g.count + ' operations', side, 'type');
    var types = dict();
    OPS.forEach(function (op, i) { if (contains(g, i)) { types[op.t] = (types[op.t] || 0) + 1; } });
    h('h3', 'Operation types', side);
    var t = h('table', null, side);
    Object.keys(types).sort(function (a, b) { return types[b] - types[a]; }).slice(0, 40).forEach(function (k) {
      var row = h('tr', null, t); h('td', String(types[k]), row, 'k'); h('td', k, row);
    });
    h('p', expanded[g.path] ? 'Click the box header to collapse it.' : 'Click the box to expand it.', side, 'hint');
  }
  function showOverview() {
    clear(side);
    h('h2', DATA.title, side);
    h('div', DATA.subtitle, side, 'type');
    [['Inputs', DATA.inputs], ['Outputs', DATA.outputs], ['Variables', DATA.variables]].forEach(function (sec) {
      h('h3', sec[0] + ' (' + sec[1].length + ')', side);
      var t = h('table', null, side);
      sec[1].slice(0, 100).forEach(function (i) { opRow(t, i); });
    });
    h('h3', 'How to use', side);
    h('p', 'Drag to pan, scroll to zoom, press f to fit. Click a scope box to expand it, its header to collapse it. ' +
      'Click an operation for its attributes, shapes, inputs and consumers. Faded nodes belong to the saver, ' +
      'initializers or training; red outlines mark outputs.', side, 'hint');
    var legend = h('div', null, side, 'legend');
    var colors = [['input', '#c8efd0'], ['variable', '#ffd8a8'], ['constant', '#e9ecef'], ['scope', '#dbe4f0']];
    colors.forEach(function (p) {
      var s = h('span', p[0], legend); s.style.background = p[1];
    });
  }
  function select(key) {
    selected = key;
    render();
    if (key.indexOf('o:') === 0) { showOp(+key.slice(2)); }
  }
  function focusOp(i) {
    reveal(i);
    selected = 'o:' + i;
    render();
    showOp(i);
    var b = boxes[visibleKey(i)];
    if (b) { center(b.x + b.w / 2, b.y + b.h / 2); }
  }

  // ------------------------------------------------------------------ pan, zoom, fit, search
  function apply() {
    layerG.setAttribute('transform', 'translate(' + view.x + ',' + view.y + ') scale(' + view.k + ')');
  }
  function fit() {
    var r = svg.getBoundingClientRect(), bb;
    try { bb = layerG.getBBox(); } catch (e) { bb = null; }
    if (!bb || !r.width || !bb.width) { apply(); return; }
    var k = Math.min((r.width - 40) / bb.width, (r.height - 40) / bb.height, 1.5);
    view.k = Math.max(k, 0.03);
    view.x = (r.width - bb.width * view.k) / 2 - bb.x * view.k;
    view.y = Math.max(20, (r.height - bb.height * view.k) / 2) - bb.y * view.k;
    apply();
  }
  function center(x, y) {
    var r = svg.getBoundingClientRect();
    view.k = Math.max(view.k, 0.6);
    view.x = r.width / 2 - x * view.k; view.y = r.height / 2 - y * view.k;
    apply();
  }
  var drag = null;
  var moved = false;
  svg.addEventListener('mousedown', function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y }; moved = false; svg.classList.add('dragging');
  });
  window.addEventListener('mousemove', function (ev) {
    if (!drag) { return; }
    if (Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 3) { moved = true; }
    view.x = drag.vx + ev.clientX - drag.x; view.y = drag.vy + ev.clientY - drag.y; apply();
  });
  window.addEventListener('mouseup', function () { drag = null; svg.classList.remove('dragging'); });
  // A drag ends with a click event; it must not select or deselect anything.
  svg.addEventListener('click', function (ev) { if (moved) { ev.stopPropagation(); moved = false; } }, true);
  svg.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    var k = Math.min(Math.max(view.k * Math.exp(-ev.deltaY * 0.0015), 0.03), 6);
    view.x = px - (px - view.x) * k / view.k; view.y = py - (py - view.y) * k / view.k; view.k = k;
    apply();
  }, { passive: false });
  svg.addEventListener('click', function () { if (selected) { selected = null; render(); showOverview(); } });
  document.getElementById('fit').addEventListener('click', fit);
  document.getElementById('collapse').addEventListener('click', function () {
    expanded = dict(); expanded[''] = true; render(); fit();
  });
  document.getElementById('expand').addEventListener('click', function () {
    var budget = 400;
    var byDepth = Object.keys(groups).sort(function (a, b) { return a.split('/').length - b.split('/').length; });
    byDepth.forEach(function (p) {
      if (budget > 0) { expanded[p] = true; budget -= groups[p].childOrder.length + groups[p].ops.length; }
    });
    render(); fit();
  });
  var search = document.getElementById('search');
  search.addEventListener('keydown', function (ev) {
    if (ev.key !== 'Enter') { return; }
    var q = search.value.trim().toLowerCase();
    if (!q) { return; }
    var exact = -1, partial = -1;
    OPS.forEach(function (op, i) {
      var n = op.n.toLowerCase();
      if (n === q && exact < 0) { exact = i; }
      if (partial < 0 && n.indexOf(q) >= 0) { partial = i; }
    });
    var hit = exact >= 0 ? exact : partial;
    if (hit >= 0) { focusOp(hit); search.style.borderColor = ''; } else { search.style.borderColor = '#cf222e'; }
  });
  window.addEventListener('keydown', function (ev) {
    if (ev.target === search) { return; }
    if (ev.key === 'f') { fit(); }
    if (ev.key === '/') { ev.preventDefault(); search.focus(); }
  });
  window.addEventListener('resize', fit);

  // ------------------------------------------------------------------ go
  var defs = el('defs', {}, svg);
  var marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
                              orient: 'auto-start-reverse' }, defs);
  el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8c96a5' }, marker);
  render();
  fit();
  showOverview();
  // Deep links: page.html#expand=all, page.html#select=conv_layer_1/Conv2D (both: #expand=all&select=...).
  location.hash.replace(/^#/, '').split('&').forEach(function (part) {
    var eq = part.indexOf('='), key = part.slice(0, eq), value = decodeURIComponent(part.slice(eq + 1));
    if (key === 'expand' && value === 'all') { document.getElementById('expand').click(); }
    if (key === 'select') {
      var hit = -1;
      OPS.forEach(function (op, i) { if (op.n === value) { hit = i; } });
      if (hit >= 0) { focusOp(hit); }
    }
  });
  document.body.setAttribute('data-render', 'ok');
  document.body.setAttribute('data-boxes', String(Object.keys(boxes).length));
  document.title = DATA.title + ' \u2014 ckpt graph';
})();
"""
