"""Downloading and caching pretrained archives: :func:`fetch` (``ckpt fetch URL``).

This is the one place ckpt talks to the network; everywhere else a URL is refused (:func:`ckpt.local_path`).

The cache (``$CKPT_CACHE``, else ``~/.cache/ckpt``) holds, per URL, ``<key>-<name>`` (the file as downloaded, ``key``
a hash of the URL), ``<key>-<name>.json`` (its URL, size and sha256), and for an archive ``<key>-<name>.d/`` (what it
extracts to). While downloading, bytes go to ``<key>-<name>.part``; an interrupted download is resumed from there
with an HTTP ``Range`` request (guarded by ``If-Range`` on the server's ``ETag``/``Last-Modified``) by the next
attempt, within the same call (``retries``) or a later one. Once a URL is in the cache, nothing is downloaded: with
``sha256`` given, the cached file must have it; without, the hash recorded on the first download is used.

Archives (``.tar``, ``.tgz``/``.tar.gz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) are extracted member by member, never
with ``extractall``, into a temporary directory beside the final one, renamed into place when complete. A member is
refused (and nothing is left behind) when its name is absolute or has a ``..`` component, when it is a device, FIFO
or other special file, when it is a link whose target leads outside the archive (symbolic links: relative targets
that stay inside; hard links: to a regular file extracted before it), when it would be written through a link, and
when the archive holds more than ``max_files`` members or ``max_bytes`` bytes (counted as they are written, so a
header that lies does not help a decompression bomb). Files get mode 0644 (0755 when executable), directories 0755.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.parse
import zipfile
from pathlib import Path

from . import _fs
from ._lock import DirectoryLock
from .errors import (ChecksumMismatchError, CorruptCheckpointError, DownloadError, UnsafeArchiveError,
                     UnsupportedError)

__all__ = ["fetch", "cache_root", "MAX_EXTRACT_BYTES", "MAX_EXTRACT_FILES", "MAX_DOWNLOAD_BYTES"]

#: Default bound on the bytes an archive may extract to.
MAX_EXTRACT_BYTES = 16 << 30
#: Default bound on the number of members an archive may hold.
MAX_EXTRACT_FILES = 200_000
#: Default bound on a download's size.
MAX_DOWNLOAD_BYTES = 64 << 30

_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")


def cache_root(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``path``, else ``$CKPT_CACHE``, else ``~/.cache/ckpt``."""
    if path is None:
        path = os.environ.get("CKPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ckpt")
    return Path(path)


def _entry_name(url: str) -> str:
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    base = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "download"
    return f"{key}-{base[:100]}"


def _is_archive(name: str, path: Path) -> bool:
    lower = name.lower()
    if lower.endswith(_ARCHIVE_SUFFIXES):
        return True
    with open(path, "rb") as f:
        head = f.read(512)
    return head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04" or head[257:262] == b"ustar"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    _fs.write_atomic(str(path), json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------- progress


