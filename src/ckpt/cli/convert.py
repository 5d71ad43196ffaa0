"""``ckpt convert``: rewrite a checkpoint in another format, streaming tensor by tensor, then verify it."""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

from .._convert import CASTS, convert, parse_size
from ..errors import CheckpointError, UnsupportedError
from ..formats import destination_format
from ..reader import NAMES
from ._output import Progress, add_quiet_option, escape, human_bytes, print_json, progress_wanted

EXAMPLES = """examples:
  ckpt convert model/ckpt-3 model.safetensors                  TensorFlow -> safetensors
  ckpt convert tf2/ckpt-3 model.safetensors --names clean      model/dense/kernel, not .../.ATTRIBUTES/...
  ckpt convert pytorch_model.bin tf/model.ckpt                 PyTorch -> TensorFlow (a prefix: no suffix)
  ckpt convert model.safetensors model.pt --dtype bfloat16     cast floating tensors
  ckpt convert big.pt out/model.safetensors --shard-size 5GB   Hugging Face shards + model.safetensors.index.json
  ckpt convert model.pt weights.npz --exclude 'optimizer/*'
  ckpt convert model.pt out.safetensors --map '^module\\.=' --map '\\.=/'   rename: REGEX=REPLACEMENT, first match wins
  ckpt convert model.pt out.safetensors --map @names.json      rename with a {"old": "new"} dict (only those are kept)

The destination format comes from --format (alias --to), else from DST's suffix: .safetensors, .pt/.bin/.pth,
.npz, or no suffix (or .ckpt, .ckpt-N) for a TensorFlow checkpoint prefix; any other suffix is refused (say
--format tensorflow to use it as a prefix anyway). An existing destination is refused unless --force is given.
Names are rewritten exactly like ckpt.restore(map=...).

Exit status: 0 converted (and verified), 2 on trouble (nothing is left behind).
"""

#: Suffixes of a TensorFlow prefix that are taken as such without --format (TF1 Saver's model.ckpt, model.ckpt-30).
TF_PREFIX_RE = re.compile(r"\.ckpt(-\d+)?$|\.\d+$")
KNOWN_SUFFIXES = ".safetensors, .pt, .pth, .bin, .npz, or none (a TensorFlow prefix such as model/ckpt-3 or model.ckpt)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a checkpoint between TensorFlow, safetensors, PyTorch and NumPy formats",
        description="Convert SRC to DST one tensor at a time (peak memory near the largest tensor), optionally "
                    "renaming, filtering and casting, then read the result back and compare every tensor.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="any checkpoint ckpt reads (format detected from the content)")
    p.add_argument("dst", help="file or TensorFlow prefix to write")
    p.add_argument("--format", "--to", choices=["tensorflow", "safetensors", "torch", "numpy", "dcp"],
                   help="destination format (default: from DST's suffix); dcp: a torch.distributed.checkpoint "
                        "directory (FileSystemWriter)")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing destination")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow reading a torch.distributed.checkpoint directory as SRC: its .metadata file is a "
                        "pickle, which can run code; only for checkpoints you trust")
    p.add_argument("--map", action="append", metavar="RULE",
                   help="rename: REGEX=REPLACEMENT (repeatable; the first matching rule applies; an empty result "
                        "drops the tensor), or @FILE.json holding a {source: destination} dict")
    p.add_argument("--dtype", choices=list(CASTS), help="cast floating-point tensors to this type")
    p.add_argument("--include", action="append", metavar="GLOB", help="only convert matching names (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="leave matching names out (repeatable)")
    p.add_argument("--shard-size", metavar="SIZE", help="safetensors: largest shard, e.g. 5GB, 500MB, 2GiB")
    p.add_argument("--names", choices=NAMES, default="raw",
                   help="source names: 'clean' for TensorFlow 2 object paths and Keras layer names")
    p.add_argument("--no-verify", action="store_true", help="skip reading the result back")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    add_quiet_option(p)
    p.set_defaults(func=run, parser=p)


def parse_map(values: list[str] | None):
    """``--map`` values -> a NameMap: a list of (regex, replacement) rules, or the dict of one ``@file.json``."""
    if not values:
        return None
    rules = []
    table = None
    for value in values:
        if value.startswith("@"):
            path = value[1:]
            try:
                with open(path, encoding="utf-8") as f:
                    loaded = json.load(f)
            except (OSError, ValueError) as exc:
                raise ValueError(f"--map {value}: cannot read a JSON name map ({exc})") from None
            if isinstance(loaded, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()):
                if table is not None:
                    raise ValueError("only one --map @FILE.json dict can be given")
                table = loaded
            elif isinstance(loaded, list) and all(isinstance(r, list) and len(r) == 2 and
                                                  all(isinstance(x, str) for x in r) for r in loaded):
                rules.extend((a, b) for a, b in loaded)
            else:
                raise ValueError(f"--map {value}: expected a {{\"old\": \"new\"}} object or a list of "
                                 "[regex, replacement] pairs")
            continue
        pattern, sep, replacement = value.partition("=")
        if not sep or not pattern:
            raise ValueError(f"--map {value!r}: expected REGEX=REPLACEMENT or @FILE.json")
        rules.append((pattern, replacement))
    if table is not None and rules:
        raise ValueError("--map: a @FILE.json dict cannot be combined with REGEX=REPLACEMENT rules")
    if table is not None:
        return table
    import re

    for pattern, _ in rules:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"--map: invalid regular expression {pattern!r} ({exc})") from None
    return rules


