"""Encoders behind the summary writer: PNG, WAV, TensorFlow's histogram buckets and the hparams plugin messages.

PNG and WAV are written with the standard library (zlib, wave) so no imaging or audio package is needed. The
hparams plugin messages are a handful of protobuf fields, encoded and decoded by hand at the wire level rather than
vendoring TensorBoard's protos.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
import zlib
from typing import Any

import numpy as np

from ..tf._varint import VarintError, decode_varint, encode_varint

# --- images -----------------------------------------------------------------------------------------------------

_PNG_COLOR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def image_array(tag: str, image: Any, dataformats: str = "HWC") -> np.ndarray:
    """``image`` as a ``uint8`` HxWxC array (C in 1..4). Floats are taken as [0, 1] and scaled, as TensorBoard does.

    Raises:
        ValueError / TypeError: a shape, layout or dtype TensorBoard cannot show, naming ``tag``.
    """
    if not isinstance(dataformats, str) or sorted(dataformats) not in (sorted("HW"), sorted("HWC")):
        raise ValueError(f"summary image {tag!r}: dataformats must be a permutation of 'HWC' or 'HW', "
                         f"not {dataformats!r}")
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if arr.ndim != len(dataformats):
        raise ValueError(f"summary image {tag!r}: expected {len(dataformats)} dimensions ({dataformats}), "
                         f"got shape {arr.shape}")
    if dataformats.upper() != dataformats:
        raise ValueError(f"summary image {tag!r}: dataformats must be upper case, not {dataformats!r}")
    arr = np.transpose(arr, [dataformats.index(c) for c in "HWC" if c in dataformats])
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    if c not in _PNG_COLOR:
        raise ValueError(f"summary image {tag!r}: {c} channels; expected 1 (grey), 2, 3 (RGB) or 4 (RGBA)")
    if h == 0 or w == 0 or h >= 1 << 31 or w >= 1 << 31:
        raise ValueError(f"summary image {tag!r}: empty or oversized image of shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"summary image {tag!r}: contains NaN or infinity")
        return np.ascontiguousarray(np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8))
    if arr.dtype.kind in "iub" and arr.dtype != np.bool_:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"summary image {tag!r}: integer values outside 0..255 (dtype {arr.dtype})")
        return np.ascontiguousarray(arr.astype(np.uint8))
    raise TypeError(f"summary image {tag!r}: dtype {arr.dtype} is not an image type (uint8, integers in 0..255 "
                    f"or floats in [0, 1])")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8`` HxWxC array (8 bits per channel, no filtering)."""
    h, w, c = arr.shape
    rows = np.empty((h, 1 + w * c), np.uint8)
    rows[:, 0] = 0  # filter type None on every scanline
    rows[:, 1:] = arr.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to an array with Pillow (installed separately: ``pip install pillow``)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("decoding images needs Pillow: pip install pillow") from None
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


# --- audio ------------------------------------------------------------------------------------------------------

def audio_array(tag: str, samples: Any) -> np.ndarray:
    """``samples`` as a float frames x channels array in [-1, 1] (a 1-D input is mono)."""
    arr = np.asarray(samples.detach().cpu().numpy() if hasattr(samples, "detach") else samples)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"summary audio {tag!r}: expected [frames] or [frames, channels], got shape {arr.shape}")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"summary audio {tag!r}: dtype {arr.dtype}; expected floats in [-1, 1]")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"summary audio {tag!r}: contains NaN or infinity")
    return np.clip(arr, -1.0, 1.0)