class _Progress:
    """tqdm when it is installed, else one self-overwriting stderr line; nothing when disabled."""

    def __init__(self, enabled: bool, name: str, total: int | None, initial: int) -> None:
        self._bar = None
        self._enabled = enabled
        self._name, self._total, self._done, self._shown = name, total, initial, -1
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._line()
            return
        self._bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                         file=sys.stderr, leave=True)

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled:
            self._line()

    def _line(self, end: str = "") -> None:
        mib = self._done >> 20
        if mib == self._shown and not end:
            return  # redraw once per MiB
        self._shown = mib
        total = f" / {self._total / 2**20:.1f} MiB" if self._total else ""
        pct = f" ({100 * self._done // self._total}%)" if self._total else ""
        print(f"\rdownloading {self._name}: {self._done / 2**20:.1f} MiB{total}{pct}", end=end, file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._enabled:
            self._line("\n")


# ---------------------------------------------------------------------------------------------- downloading


def _download(url: str, part: Path, *, timeout: float, retries: int, max_bytes: int, progress: bool,
              name: str) -> None:
    """Download ``url`` into ``part`` (resuming what is there); return when it holds the whole body."""
    validators_path = part.with_name(part.name + ".json")
    attempt = 0
    while True:
        try:
            if _download_once(url, part, validators_path, timeout=timeout, max_bytes=max_bytes, progress=progress,
                              name=name):
                return
            raise DownloadError(f"{url}: the connection closed before the whole file arrived; run again to resume",
                                path=str(part), retryable=True)
        except DownloadError as exc:
            if not exc.retryable:
                for leftover in (part, validators_path):  # nothing worth resuming
                    if leftover.exists():
                        leftover.unlink()
            if not exc.retryable or attempt >= retries:
                raise
        attempt += 1
        time.sleep(min(0.2 * attempt, 2.0))  # a short pause before resuming, not a timing assumption


def _download_once(url: str, part: Path, validators_path: Path, *, timeout: float, max_bytes: int, progress: bool,
                   name: str) -> bool:
    import http.client  # imported here: `import ckpt` stays light
    import urllib.error
    import urllib.request

    have = part.stat().st_size if part.exists() else 0
    validators = _read_json(validators_path) or {}
    if validators.get("url") != url:
        have, validators = 0, {}
    headers = {"User-Agent": "ckpt-fetch", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validators.get("etag") or validators.get("last_modified"):
            headers["If-Range"] = validators.get("etag") or validators["last_modified"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and validators.get("total") == have:
            return True  # the part file already holds everything
        if exc.code == 416:
            _remove(part)  # a part the server does not recognise: start over next time
            raise DownloadError(f"{url}: the server refused to resume ({exc.code} {exc.reason})", path=url,
                                retryable=True) from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", path=url,
                            retryable=exc.code >= 500 or exc.code == 429) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason})", path=url, retryable=True) from None
    with response:
        status = response.status
        if status == 206:
            match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                _remove(part)
                raise DownloadError(f"{url}: the server resumed at the wrong offset", path=url, retryable=True)
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        elif status == 200:
            have, mode = 0, "wb"  # the server ignores Range (or the file changed): from the start
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            validators = {"url": url, "etag": response.headers.get("ETag"),
                          "last_modified": response.headers.get("Last-Modified"), "total": total}
            _write_json(validators_path, validators)
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}", path=url)
        if total is not None and total > max_bytes:
            raise DownloadError(f"{url}: the file is {total:,} bytes, more than max_bytes={max_bytes:,}", path=url)
        bar = _Progress(progress, name, total, have)
        received = have
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        # IncompleteRead, a reset, a timeout: keep what arrived and resume.
                        partial = getattr(exc, "partial", b"")
                        if partial:
                            out.write(partial)
                            bar.update(len(partial))
                        raise DownloadError(f"{url}: download interrupted after {received + len(partial):,} bytes "
                                            f"({type(exc).__name__}); run again to resume", path=str(part),
                                            retryable=True) from None
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes or (total is not None and received > total):
                        raise DownloadError(f"{url}: the server sent more than "
                                            f"{min(max_bytes, total or max_bytes):,} bytes", path=url)
                    out.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    return total is None or received == total


# ---------------------------------------------------------------------------------------------- extracting


