"""``ckpt run``: evaluate tensors of a TensorFlow graph on new inputs, with PyTorch instead of TensorFlow."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np

from .. import _fs
from ..errors import CheckpointError
from ._output import array_to_json, escape, print_json

EXAMPLES = """examples:
  ckpt run model/my_test_model-1000.meta --feed w1=13 --feed w2=17 --fetch op_to_restore:0
  ckpt run model/ --feed inputs/x_input=images.npy --feed keep_prob=1.0 --fetch ArgMax
  ckpt run model/CNN.pb --feed inputs/x_input=batch.npz:x --feed keep_prob=1 --fetch ArgMax -o predictions.npz
  ckpt run model/CNN.ckpt.meta --feed inputs.npz --fetch fc_layer_2/logits_output,ArgMax --json
  ckpt run model/bn.meta --feed x=x.npy --fetch y --train        (is_training placeholders not fed -> True)
  ckpt run classify_image_graph_def.pb --feed DecodeJpeg/contents:0=@cat.jpg --fetch softmax:0 --top 5
           --labels imagenet_2012_challenge_label_map_proto.pbtxt --labels imagenet_synset_to_human_label_map.txt
  ckpt run classify_image_graph_def.pb --feed Mul:0=image.npy --fetch pool_3:0   (feeding Mul cuts off the decoder)

