"""Stage 1 of the data flow: find image files and turn them into model input.

    files on disk ──discover()──▶ paths ──read_file()/decode_files()──▶ bytes
        ──open_image()──▶ PIL image ──preprocess()──▶ uint8 array (C, S, S)
        ──▶ (stage 2) conv autoencoder ──▶ 128-d embedding ──▶ FAISS index

``probe()`` picks the :class:`Preprocess` settings (square side ``S`` and channel
count ``C``) from a sample of the corpus; the index stores them (``to_dict``)
so that queries are preprocessed exactly like the indexed images.

Everything that can go wrong with a single image (missing, unreadable, not an
image, truncated, decompression bomb, weird mode, …) is reported as
:class:`~simsearch.errors.ImageError` with a short one-line reason; nothing
else escapes the decode path.  This module deliberately imports only the
standard library, numpy, Pillow and (when installed) the pillow-heif plugin
(no torch, no faiss) so that worker processes stay light.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import math
import multiprocessing
import os
import random
import re
import signal
import stat
import statistics
import sys
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from simsearch.errors import ImageError, SimsearchError

__all__ = [
    "FITS",
    "IMAGE_EXTENSIONS",
    "Preprocess",
    "decode_files",
    "discover",
    "from_array",
    "load",
    "open_image",
    "preprocess",
    "probe",
    "read_file",
    "to_display",
]

# Truncated files must fail loudly, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

BYTES_NAME = "<bytes>"
_IMAGE_NAME = "<image>"

FITS = ("center-crop", "pad", "stretch")
_MAX_SIZE = 8192  # sanity bound for Preprocess.size

# HEIC/HEIF (phone photos) is read by the pillow-heif plugin; AVIF by Pillow itself when it
# is built with libavif.  Registering the opener here, at import, registers it in the decode
# worker processes too (they import this module).  pillow-heif applies the HEIF rotation /
# mirror boxes while decoding and resets the EXIF orientation to 1, so
# _apply_exif_orientation does not rotate those images a second time.
try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF_READABLE = True
except Exception:  # noqa: BLE001 -- absent or broken native library: HEIF files are skipped, with the reason
    _HEIF_READABLE = False
try:
    _AVIF_READABLE = bool(features.check("avif"))
except Exception:  # noqa: BLE001 -- an old or odd Pillow: no AVIF
    _AVIF_READABLE = False

# Always discovered, even when this installation cannot decode them, so that they are
# reported as skipped (with what would read them) instead of silently ignored.
_CODEC_EXTENSIONS = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
_MISSING_CODEC = {
    "HEIF": "HEIC/HEIF needs the pillow-heif package (pip install pillow-heif)",
    "AVIF": "AVIF needs Pillow built with libavif (Pillow >= 11.3 wheels)",
}
# ISO-BMFF 'ftyp' brands (major or compatible) of AVIF and of the other HEIF flavours.
_AVIF_BRANDS = {b"avif", b"avis", b"avio"}
_HEVC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = _HEVC_BRANDS | {b"mif1", b"msf1", b"mif2"}

# Formats Pillow registers but cannot actually decode here: stub plugins need an
# external handler, MPEG only parses a header, EPS needs Ghostscript.
_UNREADABLE_FORMATS = {"MPEG"}
# Formats whose decoder is an optional library in Pillow builds.
_CODEC_FEATURES = {"JPEG2000": "jpg_2000", "AVIF": "avif"}


def _readable_extensions() -> frozenset[str]:
    Image.init()
    readable = set()
    for ext, fmt in Image.registered_extensions().items():
        if fmt == "MPO":  # opened through the JPEG factory
            readable.add(ext.lower())
            continue
        if fmt not in Image.OPEN or fmt in _UNREADABLE_FORMATS:
            continue
        factory = Image.OPEN[fmt][0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            module = sys.modules.get(factory.__module__)
            handler = getattr(factory, "_handler", None) or getattr(module, "_handler", None)
            if handler is None:
                continue
        feature = _CODEC_FEATURES.get(fmt)
        if feature is not None:
            try:
                if not features.check(feature):
                    continue
            except Exception:
                continue
        if fmt == "EPS":
            try:
                from PIL import EpsImagePlugin

                if not EpsImagePlugin.has_ghostscript():
                    continue
            except Exception:
                continue
        readable.add(ext.lower())
    readable.update({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
    readable.update(_CODEC_EXTENSIONS)
    return frozenset(readable)


IMAGE_EXTENSIONS: frozenset[str] = _readable_extensions()


# --------------------------------------------------------------------------
# Preprocess settings


@dataclass(frozen=True)
class Preprocess:
    """How every image is turned into model input (stored with the index)."""

    size: int  # square model input side in px
    channels: int  # 1 (grayscale) or 3 (RGB)
    fit: str = "center-crop"  # "center-crop" | "pad" | "stretch"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)):
            raise ValueError(f"preprocess size must be an integer, got {self.size!r}")
        if not 1 <= int(self.size) <= _MAX_SIZE:
            raise ValueError(f"preprocess size must be in 1..{_MAX_SIZE}, got {self.size}")
        if (
            isinstance(self.channels, bool)
            or not isinstance(self.channels, (int, np.integer))
            or self.channels not in (1, 3)
        ):
            raise ValueError(f"preprocess channels must be 1 or 3, got {self.channels!r}")
        if self.fit not in FITS:
            raise ValueError(f"preprocess fit must be one of {', '.join(FITS)}; got {self.fit!r}")
        # normalise numpy integers to plain int (frozen dataclass)
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "channels", int(self.channels))

    def to_dict(self) -> dict:
        return {"size": self.size, "channels": self.channels, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        if not isinstance(d, dict):
            raise ValueError(f"preprocess settings must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"size", "channels", "fit"}
        if unknown:
            raise ValueError(f"unknown preprocess setting(s): {', '.join(sorted(map(str, unknown)))}")
        missing = {"size", "channels"} - set(d)
        if missing:
            raise ValueError(f"missing preprocess setting(s): {', '.join(sorted(missing))}")
        return cls(size=d["size"], channels=d["channels"], fit=d.get("fit", "center-crop"))


# --------------------------------------------------------------------------
# Discovery


def _rel_key(rel: str) -> bytes:
    return os.fsencode(rel)


def _oserror_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = exc.strerror or str(exc) or type(exc).__name__
    return _one_line(text)


def discover(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Recursively find image files under ``root``.

    Returns ``(files, problems)``.  ``files`` are ``root / relative`` paths whose
    lower-cased suffix is in :data:`IMAGE_EXTENSIONS`, sorted by the bytes of
    their POSIX path relative to ``root``.  Hidden entries (name starts with
    ``.``) are skipped; symlinks to files are followed; each directory (by
    ``(st_dev, st_ino)``) is entered at most once, so symlink loops terminate.
    Broken symlinks with an image extension, non-regular files with an image
    extension and unreadable directories are reported in ``problems`` as
    ``(path, reason)``.  If ``root`` is an image file, returns ``([root], [])``.

    Raises :class:`SimsearchError` if ``root`` does not exist or is neither a
    directory nor an image file.
    """
    if isinstance(root, bytes):
        root = os.fsdecode(root)
    root_p = Path(root)
    try:
        st = os.stat(root_p)
    except FileNotFoundError:
        if os.path.islink(root_p):
            raise SimsearchError(f"{root_p}: broken symlink") from None
        raise SimsearchError(f"{root_p}: no such file or directory") from None
    except OSError as exc:
        raise SimsearchError(f"{root_p}: {_oserror_reason(exc)}") from None

    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode) and root_p.suffix.lower() in IMAGE_EXTENSIONS:
            return [root_p], []
        raise SimsearchError(f"{root_p}: not a directory or a supported image file")

    found: list[tuple[bytes, Path]] = []
    problems: list[tuple[Path, str]] = []
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[Path, str]] = [(root_p, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            problems.append((directory, f"cannot read directory: {_oserror_reason(exc)}"))
            continue
        entries.sort(key=lambda e: os.fsencode(e.name))
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = directory / name
            rel_child = f"{rel}/{name}" if rel else name
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = os.stat(path)
                except OSError as exc:
                    problems.append((path, f"cannot read directory: {_oserror_reason(exc)}"))
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    continue  # already walked (symlink loop or second link)
                visited.add(key)
                subdirs.append((path, rel_child))
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                is_file = entry.is_file()  # follows symlinks
            except OSError:
                is_file = False
            if is_file:
                found.append((_rel_key(rel_child), path))
                continue
            try:
                os.stat(path)
            except FileNotFoundError:
                problems.append((path, "broken symlink"))
                continue
            except OSError as exc:
                problems.append((path, f"cannot access: {_oserror_reason(exc)}"))
                continue
            problems.append((path, "not a regular file"))
        stack.extend(reversed(subdirs))
    found.sort(key=lambda t: t[0])
    problems.sort(key=lambda t: os.fsencode(str(t[0])))
    return [p for _, p in found], problems


# --------------------------------------------------------------------------
# Reading and decoding


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _one_line(text: str, limit: int = 200) -> str:
    text = _ADDRESS.sub("", " ".join(str(text).split())).lower()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _read_with_stat(path: str | Path) -> tuple[bytes, os.stat_result]:
    """Open once, fstat the open file, then read it.  Raises ImageError."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    # O_NONBLOCK: opening a FIFO must not block waiting for a writer.
    flags |= getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(path, _oserror_reason(exc)) from None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ImageError(path, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(path, "not a regular file")
            data = f.read()
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(path, "out of memory reading file") from None
    except OSError as exc:
        raise ImageError(path, _oserror_reason(exc)) from None
    return data, st


def read_file(path: str | Path) -> bytes:
    """Read a file's bytes; any failure (missing, directory, permission, empty) → ImageError."""
    data, _ = _read_with_stat(path)
    if not data:
        raise ImageError(path, "empty file")
    return data


_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip per EXIF orientation; broken EXIF is ignored, never fatal."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return img
    method = _ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        pass
    try:  # exif_transpose also rewrites the EXIF block, which may be broken
        return img.transpose(method)
    except Exception:
        return img


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Image size from the header alone, bypassing the decompression-bomb check."""
    prefix = data[:16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in Image.ID:
            try:
                factory, accept = Image.OPEN[fmt]
                if accept and not accept(prefix):
                    continue
                im = factory(io.BytesIO(data), "")
                w, h = im.size
                return int(w), int(h)
            except Exception:
                continue
    return None


def _heif_container(data: bytes) -> str | None:
    """'AVIF' or 'HEIF' when ``data`` starts with an ISO-BMFF 'ftyp' box of that family, else None."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    box = int.from_bytes(data[:4], "big")
    end = min(len(data), box if 16 <= box <= 4096 else 16)
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEVC_BRANDS:
        return "HEIF"
    if compatible & _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS or compatible & _HEIF_BRANDS:
        return "HEIF"
    return None


def _head(path: str | Path, n: int = 4096) -> bytes:
    """The first bytes of a file (b"" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _missing_codec(data: bytes) -> str | None:
    """The reason an HEIC/HEIF or AVIF file cannot be decoded in this installation, if so."""
    kind = _heif_container(data)
    if kind == "HEIF" and not _HEIF_READABLE:
        return _MISSING_CODEC["HEIF"]
    if kind == "AVIF" and not _AVIF_READABLE:
        return _MISSING_CODEC["AVIF"]
    return None


def _too_large(w: int, h: int) -> str:
    return f"image too large: {w}x{h} pixels"


def _bomb_reason(data: bytes, exc: BaseException) -> str:
    """'image too large: WxH pixels' for a DecompressionBombError."""
    size = _header_size(data)
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and (limit is None or size[0] * size[1] > limit):
        return _too_large(*size)
    m = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit ..."
    if m:
        return f"image too large: {m.group(1)} pixels"
    return "image too large"


def _decode_reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, MemoryError):
        return "out of memory decoding image"
    msg = str(exc)
    if "truncated" in msg.lower():
        return "truncated image data"
    if not msg.strip():
        msg = type(exc).__name__
    return "cannot decode image: " + _one_line(msg, 160)


def _draft_mode(pre: Preprocess) -> str:
    return "L" if pre.channels == 1 else "RGB"


def _decode(data: bytes, name: Any, pre: Preprocess | None = None) -> Image.Image:
    """Bytes → fully loaded first frame, EXIF-oriented.  Raises ImageError."""
    if not data:
        raise ImageError(name, "empty file")
    missing = _missing_codec(data)
    if missing is not None:
        raise ImageError(name, missing)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns about EXIF/metadata oddities and about images between
            # MAX_IMAGE_PIXELS and 2x that; the size check below replaces the latter.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if limit is not None and w * h > limit:
                raise ImageError(name, _too_large(w, h))
            if w <= 0 or h <= 0:
                raise ImageError(name, f"image has no pixels ({w}x{h})")
            if pre is not None and img.format in ("JPEG", "MPO"):
                img.draft(_draft_mode(pre), (pre.size, pre.size))
            img.load()
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ImageError(name, f"image has no pixels ({w}x{h})")
            img = _apply_exif_orientation(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, _bomb_reason(data, exc)) from None
    except Exception as exc:  # OSError, ValueError, SyntaxError, struct.error, EOFError, MemoryError, ...
        raise ImageError(name, _decode_reason(exc)) from None
    return img


def open_image(source: str | Path | bytes | bytearray | memoryview, *, pre: Preprocess | None = None) -> Image.Image:
    """Open ``source`` (a path or the encoded bytes) as a fully loaded PIL image.

    First frame only for animated/multi-page files; EXIF orientation applied.
    ``pre`` (optional) lets JPEGs decode at reduced scale (``draft``) — only
    :func:`load` needs that.  Any failure raises :class:`ImageError`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), BYTES_NAME, pre)
    data = read_file(source)
    return _decode(data, source, pre)