def check_destination(dst: str, format: str | None, force: bool) -> str:
    """The destination format; refuses an unknown suffix (without ``--format``) and, without ``--force``, a
    destination where something would be overwritten."""
    fmt = destination_format(dst, format)
    base = os.path.basename(dst.rstrip("/" + os.sep))
    suffix = os.path.splitext(base)[1]
    if format is None and fmt == "tensorflow" and suffix and not TF_PREFIX_RE.search(base):
        raise UnsupportedError(f"{dst}: unknown destination suffix {suffix!r}; known: {KNOWN_SUFFIXES}. "
                               f"Add --format tensorflow to write a TensorFlow checkpoint with the prefix {dst}",
                               path=dst)
    if not force:
        existing = _existing(dst, fmt)
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise CheckpointError(f"{existing[0]} already exists{more}; pass --force to overwrite it", path=dst)
    return fmt


def _existing(dst: str, fmt: str) -> list[str]:
    """Files the conversion would replace."""
    if fmt == "tensorflow":
        found = [dst + ".index"] if os.path.exists(dst + ".index") else []
        return found + sorted(glob.glob(glob.escape(dst) + ".data-?????-of-?????"))
    if fmt == "safetensors":
        path = os.path.join(dst, "model.safetensors") if os.path.isdir(dst) else dst
        found = [p for p in (path, path + ".index.json") if os.path.exists(p)]
        stem = path[: -len(".safetensors")] if path.endswith(".safetensors") else None
        if stem is not None:
            found += sorted(glob.glob(glob.escape(stem) + "-?????-of-?????.safetensors"))
        return found
    return [dst] if os.path.exists(dst) else []


def _run_dcp(args: argparse.Namespace) -> int | None:
    """DCP directories (torch.distributed.checkpoint's FileSystemWriter format) in or out, or None."""
    src_is_dcp = os.path.isfile(os.path.join(args.src, ".metadata"))
    if not src_is_dcp and args.format != "dcp":
        return None
    from .. import distributed

    if src_is_dcp:
        check_destination(args.dst, "tensorflow", args.force)
        out = distributed.dcp_to_bundle(args.src, args.dst, allow_pickle=args.allow_pickle)
        print(f"{escape(os.fspath(args.src))} (dcp) -> {escape(out)} (tensorflow)")
    else:
        if os.path.exists(args.dst) and not args.force:
            raise CheckpointError(f"{args.dst} already exists; pass --force to overwrite it", path=args.dst)
        out = distributed.bundle_to_dcp(args.src, args.dst)
        print(f"{escape(os.fspath(args.src))} (tensorflow) -> {escape(out)} (dcp)")
    return 0


def run(args: argparse.Namespace) -> int:
    done = _run_dcp(args)
    if done is not None:
        return done
    try:
        name_map = parse_map(args.map)
        shard_size = parse_size(args.shard_size) if args.shard_size else None
    except ValueError as exc:
        args.parser.error(str(exc))
    check_destination(args.dst, args.format, args.force)
    with Progress("convert", enabled=progress_wanted(args)) as bar:
        result = convert(args.src, args.dst, format=args.format, map=name_map, dtype=args.dtype,
                         include=args.include, exclude=args.exclude, shard_size=shard_size,
                         progress=bar if bar.enabled else False, names=args.names, verify=not args.no_verify)
    if args.json:
        print_json({"source": os.fspath(result.source), "source_format": result.source_format,
                    "destination": os.fspath(result.destination), "format": result.format,
                    "files": [os.fspath(f) for f in result.files], "tensors": result.tensors,
                    "bytes": result.bytes, "names": result.names, "skipped": list(result.skipped),
                    "cast": list(result.cast), "verified": result.verified})
        return 0
    print(f"{escape(os.fspath(result.source))} ({result.source_format}) -> {escape(os.fspath(result.destination))} "
          f"({result.format})")
    renamed = sum(1 for dst, src in result.names.items() if dst != src)
    parts = [f"{result.tensors} tensors", human_bytes(result.bytes)]
    if renamed:
        parts.append(f"{renamed} renamed")
    if result.cast:
        parts.append(f"{len(result.cast)} cast to {args.dtype}")
    if result.skipped:
        parts.append(f"{len(result.skipped)} skipped")
    if len(result.files) > 2 or result.format == "safetensors" and len(result.files) > 1:
        parts.append(f"{len(result.files)} files")
    print(", ".join(parts) + (", verified" if result.verified else ", not verified"))
    return 0