def _member_path(name: str, archive: Path) -> str:
    """A member name as a safe relative path (``/``-separated), or UnsafeArchiveError."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member name {name!r} contains a NUL byte", path=str(archive), key=name)
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"\A[A-Za-z]:", text):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; nothing was extracted",
                                 path=str(archive), key=name)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} leads outside the archive ('..'); nothing was "
                                 "extracted", path=str(archive), key=name)
    return "/".join(parts)


class _Extractor:
    def __init__(self, archive: Path, root: Path, *, max_bytes: int, max_files: int) -> None:
        self.archive, self.root = archive, root
        self.real_root = os.path.realpath(root)
        self.max_bytes, self.max_files = max_bytes, max_files
        self.written = 0
        self.count = 0
        self.files: set[str] = set()

    def fail(self, message: str, member: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive}: {message}; nothing was extracted", path=str(self.archive),
                                  key=member)

    def member(self, name: str) -> str:
        self.count += 1
        if self.count > self.max_files:
            raise self.fail(f"more than max_files={self.max_files:,} members", name)
        return _member_path(name, self.archive)

    def budget(self, declared: int, name: str) -> None:
        if declared < 0 or self.written + declared > self.max_bytes:
            raise self.fail(f"member {name!r} would take the extracted size past max_bytes={self.max_bytes:,} "
                            f"(declares {declared:,} bytes)", name)

    def _inside(self, path: str) -> bool:
        return path == self.real_root or path.startswith(self.real_root + os.sep)

    def destination(self, rel: str, name: str) -> str:
        dest = os.path.join(self.root, *rel.split("/"))
        parent = os.path.realpath(os.path.dirname(dest))  # resolves links met on the way
        if not self._inside(parent):
            raise self.fail(f"member {name!r} would be written through a link that leads outside", name)
        return dest

    def directory(self, rel: str, name: str) -> None:
        if not rel:
            return
        dest = self.destination(rel, name)
        if os.path.islink(dest):
            raise self.fail(f"member {name!r} would be written through a link", name)
        os.makedirs(dest, mode=0o755, exist_ok=True)
        if not self._inside(os.path.realpath(dest)):
            raise self.fail(f"member {name!r} would be written through a link that leads outside", name)

    def file(self, rel: str, name: str, source, *, declared: int, executable: bool) -> None:
        if not rel:
            raise self.fail(f"member {name!r} has an empty name", name)
        self.budget(declared, name)
        parent_rel = rel.rpartition("/")[0]
        self.directory(parent_rel, name)
        dest = self.destination(rel, name)
        if os.path.lexists(dest):
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise self.fail(f"member {name!r} is a file where a directory was extracted", name)
            os.unlink(dest)  # a later member replaces an earlier one, as tar does
        fd = _fs.create_new(dest, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise self.fail(f"member {name!r} takes the extracted size past max_bytes={self.max_bytes:,}",
                                    name)
                out.write(chunk)
        self.files.add(rel)

    def symlink(self, rel: str, name: str, target: str) -> None:
        text = target.replace("\\", "/")
        base = rel.rpartition("/")[0]
        resolved = os.path.normpath(os.path.join(base, text)) if base else os.path.normpath(text)
        if not text or text.startswith("/") or re.match(r"\A[A-Za-z]:", text) or resolved == ".." \
                or resolved.startswith("../"):
            raise self.fail(f"symbolic link {name!r} -> {target!r} leads outside the archive", name)
        self.directory(base, name)
        dest = self.destination(rel, name)
        if os.path.lexists(dest):
            raise self.fail(f"symbolic link {name!r} replaces another member", name)
        os.symlink(text, dest)
        if not self._inside(os.path.realpath(dest)):
            os.unlink(dest)
            raise self.fail(f"symbolic link {name!r} -> {target!r} leads outside the archive", name)

    def hardlink(self, rel: str, name: str, target: str) -> None:
        try:
            target_rel = _member_path(target, self.archive)
        except UnsafeArchiveError:
            raise self.fail(f"hard link {name!r} -> {target!r} leads outside the archive", name) from None
        if target_rel not in self.files:
            raise self.fail(f"hard link {name!r} -> {target!r} does not name a file extracted before it", name)
        source = self.destination(target_rel, name)
        if not self._inside(os.path.realpath(source)):
            raise self.fail(f"hard link {name!r} -> {target!r} leads outside the archive", name)
        with open(source, "rb") as f:  # a copy: the extracted tree holds no hard links
            self.file(rel, name, f, declared=os.path.getsize(source), executable=os.access(source, os.X_OK))

    def tar(self) -> None:
        with tarfile.open(self.archive, "r:*") as tar:
            while True:
                info = tar.next()
                if info is None:
                    break
                rel = self.member(info.name)
                if info.isdir():
                    self.directory(rel, info.name)
                elif info.isfile():
                    source = tar.extractfile(info)
                    self.file(rel, info.name, source, declared=info.size, executable=bool(info.mode & 0o111))
                elif info.issym():
                    self.symlink(rel, info.name, info.linkname)
                elif info.islnk():
                    self.hardlink(rel, info.name, info.linkname)
                else:
                    kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                            tarfile.FIFOTYPE: "FIFO"}.get(info.type, f"special file (type {info.type!r})")
                    raise self.fail(f"member {info.name!r} is a {kind}", info.name)

    def zip(self) -> None:
        with zipfile.ZipFile(self.archive) as zf:
            infos = zf.infolist()
            if len(infos) > self.max_files:
                raise self.fail(f"{len(infos):,} members, more than max_files={self.max_files:,}", infos[0].filename)
            declared = sum(i.file_size for i in infos)
            if declared > self.max_bytes:
                raise self.fail(f"the members declare {declared:,} bytes, more than max_bytes={self.max_bytes:,}",
                                infos[0].filename)
            for info in infos:
                rel = self.member(info.filename)
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if info.is_dir():
                    self.directory(rel, info.filename)
                elif kind in (0, stat.S_IFREG):
                    with zf.open(info) as source:
                        self.file(rel, info.filename, source, declared=info.file_size,
                                  executable=bool(mode & 0o111))
                elif kind == stat.S_IFLNK:
                    raise self.fail(f"member {info.filename!r} is a symbolic link (not extracted from zip files)",
                                    info.filename)
                else:
                    raise self.fail(f"member {info.filename!r} is a special file", info.filename)


def _extract(archive: Path, final: Path, *, max_bytes: int, max_files: int) -> None:
    tmp = Path(_fs.make_temp_dir(final.parent, prefix=f".{final.name}."))
    try:
        ex = _Extractor(archive, tmp, max_bytes=max_bytes, max_files=max_files)
        try:
            if zipfile.is_zipfile(archive):
                ex.zip()
            else:
                ex.tar()
        except UnsafeArchiveError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError) as exc:
            # zlib/lzma/bz2 errors are OSError or EOFError ("Compressed file ended before the end-of-stream marker")
            raise CorruptCheckpointError(f"{archive}: not a readable archive, or a truncated one "
                                         f"({type(exc).__name__}: {exc}); nothing was extracted",
                                         path=str(archive)) from None
        os.chmod(tmp, 0o755)
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- the API


def fetch(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None, extract: bool = True,
          force: bool = False, progress: bool | None = None, retries: int = 3, timeout: float = 60.0,
          max_bytes: int = MAX_EXTRACT_BYTES, max_files: int = MAX_EXTRACT_FILES,
          max_download_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` once into the cache, check it and (for an archive) extract it safely; return where it is.

    Args:
        url: An ``http://`` or ``https://`` URL.
        sha256: The file's expected SHA-256 (hex). Checked after the download and on every later use; without it,
            the hash of the first download is recorded and later uses are checked against that.
        cache_dir: The cache directory; default ``$CKPT_CACHE``, else ``~/.cache/ckpt``.
        extract: Extract archives (``.tar``, ``.tgz``, ``.tar.gz/.bz2/.xz``, ``.zip``) and return the directory;
            False returns the downloaded file itself.
        force: Download again even when cached.
        progress: Show a progress bar on stderr (tqdm when installed); default: when stderr is a terminal.
        retries: How many times an interrupted download is resumed within this call.
        timeout: Seconds a connection may stay silent.
        max_bytes: Most bytes an archive may extract to.
        max_files: Most members an archive may hold.
        max_download_bytes: Largest file downloaded.

    Returns:
        The extracted directory (archives, with ``extract=True``), else the downloaded file.

    Raises:
        UnsupportedError: not an http(s) URL.
        DownloadError: the server could not be reached or refused; an interrupted download stays in the cache
            and the next call resumes it.
        ChecksumMismatchError: the file does not have the expected SHA-256 (it is not kept).
        UnsafeArchiveError: an archive member with an absolute path, ``..``, a link leading outside, a device file,
            or too many files or bytes; nothing is extracted.
        CorruptCheckpointError: a truncated or unreadable archive (it is not kept).

    Example:
        >>> root = ckpt.fetch("https://example.org/inception-2015-12-05.tgz")            # doctest: +SKIP
        >>> graph = ckpt.graph.load(root / "classify_image_graph_def.pb")
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsupportedError(f"{url}: ckpt fetch downloads http:// and https:// URLs only", path=url)
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _SHA256.match(sha256):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, not {sha256!r}")
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    entry = _entry_name(url)
    file = root / entry
    record_path = root / f"{entry}.json"
    part = root / f"{entry}.part"
    extracted = root / f"{entry}.d"
    if progress is None:
        progress = sys.stderr.isatty()
    with DirectoryLock(root):
        record = _read_json(record_path)
        cached = (not force and record is not None and record.get("url") == url and file.is_file()
                  and (sha256 is None or record.get("sha256") == sha256))
        if cached:
            want = record.get("sha256")
            if extract and record.get("archive"):
                if extracted.is_dir():
                    return extracted  # extracted from this very file: the rename happens only when complete
            if _sha256_file(file) != want:
                _remove(file)
                record_path.unlink()
                cached = False  # damaged in the cache: download again
            else:
                return _finish(file, record, extracted, extract=extract, max_bytes=max_bytes, max_files=max_files)
        for stale in (file, record_path, extracted):
            if os.path.lexists(stale):
                _remove(stale)
        _download(url, part, timeout=timeout, retries=retries, max_bytes=max_download_bytes, progress=progress,
                  name=entry.split("-", 1)[1])
        got = _sha256_file(part)
        if sha256 is not None and got != sha256:
            _remove(part)
            _remove(part.with_name(part.name + ".json"))
            raise ChecksumMismatchError(f"{url}: the download has SHA-256 {got}, expected {sha256}; it was not kept",
                                        path=url, expected=sha256, found=got)
        os.replace(part, file)
        _remove(part.with_name(part.name + ".json"))
        record = {"url": url, "sha256": got, "size": file.stat().st_size, "archive": _is_archive(entry, file)}
        _write_json(record_path, record)
        try:
            return _finish(file, record, extracted, extract=extract, max_bytes=max_bytes, max_files=max_files)
        except UnsafeArchiveError:
            raise  # what the URL serves: kept, so later calls fail the same way without the network
        except CorruptCheckpointError:
            _remove(file)  # a truncated archive is of no use: the next call downloads it again
            record_path.unlink()
            raise


def _finish(file: Path, record: dict, extracted: Path, *, extract: bool, max_bytes: int, max_files: int) -> Path:
    if not (extract and record.get("archive")):
        return file
    if not extracted.is_dir():
        _extract(file, extracted, max_bytes=max_bytes, max_files=max_files)
    return extracted
