"""Where every path a user gives ckpt is checked first: the one seam for remote storage.

ckpt reads and writes local files only. A path with a URL scheme (``s3://bucket/run``, ``gs://``, ``hf://``,
``http(s)://``, ``az://``, any ``scheme://``) is refused with :class:`~ckpt.errors.UnsupportedError` before anything
is read or written: left alone it would silently become a local folder named ``s3:``. ``file://`` URLs are local
paths and are accepted: ``file:///abs/path`` and ``file://localhost/abs/path`` mean ``/abs/path`` (percent-escapes
decoded as RFC 8089 says); a ``file://`` URL naming another host is refused. When remote storage comes, this is
where a path turns into a file system (e.g. ``fsspec``).
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import unquote

from .errors import UnsupportedError

__all__ = ["local_path", "url_scheme"]

# RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). On Windows "C://x" is a drive, not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://" if sys.platform != "win32" else
                     r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# pathlib collapses "s3://b/k" into "s3:/b/k": for path objects, a scheme followed by one slash counts too.
_PATHLIB_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


def url_scheme(path: str | os.PathLike) -> str | None:
    """The URL scheme of ``path`` (``"s3"``), or None for a plain local path."""
    text = os.fsdecode(os.fspath(path))
    found = _SCHEME.match(text) or (_PATHLIB_SCHEME.match(text) if not isinstance(path, (str, bytes)) else None)
    return found.group(1).lower() if found else None


def local_path(path: str | os.PathLike, *, what: str = "path") -> str:
    """``path`` as a local file-system path (``str``), or UnsupportedError for a URL ckpt cannot reach.

    Args:
        path: What the user passed (str, bytes or ``os.PathLike``).
        what: How to call it in the error (``"checkpoint"``, ``"directory"``...).
    """
    fspath = os.fspath(path)
    text = os.fsdecode(fspath)
    scheme = url_scheme(path)
    if scheme is None:
        return text if isinstance(fspath, bytes) else fspath
    if scheme == "file":
        rest = text[len("file://"):] if text[:7].lower() == "file://" else text[len("file:"):]
        host, slash, tail = rest.partition("/")
        if host in ("", "localhost") and slash:
            return unquote("/" + tail)
        raise UnsupportedError(f"{text}: a file:// URL must name a local path (file:///abs/path); host {host!r} "
                               "is not this machine", path=text)
    raise UnsupportedError(
        f"{text}: {scheme}:// URLs are not supported yet; ckpt reads and writes local files only, and nothing was "
        f"read or written. Copy the {what} to a local path first (e.g. with your storage's command-line tool).",
        path=text)
