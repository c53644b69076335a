"""Stage 1c: a decoded image → model input, and the settings for it.

    PIL image ──preprocess()──▶ uint8 array (C, S, S)
        ──▶ (stage 2) conv autoencoder ──▶ 128-d embedding ──▶ FAISS index

:class:`Preprocess` holds the square side ``S``, the channel count ``C`` and how a
non-square image becomes square (:data:`FITS`); ``probe()`` picks them from a sample of
the corpus, and the index stores them (``to_dict``) so that queries are preprocessed
exactly like the indexed images.  Any mode is accepted: alpha and palette transparency are
flattened onto white, 16-bit and float images scaled to 8 bits.  ``from_array`` takes a
numpy image instead of a PIL one; ``to_display`` is the same flattening at full
resolution, for drawing.  Standard library, numpy and Pillow only.
"""

from __future__ import annotations

import math
import random
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from simsearch.constants import FITS
from simsearch.errors import ImageError, SimsearchError, one_line
from simsearch.formats import _head, _missing_codec

__all__ = ["FITS", "Preprocess", "content_box", "from_array", "preprocess", "probe", "to_display"]

_IMAGE_NAME = "<image>"

_MAX_SIZE = 8192  # sanity bound for Preprocess.size


# --------------------------------------------------------------------------
# Preprocess settings


@dataclass(frozen=True)
class Preprocess:
    """How every image is turned into model input (stored with the index)."""

    size: int  # square model input side in px
    channels: int  # 1 (grayscale) or 3 (RGB)
    fit: str = "center-crop"  # "center-crop" | "pad" | "stretch" | "trim" (constants.FITS)

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
# The content of a picture on a plain margin

# A pixel belongs to the content when it differs from the edge colour by more than CONTENT_LEVEL (of 255) in
# some channel; the edge is one colour when at most EDGE_MIXED of its pixels differ from its median colour
# that much (a photo's edge is not: it has no margin). The box is found on a copy at most BOX_PROBE px a side.
CONTENT_LEVEL = 16
EDGE_MIXED = 0.05
BOX_PROBE = 256


def content_box(img: Image.Image, least: float = 0.01) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of a picture's content (mode 'L' or 'RGB'): the pixels that
    differ from its edge colour (the median colour of its outermost rows and columns: white for a drawing
    flattened on white, black for Fashion-MNIST, any plain colour) by more than ``CONTENT_LEVEL``. None
    when there is no margin to take away: the edge is not one colour (a photo), nothing differs from it
    (a flat picture), or every side's margin is under ``least`` of the picture. The box is found on a copy
    at most ``BOX_PROBE`` px a side and scaled back outwards, so it never cuts into the content."""
    small = img
    if max(img.size) > BOX_PROBE:
        small = img.copy()
        small.thumbnail((BOX_PROBE, BOX_PROBE), Image.Resampling.BOX)
    a = np.asarray(small, np.int16)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[0] < 3 or a.shape[1] < 3:
        return None
    edge = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    bg = np.median(edge, axis=0)
    if (np.abs(edge - bg).max(axis=1) > CONTENT_LEVEL).mean() > EDGE_MIXED:
        return None
    ink = np.abs(a - bg).max(axis=2) > CONTENT_LEVEL
    if not ink.any():
        return None
    ys, xs = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    (h, w), (W, H) = ink.shape, img.size
    box = (
        int(xs[0] * W // w),
        int(ys[0] * H // h),
        int(-(-(xs[-1] + 1) * W // w)),
        int(-(-(ys[-1] + 1) * H // h)),
    )
    margins = (box[0] / W, box[1] / H, 1 - box[2] / W, 1 - box[3] / H)
    return box if max(margins) >= least else None


# --------------------------------------------------------------------------
# Preprocessing

_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_WHITE: dict[str, int | tuple[int, int, int]] = {"L": 255, "RGB": (255, 255, 255)}


def _scale_to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit int and float images → 8-bit 'L'."""
    mode = img.mode
    if mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.uint32)
        out = ((wide + 128) // 257).astype(np.uint8)  # 65535 → 255, 257*k → k
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
    x0, y0 = 0.0, 0.0
    if fit == "trim":  # the square around the content (``content_box``), inside the picture where it fits
        found = content_box(img)
        if found is not None:
            left, top, right, bottom = found
            side = max(right - left, bottom - top)
            sw, sh = min(side, w), min(side, h)
            x0 = min(max((left + right - sw) / 2, 0.0), w - sw)
            y0 = min(max((top + bottom - sh) / 2, 0.0), h - sh)
            w, h = sw, sh
    # center-crop (and trim, in its square): crop the centred square and resize it in one step
    box: tuple[float, float, float, float]
    if w > h:
        box = (x0 + (w - h) / 2, y0, x0 + (w + h) / 2, y0 + h)
    elif h > w:
        box = (x0, y0 + (h - w) / 2, x0 + w, y0 + (h + w) / 2)
    else:
        if (w, h) == img.size == (size, size):  # already the model's square, nothing trimmed
            return img
        box = (x0, y0, x0 + w, y0 + h)
    return img.resize((size, size), resample, box=box, reducing_gap=3.0)


def check_pixels(img: Image.Image, name: object = _IMAGE_NAME) -> None:
    """ImageError unless ``img`` has at least one pixel."""
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(name, f"image has no pixels ({w}x{h})")


def _checked_base(img: Image.Image) -> Image.Image:
    """:func:`_to_base`, failing as the user sees it (ImageError: no pixels, unsupported mode)."""
    check_pixels(img)
    try:
        return _to_base(img)
    except (ValueError, OSError, KeyError) as exc:
        raise ImageError(_IMAGE_NAME, f"unsupported image mode {img.mode}: {one_line(str(exc), 80)}") from None


def preprocess(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Any-mode PIL image → C-contiguous uint8 array of shape (channels, size, size).

    Alpha and palette transparency are composited onto white; 16-bit images are
    divided by 257; 32-bit int / float images outside 0..255 are min/max scaled.
    Grayscale uses Pillow's ITU-R 601-2 luminance.  Raises ImageError for
    images that cannot be converted (no pixels, unsupported mode).
    """
    out = _fit(_checked_base(img), pre.size, pre.fit)
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


# --------------------------------------------------------------------------
# Numpy images, and images for display


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
    lo: float  # int for integer arrays
    hi: float
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
    ``img`` is a PIL image (for a file or bytes, pass :func:`~simsearch.decode.open_image`'s
    result, which is EXIF-oriented) or a numpy image as :func:`from_array`
    accepts it.  May return ``img`` itself when it is already plain RGB.
    Raises ImageError (ValueError for a numpy array :func:`from_array` rejects).
    """
    if isinstance(img, np.ndarray):
        img = _array_image(img)
    base = _checked_base(img)
    return base if base.mode == "RGB" else base.convert("RGB")


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


def probe(files: Sequence[str | Path], sample: int = 200, seed: int = 0) -> Preprocess:
    """Choose Preprocess settings from a deterministic sample of the corpus.

    channels = 1 if ≥ 95% of the readable sampled images are grayscale, else 3;
    size = median shorter side rounded up to a multiple of 4, clamped to 16..64.
    """
    if not isinstance(files, Sequence):
        files = list(files)  # (a Sequence is read where sampled, never copied: the indexer's is on disk)
    if sample >= len(files):
        chosen = list(files)
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