A value is a .npy file, a .npz file (its only array, the array named like the tensor, or FILE.npz:KEY), @FILE (the
file's bytes as a string scalar, e.g. a JPEG for DecodeJpeg), or a number / JSON list (3.5, 13, true, [[1,2]]).
A bare FILE.npz feeds every array in it under its key. Any tensor can be fed: the graph is cut there, and only
what the fetches need from the feeds on is computed. Without --fetch, the graph's inference outputs are computed
(gradients, optimizer, saver and summaries left out). The checkpoint defaults to the one beside a .meta file.
--top K prints the K best classes of each fetched score vector, named by --labels (a *_label_map_proto.pbtxt
then a *_synset_to_human_label_map.txt, or one label per line).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="evaluate tensors of a graph (.meta + checkpoint, or frozen .pb) with PyTorch",
        description="Evaluate tensors of a TensorFlow 1 graph, like sess.run, without TensorFlow: the graph and its "
                    "checkpoint become a PyTorch module (ckpt.graph.to_torch) and the fetched tensors are printed "
                    "or saved. Needs PyTorch (pip install ckpt[torch]).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="graph file (.meta, .pb, .pbtxt), checkpoint prefix or checkpoint directory")
    p.add_argument("--checkpoint", "-c", help="checkpoint prefix or directory (default: the one beside a .meta)")
    p.add_argument("--feed", "-f", action="append", default=[], metavar="NAME=VALUE",
                   help="a value for a placeholder or any tensor (repeatable); see below")
    p.add_argument("--fetch", action="append", default=[], metavar="NAME",
                   help="tensor or operation name to compute (repeatable, or comma-separated)")
    p.add_argument("--output", "-o", metavar="FILE.npz", help="save the results in an .npz instead of printing them")
    p.add_argument("--train", action="store_true",
                   help="training mode: boolean cond predicates (is_training) that are not fed become True")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--top", type=int, metavar="K", help="print the K highest scores of each fetch with their classes")
    p.add_argument("--labels", action="append", default=[], metavar="FILE",
                   help="label file(s) naming the classes for --top (repeatable; see below)")
    p.set_defaults(func=run)


MAX_BYTES_FEED = 1 << 30  # an @FILE feed is read into memory


class FeedValueError(CheckpointError, ValueError):
    """A --feed argument cannot be turned into an array."""


def _load_npz(path: str, key: str | None, name: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        if key is not None:
            if key not in keys:
                raise FeedValueError(f"{path} has no array {key!r} (it has: {', '.join(keys)})", path=path, key=key)
            return data[key]
        if len(keys) == 1:
            return data[keys[0]]
        for candidate in (name, (name or "").split(":")[0]):
            if candidate in keys:
                return data[candidate]
        raise FeedValueError(f"{path} holds {len(keys)} arrays ({', '.join(keys)}); say which with "
                             f"{name}={path}:KEY", path=path)


def parse_feed(text: str) -> dict[str, np.ndarray]:
    """``NAME=VALUE`` or a bare ``FILE.npz`` -> ``{tensor name: array}``."""
    name, sep, value = text.partition("=")
    if not sep:
        if text.endswith(".npz") and os.path.isfile(text):
            with np.load(text, allow_pickle=False) as data:
                return {k: data[k] for k in data.keys()}
        raise FeedValueError(f"--feed {text!r}: expected NAME=VALUE (or an .npz file whose keys are tensor names)")
    name = name.strip()
    if not name:
        raise FeedValueError(f"--feed {text!r}: the tensor name is empty")
    if value.startswith("@"):  # raw bytes as a string scalar (a JPEG for DecodeJpeg/contents)
        path = value[1:]
        if not os.path.isfile(path):
            raise FeedValueError(f"--feed {name}: no file {path}", path=path)
        if os.path.getsize(path) > MAX_BYTES_FEED:
            raise FeedValueError(f"--feed {name}: {path} is larger than {MAX_BYTES_FEED} bytes", path=path)
        with open(path, "rb") as f:
            return {name: np.array(f.read(), dtype=object)}
    path, colon, key = value.rpartition(":")
    if colon and path.endswith(".npz") and os.path.isfile(path):
        return {name: _load_npz(path, key, name)}
    if value.endswith(".npz") and os.path.isfile(value):
        return {name: _load_npz(value, None, name)}
    if value.endswith(".npy"):
        if not os.path.isfile(value):
            raise FeedValueError(f"--feed {name}: no file {value}", path=value)
        return {name: np.load(value, allow_pickle=False)}
    try:
        parsed = json.loads(value)
    except ValueError:
        raise FeedValueError(f"--feed {name}={value}: not a number, a JSON list or an existing .npy/.npz file") \
            from None
    array = np.asarray(parsed)
    if array.dtype == object or array.dtype.kind in "SU":
        raise FeedValueError(f"--feed {name}={value}: only numbers and booleans can be fed")
    return {name: array}


def _text(array: np.ndarray) -> str:
    if array.ndim == 0:
        return repr(array[()]) if array.dtype == object else str(array[()])
    return np.array2string(array, threshold=1000)


def _top(arrays: dict[str, np.ndarray], k: int, labels: dict[int, str]) -> dict[str, list]:
    from ..graph import top_k

    out = {}
    for name, a in arrays.items():
        if a.ndim == 0 or a.dtype.kind not in "fiu":
            raise FeedValueError(f"--top: {name} is not a score vector (dtype {a.dtype}, shape {list(a.shape)})")
        out[name] = top_k(a, k, labels)
    return out


def run(args: argparse.Namespace) -> int:
    feeds: dict[str, np.ndarray] = {}
    for item in args.feed:
        feeds.update(parse_feed(item))
    fetches = [f.strip() for item in args.fetch for f in item.split(",") if f.strip()]
    try:
        import torch

        from ..graph import to_torch
    except ImportError as exc:
        print(f"Error: ckpt run needs PyTorch ({exc}); install it with: pip install ckpt[torch]", file=sys.stderr)
        return 2
    if args.top is not None and args.top < 1:
        raise FeedValueError(f"--top {args.top}: K must be at least 1")
    labels = {}
    if args.labels:
        from ..graph import load_labels

        labels = load_labels(*args.labels)
    # The feeds cut the graph: only what the fetches need from them on is checked and computed.
    module = to_torch(args.model, args.checkpoint, inputs=list(feeds) or None, outputs=fetches or None)
    module.train(args.train)
    if not fetches:
        fetches = module.outputs
    with torch.no_grad():
        values = module.run(fetches, feeds)
    arrays = {}
    for name, value in zip(fetches, values):
        if isinstance(value, np.ndarray):  # strings
            arrays[name] = value
        elif value is not None:
            arrays[name] = value.detach().cpu().numpy()
    if args.top is not None:
        tops = _top(arrays, args.top, labels)
        if args.json:
            print_json({"top": {name: [[{"class": i, "score": score, "label": label} for i, score, label in row]
                                        for row in rows] for name, rows in tops.items()}})
            return 0
        for name, rows in tops.items():
            print(f"{escape(name)}:")
            for r, row in enumerate(rows):
                if len(rows) > 1:
                    print(f"  [{r}]")
                for i, score, label in row:
                    print(f"  {escape(label) if label else f'class {i}'} (score = {score:.5f})")
        return 0
    if args.output:
        arrays = {k: (v.astype(bytes) if v.dtype == object else v) for k, v in arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _fs.write_atomic(args.output, buf.getbuffer())  # a fresh file renamed into place: never through a link
        print(f"saved {len(arrays)} array(s) to {escape(args.output)}: {', '.join(map(escape, arrays))}")
        return 0
    if args.json:
        print_json({"outputs": {name: {"dtype": str(a.dtype), "shape": list(a.shape), "value": array_to_json(a)}
                                for name, a in arrays.items()}})
        return 0
    for name in fetches:
        if name not in arrays:
            print(f"{escape(name)}: (no output)")
            continue
        a = arrays[name]
        print(f"{escape(name)} ({a.dtype}, shape {list(a.shape)}):")
        print(_text(a))
    return 0
