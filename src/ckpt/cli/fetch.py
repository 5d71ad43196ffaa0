"""``ckpt fetch``: download a pretrained archive once into the cache, check it, extract it safely, print its path."""

from __future__ import annotations

import argparse

from .._fetch import MAX_EXTRACT_BYTES, MAX_EXTRACT_FILES, fetch
from .._paths import local_path

EXAMPLES = """examples:
  ckpt fetch https://example.org/inception-2015-12-05.tgz
  ckpt fetch URL --sha256 1f2e...                     refuse a file with another SHA-256
  ckpt run "$(ckpt fetch URL)/classify_image_graph_def.pb" ...
  CKPT_CACHE=/data/cache ckpt fetch URL --no-extract  the archive itself, in another cache

Prints the extracted directory (or the file) on stdout; the progress bar goes to stderr. Once cached, nothing is
downloaded again (use --force). An interrupted download is resumed by the next run.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch", help="download and cache a pretrained archive (sha256 checked, resumable, safe extraction)",
        description="Download URL into the cache ($CKPT_CACHE, else ~/.cache/ckpt) unless it is there already, check "
                    "its SHA-256, extract .tar/.tgz/.tar.gz/.tar.bz2/.tar.xz/.zip archives safely (no absolute paths, "
                    "no '..', no links leading outside, no device files, bounded size and file count) and print "
                    "the path.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="an http:// or https:// URL")
    p.add_argument("--sha256", help="the expected SHA-256 of the file (64 hex digits)")
    p.add_argument("--cache-dir", help="cache directory (default: $CKPT_CACHE, else ~/.cache/ckpt)")
    p.add_argument("--no-extract", action="store_true", help="keep an archive as it is; print the file's path")
    p.add_argument("--force", action="store_true", help="download again even when cached")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--retries", type=int, default=3, help="resume an interrupted download this many times (3)")
    p.add_argument("--max-bytes", type=int, default=MAX_EXTRACT_BYTES,
                   help=f"most bytes an archive may extract to (default {MAX_EXTRACT_BYTES:,})")
    p.add_argument("--max-files", type=int, default=MAX_EXTRACT_FILES,
                   help=f"most members an archive may hold (default {MAX_EXTRACT_FILES:,})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cache = local_path(args.cache_dir, what="cache directory") if args.cache_dir else None
    path = fetch(args.url, sha256=args.sha256, cache_dir=cache, extract=not args.no_extract, force=args.force,
                 progress=False if args.quiet else None, retries=args.retries, max_bytes=args.max_bytes,
                 max_files=args.max_files)
    print(path)
    return 0
