"""Images and labels for pretrained classifiers: TensorFlow's ``DecodeJpeg`` without TensorFlow, and label maps.

:func:`decode_jpeg` gives the pixels ``tf.io.decode_jpeg`` gives, bit for bit. It uses Pillow (``pip install
ckpt[image]``), imported when called; Pillow and TensorFlow both decode with libjpeg-turbo, and the settings are
matched to TensorFlow's:

* ``dct_method`` ``""`` (TensorFlow's default) and ``"INTEGER_FAST"`` are libjpeg's ``JDCT_IFAST``;
  ``"INTEGER_ACCURATE"`` is ``JDCT_ISLOW``. Pillow's normal decode is ``JDCT_ISLOW`` with fancy upsampling; its
  draft decode (``decoderconfig = (scale, 1)``) is ``JDCT_IFAST`` without fancy upsampling.
* With ``fancy_upscaling=True`` (the default) and subsampled chroma (4:2:0, 4:2:2, 4:4:0), TensorFlow's default
  (IFAST and fancy upsampling) is a combination Pillow cannot ask libjpeg for. It is rebuilt: the draft decode
  in YCbCr gives the IFAST Y plane and the chroma samples (replicated), then libjpeg's triangle-filter
  upsampling (``jdsample.c``) and its fixed-point YCbCr->RGB tables (``jdcolor.c``) are applied in NumPy.
* ``channels=1`` on a colour JPEG is libjpeg's grayscale output (the Y plane), ``channels=3`` on a gray JPEG
  repeats the plane, ``ratio`` 2/4/8 is libjpeg's DCT scaling (``scale_denom``).

Not supported (a clear error): CMYK/YCCK JPEGs, ``try_recover_truncated``, ``INTEGER_ACCURATE`` without fancy
upsampling on subsampled colour images, and inputs that are not JPEG.

:func:`load_labels` reads the label files pretrained archives ship (``imagenet_2012_challenge_label_map_proto.pbtxt``
plus ``imagenet_synset_to_human_label_map.txt``, or a retrained model's ``output_labels.txt``); :func:`top_k`
pairs the best scores with them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping

import numpy as np

from ..errors import CheckpointNotFoundError, CorruptCheckpointError, FeedError, UnsupportedError

__all__ = ["decode_jpeg", "load_labels", "top_k", "MAX_IMAGE_PIXELS"]

#: Larger images are refused before decoding (TensorFlow's own limit is 65500 per side).
MAX_IMAGE_PIXELS = 1 << 28
_PIXELS_PER_BYTE = 1024  # twice what a 1-bit DC code per block per component can encode

_DCT_METHODS = ("", "INTEGER_FAST", "INTEGER_ACCURATE")


def _pillow():
    try:
        from PIL import Image, JpegImagePlugin  # noqa: F401  (registers the JPEG decoder)
    except ImportError:
        raise UnsupportedError("decoding JPEG images needs Pillow: pip install ckpt[image]") from None
    return Image


def _open(data: bytes, where: str):
    Image = _pillow()
    if not data.startswith(b"\xff\xd8"):
        raise FeedError(f"{where}: the value is not a JPEG image (it does not start with the JPEG marker FFD8)",
                        key=where)
    try:
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged headers
        raise FeedError(f"{where}: invalid JPEG data: {exc}", key=where) from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise FeedError(f"{where}: a {w}x{h} image is larger than the {MAX_IMAGE_PIXELS}-pixel limit", key=where)
    # Every 8x8 block takes at least a bit of entropy-coded data (the DC code), so a header promising far more
    # pixels than the bytes can hold is refused before the pixel buffer is allocated.
    if w * h > _PIXELS_PER_BYTE * len(data) + (1 << 20):
        raise FeedError(f"{where}: invalid JPEG data: a {w}x{h} header with only {len(data)} bytes of data",
                        key=where)
    if im.mode not in ("L", "RGB"):
        raise UnsupportedError(f"{where}: {im.mode} JPEG images are not supported (only grayscale and YCbCr)")
    return im


def _load(im, where: str) -> np.ndarray:
    try:
        im.load()
    except Exception as exc:  # truncated or damaged scans
        raise FeedError(f"{where}: invalid JPEG data: {exc}", key=where) from None
    array = np.asarray(im)
    return array if array.ndim == 3 else array[..., None]


# libjpeg's fixed-point YCbCr -> RGB tables (jdcolor.c, build_ycc_rgb_table): SCALEBITS 16, rounded.
_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


_X = np.arange(256, dtype=np.int64) - 128
_CR_R = (_fix(1.40200) * _X + _ONE_HALF) >> _SCALEBITS
_CB_B = (_fix(1.77200) * _X + _ONE_HALF) >> _SCALEBITS
_CR_G = -_fix(0.71414) * _X
_CB_G = -_fix(0.34414) * _X + _ONE_HALF


def _ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    y = y.astype(np.int64)
    r = y + _CR_R[cr]
    g = y + ((_CB_G[cb] + _CR_G[cr]) >> _SCALEBITS)
    b = y + _CB_B[cb]
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _upsample_h2(plane: np.ndarray) -> np.ndarray:
    """jdsample.c h2v1_fancy_upsample: each output is 3/4 the nearer sample + 1/4 the farther, edges copied."""
    p = plane.astype(np.int64)
    left = np.concatenate([p[:, :1], p[:, :-1]], axis=1)
    right = np.concatenate([p[:, 1:], p[:, -1:]], axis=1)
    out = np.empty((p.shape[0], p.shape[1] * 2), np.int64)
    out[:, 0::2] = (p * 3 + left + 1) >> 2
    out[:, 1::2] = (p * 3 + right + 2) >> 2
    out[:, 0] = p[:, 0]
    out[:, -1] = p[:, -1]
    return out


def _upsample_h2v2(plane: np.ndarray) -> np.ndarray:
    """jdsample.c h2v2_fancy_upsample: vertical 3:1 column sums, then horizontal 3:1 with alternating rounding."""
    p = plane.astype(np.int64)
    above = np.concatenate([p[:1], p[:-1]], axis=0)
    below = np.concatenate([p[1:], p[-1:]], axis=0)
    rows = np.empty((p.shape[0] * 2, p.shape[1]), np.int64)
    rows[0::2] = p * 3 + above
    rows[1::2] = p * 3 + below
    left = np.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    right = np.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out = np.empty((rows.shape[0], rows.shape[1] * 2), np.int64)
    out[:, 0::2] = (rows * 3 + left + 8) >> 4
    out[:, 1::2] = (rows * 3 + right + 7) >> 4
    out[:, 0] = (rows[:, 0] * 4 + 8) >> 4
    out[:, -1] = (rows[:, -1] * 4 + 7) >> 4
    return out


def _upsample_v2(plane: np.ndarray) -> np.ndarray:
    """jdsample.c h1v2_fancy_upsample (libjpeg-turbo, 4:4:0): vertical 3:1 with rounding 1 and 2."""
    p = plane.astype(np.int64)
    above = np.concatenate([p[:1], p[:-1]], axis=0)
    below = np.concatenate([p[1:], p[-1:]], axis=0)
    out = np.empty((p.shape[0] * 2, p.shape[1]), np.int64)
    out[0::2] = (p * 3 + above + 1) >> 2
    out[1::2] = (p * 3 + below + 2) >> 2
    return out


def decode_jpeg(data: bytes, *, channels: int = 0, ratio: int = 1, fancy_upscaling: bool = True,
                dct_method: str = "", where: str = "DecodeJpeg") -> np.ndarray:
    """Decode a JPEG as ``tf.io.decode_jpeg`` does (same arguments; see the module docstring for how).

    Args:
        data: The JPEG file's bytes.
        channels: 0 (as in the file), 1 (grayscale) or 3 (RGB).
        ratio: Downscaling factor, 1, 2, 4 or 8.
        fancy_upscaling: libjpeg's smooth chroma upsampling (TensorFlow's default); False replicates samples.
        dct_method: ``""`` (TensorFlow's default, ``INTEGER_FAST``), ``"INTEGER_FAST"`` or ``"INTEGER_ACCURATE"``.
        where: Names the operation in errors.

    Returns:
        A ``uint8`` array of shape ``[height, width, channels]``.

    Raises:
        FeedError: the bytes are not a (complete) JPEG, or the image is too large.
        UnsupportedError: Pillow is missing, or an image or option listed as unsupported above.
    """
    if channels not in (0, 1, 3):
        raise UnsupportedError(f"{where}: channels={channels} (TensorFlow accepts 0, 1 and 3)")
    if ratio not in (1, 2, 4, 8):
        raise UnsupportedError(f"{where}: ratio={ratio} (TensorFlow accepts 1, 2, 4 and 8)")
    if dct_method not in _DCT_METHODS:
        raise UnsupportedError(f"{where}: dct_method={dct_method!r} (TensorFlow accepts '', 'INTEGER_FAST' and "
                               "'INTEGER_ACCURATE')")
    data = bytes(data)
    im = _open(data, where)
    gray_file = im.mode == "L"
    fast = dct_method != "INTEGER_ACCURATE"
    w, h = im.size
    size = None if ratio == 1 else (max(w // ratio, 1), max(h // ratio, 1))
    want_gray = channels == 1 or (channels == 0 and gray_file)
    # Which components were subsampled (JpegImagePlugin records (id, h, v, table) per component).
    factors = [(c[1], c[2]) for c in getattr(im, "layer", [])] or [(1, 1)]
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    subsampled = not gray_file and not want_gray and any(f != (hmax, vmax) for f in factors)
    ratios = {(hmax // f[0], vmax // f[1]) for f in factors[1:]} if subsampled else set()
    if ratio > 1:
        # DCT scaling: libjpeg's reduced-size IDCTs (which ignore dct_method) make the image smaller; chroma
        # subsampled 2x2 is scaled up by the IDCT instead of upsampled (jdmaster.c). At ratio 2 that IDCT is the
        # full-size one: dct_method counts and no upsampling is left. Otherwise only the upsampling counts.
        if any(r > 2 for pair in ratios for r in pair):
            raise UnsupportedError(f"{where}: ratio={ratio} with chroma subsampling {factors}")
        im.draft("L" if want_gray and not gray_file else None, size)
        scale = im.decoderconfig[0]
        if scale != ratio or im.size != (-(-w // ratio), -(-h // ratio)):
            raise UnsupportedError(f"{where}: a {w}x{h} image cannot be scaled by 1/{ratio} exactly as TensorFlow "
                                   "does")
        by_dct = ratio == 2 and ratios == {(2, 2)}
        im.decoderconfig = (scale, (1 if fast else 0) if by_dct else (0 if fancy_upscaling else 1))
        out = _load(im, where)
    elif not subsampled or not fancy_upscaling or not fast:
        if not fast and subsampled and not fancy_upscaling:
            raise UnsupportedError(f"{where}: dct_method='INTEGER_ACCURATE' with fancy_upscaling=False on a "
                                   "subsampled colour JPEG")
        if want_gray and not gray_file:
            im.draft("L", None)
        # decoderconfig = (scale, draft): draft decoding is JDCT_IFAST without fancy upsampling, else JDCT_ISLOW.
        im.decoderconfig = (1, 1 if fast else 0)
        out = _load(im, where)
    else:  # IFAST + fancy upsampling of subsampled chroma: rebuilt from the draft YCbCr decode
        im.draft("YCbCr", None)
        im.decoderconfig = (1, 1)
        ycc = _load(im, where)
        if len(ratios) != 1 or factors[0] != (hmax, vmax) or next(iter(ratios)) not in ((2, 1), (2, 2), (1, 2)):
            raise UnsupportedError(f"{where}: chroma subsampling {factors} is not supported with fancy upsampling")
        hr, vr = next(iter(ratios))
        up = {(2, 1): _upsample_h2, (2, 2): _upsample_h2v2, (1, 2): _upsample_v2}[(hr, vr)]
        if hr == 2 and -(-w // 2) <= 2:  # jdsample.c: no fancy h2v1/h2v2 upsampling of 1- or 2-sample-wide chroma
            planes = [ycc[..., 1], ycc[..., 2]]
        else:
            planes = [up(ycc[::vr, ::hr, c])[:h, :w] for c in (1, 2)]
        out = _ycc_to_rgb(ycc[..., 0], planes[0], planes[1])
    if channels == 3 and out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------------------------- labels

_ENTRY = re.compile(r"target_class\s*:\s*(\d+)\s+target_class_string\s*:\s*\"([^\"]*)\"")
_MAX_LABEL_BYTES = 64 << 20


def _read_text(path: str | os.PathLike) -> str:
    try:
        size = os.path.getsize(path)
        if size > _MAX_LABEL_BYTES:
            raise CorruptCheckpointError(f"{path}: {size} bytes is too large for a label file", path=str(path))
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"no label file {path}", path=str(path)) from None


def load_labels(*paths: str | os.PathLike) -> dict[int, str]:
    """Class index -> human-readable label, from the label files a pretrained model ships.

    Each file is one of: a label-map proto in text format (``entry { target_class: 449 target_class_string:
    "n01440764" }``, as ``imagenet_2012_challenge_label_map_proto.pbtxt``), which maps indices to keys; a
    tab-separated key -> label file (``n01440764\\ttench, Tinca tinca``, as
    ``imagenet_synset_to_human_label_map.txt``), which renames keys; or one label per line (a retrained model's
    ``output_labels.txt``), line ``i`` naming class ``i``. Files apply in order, so
    ``load_labels("…label_map_proto.pbtxt", "…synset_to_human_label_map.txt")`` gives ``{449: "tench, Tinca
    tinca", ...}`` as ``classify_image.py``'s NodeLookup does.

    Raises:
        CheckpointNotFoundError: a file does not exist.
        CorruptCheckpointError: a file is none of these, or a renaming file comes first.
    """
    labels: dict[int, str] | None = None
    for path in paths:
        text = _read_text(path)
        entries = _ENTRY.findall(text)
        lines = [line.rstrip("\r") for line in text.split("\n")]
        pairs = [line.split("\t", 1) for line in lines if "\t" in line]
        if not entries and str(path).endswith(".pbtxt"):
            raise CorruptCheckpointError(f"{path}: no 'entry {{ target_class: N target_class_string: \"...\" }}' in "
                                         "this label map", path=str(path))
        if entries or labels is None and not pairs:
            if labels is not None:
                raise CorruptCheckpointError(f"{path}: a second file of class indices (only the first file maps "
                                             "indices; the ones after it rename)", path=str(path))
            if entries:
                labels = {int(k): v for k, v in entries}
                continue
            while lines and not lines[-1].strip():
                lines.pop()
            if not lines:
                raise CorruptCheckpointError(f"{path}: an empty label file", path=str(path))
            labels = {i: line.strip() for i, line in enumerate(lines)}
        elif pairs and len(pairs) >= 0.9 * sum(1 for line in lines if line.strip()):
            mapping = {k.strip(): v.strip() for k, v in pairs}
            if labels is None:
                raise CorruptCheckpointError(f"{path}: a key -> label file needs a file mapping class indices to "
                                             "keys before it (a *_label_map_proto.pbtxt)", path=str(path))
            labels = {i: mapping.get(v, v) for i, v in labels.items()}
        else:
            raise CorruptCheckpointError(f"{path}: not a label file (a label-map .pbtxt, key<TAB>label lines, or "
                                         "one label per line)", path=str(path))
    return labels or {}


def top_k(scores, k: int = 5, labels: Mapping[int, str] | None = None) -> list[list[tuple[int, float, str]]]:
    """The ``k`` best classes per row of ``scores`` (``[classes]`` or ``[batch, classes]``), best first.

    Returns:
        Per row, ``(class index, score, label)`` tuples; the label is ``labels[index]``, or ``""`` when
        ``labels`` has none for it (classify_image.py prints ``''`` too).
    """
    array = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores)
    if array.ndim == 0 or array.dtype.kind not in "fiu":
        raise ValueError(f"top_k needs numeric scores of shape [classes] or [batch, classes], got {array.shape} "
                         f"{array.dtype}")
    rows = array.reshape(-1, array.shape[-1])
    out = []
    for row in rows:
        order = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        out.append([(int(i), float(row[i]), (labels or {}).get(int(i), "")) for i in order])
    return out

