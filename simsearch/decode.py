"""Stage 1b: open one file (or bytes) safely and decode it.

    path ──read_file()──▶ bytes ──open_image()──▶ PIL image ──preprocess()──▶ uint8 (C, S, S)
    path or bytes ──load()──▶ uint8 (C, S, S)   (the two steps; JPEGs decode at reduced scale)

A file is opened once, without blocking on FIFOs, and fstat()ed on the open descriptor;
only regular files are read.  Decoding loads the first frame, applies the EXIF orientation
(broken EXIF is ignored), refuses images over Pillow's pixel limit (decompression bombs)
from the header alone, and names the missing package for HEIC/AVIF this installation cannot
read.  Everything that can go wrong with a single image (missing, unreadable, not an image,
truncated, decompression bomb, weird mode, …) is reported as
:class:`~simsearch.errors.ImageError` with a short one-line reason; nothing else escapes.
Standard library, numpy, Pillow and pillow-heif only (no torch, no faiss), so that the
``pool`` worker processes stay light.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from simsearch.errors import ImageError, one_line, oserror_reason
from simsearch.formats import _missing_codec
from simsearch.preprocess import Preprocess, check_pixels, preprocess

__all__ = ["load", "open_image", "read_file"]

BYTES_NAME = "<bytes>"


def _read_with_stat(path: str | Path) -> tuple[bytes, os.stat_result]:
    """Open once, fstat the open file, then read it.  Raises ImageError."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    # O_NONBLOCK: opening a FIFO must not block waiting for a writer.
    flags |= getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(path, oserror_reason(exc)) from None
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
        raise ImageError(path, oserror_reason(exc)) from None
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
    return "cannot decode image: " + one_line(msg, 160)


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
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if limit is not None and w * h > limit:
                raise ImageError(name, _too_large(w, h))
            check_pixels(img, name)
            if pre is not None and img.format in ("JPEG", "MPO"):
                img.draft(_draft_mode(pre), (pre.size, pre.size))
            img.load()
            check_pixels(img, name)  # again: a draft may have changed the size
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