# --------------------------------------------------------------------------
# Preprocessing

_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_WHITE = {"L": 255, "RGB": (255, 255, 255)}


def _scale_to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit int and float images → 8-bit 'L'."""
    mode = img.mode
    if mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint32)
        out = ((arr + 128) // 257).astype(np.uint8)  # 65535 → 255, 257*k → k
        return Image.fromarray(out)
    if mode not in ("I", "F"):
        img = img.convert("F")
    arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            return Image.fromarray(np.zeros(arr.shape, dtype=np.uint8))
        lo0, hi0 = float(arr[finite].min()), float(arr[finite].max())
        arr = np.nan_to_num(arr, nan=lo0, posinf=hi0, neginf=lo0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        if hi > lo:
            with np.errstate(all="ignore"):
                arr = (arr - lo) / (hi - lo) * 255.0
            arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        else:
            arr = np.full(arr.shape, 0.0 if hi < 0 else 255.0)
    out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _has_alpha(img: Image.Image) -> bool:
    mode = img.mode
    if mode in _ALPHA_MODES:
        return True
    if mode == "P":
        if "transparency" in img.info:
            return True
        palette = img.palette
        return palette is not None and palette.mode in ("RGBA", "LA", "PA")
    return mode in ("1", "L", "RGB") and "transparency" in img.info


def _to_base(img: Image.Image) -> Image.Image:
    """Any mode → 'L' or 'RGB', alpha/transparency composited onto white."""
    mode = img.mode
    if mode.startswith(("I", "F")):
        return _scale_to_uint8(img)
    if mode in ("La", "RGBa"):  # premultiplied alpha → straight alpha
        img = img.convert(mode.upper()[:-1] + "A")
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, _WHITE["RGB"])
        base.paste(rgba, (0, 0), rgba)
        if mode in _GRAY_MODES:
            return base.convert("L")
        return base
    if mode == "L":
        return img
    if mode == "RGB":
        return img
    if mode in _GRAY_MODES:
        return img.convert("L")
    return img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _fit(img: Image.Image, size: int, fit: str) -> Image.Image:
    w, h = img.size
    resample = Image.Resampling.BILINEAR
    if fit == "stretch":
        if (w, h) == (size, size):
            return img
        return img.resize((size, size), resample, reducing_gap=3.0)
    if fit == "pad":
        scale = size / max(w, h)
        nw = min(size, max(1, round(w * scale)))
        nh = min(size, max(1, round(h * scale)))
        small = img if (nw, nh) == (w, h) else img.resize((nw, nh), resample, reducing_gap=3.0)
        if (nw, nh) == (size, size):
            return small
        canvas = Image.new(img.mode, (size, size), _WHITE[img.mode])
        canvas.paste(small, ((size - nw) // 2, (size - nh) // 2))
        return canvas
    # center-crop: crop the centred square and resize it in one step
    if w > h:
        box = ((w - h) / 2, 0.0, (w + h) / 2, float(h))
    elif h > w:
        box = (0.0, (h - w) / 2, float(w), (h + w) / 2)
    else:
        if w == size:
            return img
        box = (0.0, 0.0, float(w), float(h))
    return img.resize((size, size), resample, box=box, reducing_gap=3.0)


def preprocess(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Any-mode PIL image → C-contiguous uint8 array of shape (channels, size, size).

    Alpha and palette transparency are composited onto white; 16-bit images are
    divided by 257; 32-bit int / float images outside 0..255 are min/max scaled.
    Grayscale uses Pillow's ITU-R 601-2 luminance.  Raises ImageError for
    images that cannot be converted (no pixels, unsupported mode).
    """
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(_IMAGE_NAME, f"image has no pixels ({w}x{h})")
    try:
        base = _to_base(img)
    except (ValueError, OSError, KeyError) as exc:
        raise ImageError(_IMAGE_NAME, f"unsupported image mode {img.mode}: {_one_line(str(exc), 80)}") from None
    out = _fit(base, pre.size, pre.fit)
    target = "L" if pre.channels == 1 else "RGB"
    if out.mode != target:
        out = out.convert(target)
    arr = np.asarray(out, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None, :, :]
    else:
        arr = arr.transpose(2, 0, 1)
    arr = np.ascontiguousarray(arr)
    assert arr.shape == (pre.channels, pre.size, pre.size), arr.shape
    return arr