def encode_wav(arr: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of a frames x channels float array, as ``tf.audio.encode_wav`` writes them."""
    pcm = np.round(arr * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(arr.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def wav_info(data: bytes) -> tuple[int, int, int] | None:
    """(sample_rate, channels, frames) of WAV bytes, or None when they are not a WAV file Python can parse."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return w.getframerate(), w.getnchannels(), w.getnframes()
    except (wave.Error, EOFError, struct.error, ValueError):
        return None


# --- histograms -------------------------------------------------------------------------------------------------

def _default_limits() -> np.ndarray:
    """TensorFlow's default bucket limits (core/lib/histogram/histogram.cc): +-1e-12 growing by 1.1 to 1e20, 0,
    and DBL_MAX as the last limit."""
    pos = []
    v = 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    return np.array([-x for x in reversed(pos)] + [0.0] + pos + [sys.float_info.max], np.float64)


DEFAULT_LIMITS = _default_limits()


def histogram_fields(values: Any, limits: np.ndarray | None = None) -> dict[str, Any]:
    """The ``HistogramProto`` fields TensorFlow's ``Histogram::EncodeToProto`` writes for ``values``: min, max,
    num, sum, sum_squares, and runs of empty buckets collapsed into one (keeping the run's last limit).

    NaN values are counted in ``num`` and poison ``sum`` the way TensorFlow's do; infinities land in the edge
    buckets."""
    limits = DEFAULT_LIMITS if limits is None else np.asarray(limits, np.float64)
    flat = np.asarray(values, np.float64).ravel()
    counts = np.zeros(len(limits), np.float64)
    if flat.size:
        idx = np.searchsorted(limits, flat, side="right")  # std::upper_bound
        np.add.at(counts, np.minimum(idx, len(limits) - 1), 1.0)
        lo, hi = float(np.min(flat)), float(np.max(flat))
    else:
        lo, hi = sys.float_info.max, -sys.float_info.max  # TensorFlow's Clear() values
    out_limits, out_counts = [], []
    i, n = 0, len(counts)
    while i < n:
        end, count = limits[i], counts[i]
        i += 1
        if count <= 0.0:
            while i < n and counts[i] <= 0.0:
                end, count = limits[i], counts[i]
                i += 1
        out_limits.append(float(end))
        out_counts.append(float(count))
    return {"min": lo, "max": hi, "num": float(flat.size), "sum": float(np.sum(flat)),
            "sum_squares": float(np.dot(flat, flat)), "bucket_limit": out_limits, "bucket": out_counts}


# --- hparams plugin (tensorboard/plugins/hparams/plugin_data.proto) ------------------------------------------------

def _key(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _len(field: int, data: bytes) -> bytes:
    return _key(field, 2) + encode_varint(len(data)) + data


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _value(v: Any) -> bytes:
    """google.protobuf.Value: bool_value=4, number_value=2, string_value=3."""
    if isinstance(v, (bool, np.bool_)):
        return _key(4, 0) + encode_varint(1 if v else 0)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return _double(2, float(v))
    return _len(3, str(v).encode("utf-8"))


def encode_session_start(hparams: dict[str, Any], *, start_time: float, group_name: str = "") -> bytes:
    """``HParamsPluginData{version: 0, session_start_info: {hparams, group_name, start_time_secs}}``."""
    info = b"".join(_len(1, _len(1, str(k).encode("utf-8")) + _len(2, _value(v))) for k, v in hparams.items())
    if group_name:
        info += _len(4, group_name.encode("utf-8"))
    info += _double(5, start_time)
    return _len(3, info)


def encode_session_end(*, end_time: float, status: int = 1) -> bytes:
    """``HParamsPluginData{session_end_info: {status: STATUS_SUCCESS, end_time_secs}}``."""
    return _len(4, _key(1, 0) + encode_varint(status) + _double(2, end_time))


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field, wire type, value) of each field in a protobuf message; ValueError on malformed input."""
    out, pos, end = [], 0, len(buf)
    try:
        while pos < end:
            key, pos = decode_varint(buf, pos, end)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decode_varint(buf, pos, end)
            elif wire == 1:
                if pos + 8 > end:
                    raise ValueError("truncated fixed64")
                value, pos = buf[pos:pos + 8], pos + 8
            elif wire == 2:
                n, pos = decode_varint(buf, pos, end)
                if pos + n > end:
                    raise ValueError("truncated length-delimited field")
                value, pos = buf[pos:pos + n], pos + n
            elif wire == 5:
                if pos + 4 > end:
                    raise ValueError("truncated fixed32")
                value, pos = buf[pos:pos + 4], pos + 4
            else:
                raise ValueError(f"unsupported wire type {wire}")
            out.append((field, wire, value))
    except VarintError as exc:
        raise ValueError(str(exc)) from None
    return out


def _decode_value(buf: bytes) -> Any:
    for field, wire, raw in _fields(buf):
        if field == 2 and wire == 1:
            num = struct.unpack("<d", raw)[0]
            return int(num) if math.isfinite(num) and num.is_integer() and abs(num) < 2 ** 53 else num
        if field == 3 and wire == 2:
            return bytes(raw).decode("utf-8", "replace")
        if field == 4 and wire == 0:
            return bool(raw)
        if field == 1:
            return None
    return None


def decode_hparams(content: bytes) -> tuple[str, dict[str, Any]]:
    """Decode an hparams plugin payload: ``("session_start_info", {"hparams": {...}, ...})``,
    ``("session_end_info", {"status": int, "end_time_secs": float})`` or ``("experiment", {"raw": bytes})``.

    Raises:
        ValueError: malformed bytes.
    """
    for field, wire, raw in _fields(content):
        if field == 3 and wire == 2:
            info: dict[str, Any] = {"hparams": {}, "group_name": "", "start_time_secs": 0.0}
            for f, w, r in _fields(raw):
                if f == 1 and w == 2:
                    key, value = "", None
                    for ef, ew, er in _fields(r):
                        if ef == 1 and ew == 2:
                            key = bytes(er).decode("utf-8", "replace")
                        elif ef == 2 and ew == 2:
                            value = _decode_value(er)
                    info["hparams"][key] = value
                elif f == 4 and w == 2:
                    info["group_name"] = bytes(r).decode("utf-8", "replace")
                elif f == 5 and w == 1:
                    info["start_time_secs"] = struct.unpack("<d", r)[0]
            return "session_start_info", info
        if field == 4 and wire == 2:
            end: dict[str, Any] = {"status": 0, "end_time_secs": 0.0}
            for f, w, r in _fields(raw):
                if f == 1 and w == 0:
                    end["status"] = r
                elif f == 2 and w == 1:
                    end["end_time_secs"] = struct.unpack("<d", r)[0]
            return "session_end_info", end
        if field == 2 and wire == 2:
            return "experiment", {"raw": bytes(raw)}
    return "unknown", {}