def _load_bytes(data: bytes, pre: Preprocess, name: Any) -> np.ndarray:
    img = _decode(data, name, pre)
    try:
        return preprocess(img, pre)
    except ImageError as exc:
        raise ImageError(name, exc.reason) from None
    except Exception as exc:
        raise ImageError(name, _decode_reason(exc)) from None


def load(source: str | Path | bytes | bytearray | memoryview, pre: Preprocess, name: Any = None) -> np.ndarray:
    """open_image + preprocess; JPEGs decode at reduced scale (draft ≥ pre.size).

    A path is read once; the array is decoded from exactly those bytes. ``name``: what errors
    call bytes (e.g. the file they were read from).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(source), pre, BYTES_NAME if name is None else name)
    return _load_bytes(read_file(source), pre, source)


def from_array(arr: np.ndarray, pre: Preprocess) -> np.ndarray:
    """A user-supplied numpy image → preprocessed (channels, size, size) uint8.

    Accepts HxW, HxWx1, HxWx3, HxWx4 and CxHxW (first dim 1/3/4, last not);
    dtype bool, uint8, other integers within 0..255, or float in 0..1
    (scaled by 255) or 0..255.  4 channels are RGBA (composited onto white).
    Raises ValueError for anything else.
    """
    return preprocess(_array_image(arr), pre)


def _array_image(arr: np.ndarray) -> Image.Image:
    """The numpy image of :func:`from_array` → 'L', 'RGB' or 'RGBA' PIL image.  Raises ValueError."""
    a = np.asarray(arr)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ValueError(f"image array must be numeric (bool, integer or float), got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3:
        if a.shape[2] in (1, 3, 4):
            pass
        elif a.shape[0] in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        else:
            raise ValueError(
                f"image array of shape {a.shape} has no channel axis of size 1, 3 or 4 (expected HxW, HxWxC or CxHxW)"
            )
    else:
        raise ValueError(f"image array must have 2 or 3 dimensions, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image array is empty (shape {np.shape(arr)})")
    kind = a.dtype.kind
    if kind == "b":
        u8 = a.astype(np.uint8) * np.uint8(255)
    elif kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer image values must be in 0..255, got {lo}..{hi}")
        u8 = a.astype(np.uint8)
    else:
        if not np.isfinite(a).all():
            raise ValueError("image array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"float image values must be in 0..1 or 0..255, got {lo:g}..{hi:g}")
        scale = 255.0 if hi <= 1.0 else 1.0
        u8 = np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    c = u8.shape[2]
    if c == 1:
        return Image.fromarray(np.ascontiguousarray(u8[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(u8))  # RGB or RGBA


def to_display(img: Image.Image | np.ndarray) -> Image.Image:
    """An image as the model sees it, for drawing: mode 'RGB', full resolution.

    Alpha and palette transparency are composited onto white, 16-bit and float
    images are scaled, exactly as :func:`preprocess` does before it resizes.
    ``img`` is a PIL image (for a file or bytes, pass :func:`open_image`'s
    result, which is EXIF-oriented) or a numpy image as :func:`from_array`
    accepts it.  May return ``img`` itself when it is already plain RGB.
    Raises ImageError (ValueError for a numpy array :func:`from_array` rejects).
    """
    if isinstance(img, np.ndarray):
        img = _array_image(img)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(_IMAGE_NAME, f"image has no pixels ({w}x{h})")
    try:
        base = _to_base(img)
        return base if base.mode == "RGB" else base.convert("RGB")
    except (ValueError, OSError, KeyError) as exc:
        raise ImageError(_IMAGE_NAME, f"unsupported image mode {img.mode}: {_one_line(str(exc), 80)}") from None


# --------------------------------------------------------------------------
# Corpus probing

_GRAY_TOLERANCE = 2  # JPEG chroma rounding on "grey" RGB photos


def _sample_is_gray(im: Image.Image) -> bool:
    if im.mode in ("1", "L", "LA", "La", "I", "F") or im.mode.startswith("I;"):
        return True
    if im.mode not in ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX"):
        return False
    im.thumbnail((32, 32))
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    d1 = np.abs(rgb[:, :, 0] - rgb[:, :, 1]).max()
    d2 = np.abs(rgb[:, :, 1] - rgb[:, :, 2]).max()
    return max(int(d1), int(d2)) <= _GRAY_TOLERANCE


def probe(files: list[Path], sample: int = 200, seed: int = 0) -> Preprocess:
    """Choose Preprocess settings from a deterministic sample of the corpus.

    channels = 1 if ≥ 95% of the readable sampled images are grayscale, else 3;
    size = median shorter side rounded up to a multiple of 4, clamped to 16..64.
    """
    files = list(files)
    if sample >= len(files):
        chosen = files
    else:
        idx = sorted(random.Random(seed).sample(range(len(files)), max(0, sample)))
        chosen = [files[i] for i in idx]
    shorter: list[int] = []
    codecs: set[str] = set()  # what would read the files that failed for want of a codec
    gray = 0
    for path in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    w, h = im.size
                    if w <= 0 or h <= 0:
                        continue
                    limit = Image.MAX_IMAGE_PIXELS
                    if limit is not None and w * h > limit:
                        continue  # decompression bomb: unreadable for indexing too
                    is_gray = _sample_is_gray(im)
        except Exception:
            missing = _missing_codec(_head(path))
            if missing:
                codecs.add(missing)
            continue
        shorter.append(min(w, h))
        gray += bool(is_gray)
    if not shorter:
        why = f" ({'; '.join(sorted(codecs))})" if codecs else ""
        raise SimsearchError(f"no readable images among {len(chosen)} files{why}")
    channels = 1 if gray >= 0.95 * len(shorter) else 3
    s = statistics.median(shorter)
    size = min(64, max(16, 4 * math.ceil(s / 4)))
    return Preprocess(size=size, channels=channels)


# --------------------------------------------------------------------------
# Parallel decoding for indexing

_WORKER_PRE: Preprocess | None = None


def _decode_path(path: str | Path, pre: Preprocess) -> tuple[np.ndarray | None, str | None, dict]:
    info: dict = {}
    try:
        data, st = _read_with_stat(path)
        info = {
            "size": len(data),
            "mtime_ns": st.st_mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if not data:
            return None, "empty file", info
        return _load_bytes(data, pre, path), None, info
    except ImageError as exc:
        return None, exc.reason, info
    except Exception as exc:  # belt and braces: never let one file kill the run
        return None, _decode_reason(exc), info


def _worker_init(pre_dict: dict) -> None:
    global _WORKER_PRE
    _WORKER_PRE = Preprocess.from_dict(pre_dict)
    try:  # Ctrl-C is handled by the parent, which tears the pool down
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError, AttributeError):
        pass


def _worker_chunk(paths: list) -> list:
    assert _WORKER_PRE is not None
    return [_decode_path(p, _WORKER_PRE) for p in paths]


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_CRASH_REASON = "decoder crashed (worker process died)"


class _Executor:
    """A process pool that can be torn down hard (on close/KeyboardInterrupt)."""

    def __init__(self, workers: int, pre: Preprocess):
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_mp_context(),
            initializer=_worker_init,
            initargs=(pre.to_dict(),),
        )

    def submit(self, paths: list):
        return self.pool.submit(_worker_chunk, paths)

    def shutdown(self, hard: bool) -> None:
        pool = self.pool
        if hard:
            procs = list((getattr(pool, "_processes", None) or {}).values())
            # The executor's manager thread reaps the workers too; wait for it
            # below so no waitpid() race remains once shutdown returns.
            # (shutdown() drops the executor's reference to it, so take it first.)
            manager = getattr(pool, "_executor_manager_thread", None)
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                try:
                    p.terminate()
                except Exception:
                    pass
            if manager is not None:
                manager.join(timeout=5)
            for p in procs:
                try:
                    p.join(timeout=5)
                except Exception:
                    pass
        else:
            pool.shutdown(wait=True)


def _isolate(chunks: list[tuple[int, list]], pre: Preprocess):
    """Re-run chunks that were in flight when a worker died, one file per
    single-worker pool task, so the culprit is identified exactly."""
    ex: _Executor | None = None
    try:
        for start, paths in chunks:
            for k, p in enumerate(paths):
                if ex is None:
                    ex = _Executor(1, pre)
                try:
                    (res,) = ex.submit([p]).result()
                except concurrent.futures.process.BrokenProcessPool:
                    ex.shutdown(hard=True)
                    ex = None
                    res = (None, _CRASH_REASON, {})
                yield (start + k, *res)
    finally:
        if ex is not None:
            ex.shutdown(hard=True)


def decode_files(
    paths: list[Path], pre: Preprocess, workers: int = 0, chunksize: int = 64
) -> Iterator[tuple[int, np.ndarray | None, str | None, dict]]:
    """Decode ``paths`` for indexing, in parallel, yielding in input order.

    Yields ``(i, array_or_None, reason_or_None, info)`` for every path, where
    ``info = {'size', 'mtime_ns', 'sha256'}`` describes the bytes actually
    decoded (stat taken on the open file before reading; partial/empty on
    failure).  ``workers=0`` → number of usable CPUs, ``workers=1`` → in-process.
    At most a few chunks are in flight (bounded memory, streams); a worker that
    dies (e.g. a decoder segfault) is replaced and the file that killed it is
    reported with a reason instead of hanging the run.  Closing the generator
    (or KeyboardInterrupt) terminates the worker processes.
    """
    paths = list(paths)
    n = len(paths)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    if workers == 0:
        workers = _cpu_count()
    workers = min(workers, n)
    if workers <= 1:
        for i, p in enumerate(paths):
            yield (i, *_decode_path(p, pre))
        return

    chunk = max(1, min(chunksize, math.ceil(n / (workers * 4))))
    chunks = [(s, paths[s : s + chunk]) for s in range(0, n, chunk)]
    window = workers * 2
    todo = deque(chunks)
    inflight: deque = deque()
    ex: _Executor | None = _Executor(workers, pre)
    hard = True
    try:
        while todo or inflight:
            try:
                while todo and len(inflight) < window:
                    start, group = todo[0]
                    fut = ex.submit(group)
                    todo.popleft()
                    inflight.append((start, group, fut))
                start, group, fut = inflight[0]
                results = fut.result()
            except concurrent.futures.process.BrokenProcessPool:
                suspects = [(s, g) for s, g, _ in inflight]
                inflight.clear()
                ex.shutdown(hard=True)
                ex = None
                yield from _isolate(suspects, pre)
                ex = _Executor(workers, pre)
                continue
            inflight.popleft()
            for k, res in enumerate(results):
                yield (start + k, *res)
        hard = False
    finally:
        if ex is not None:
            ex.shutdown(hard=hard)
