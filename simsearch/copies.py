"""Transformed copies of images: the edits a picture goes through when it is copied.

A real copy of an image is rarely the same file: it was resized, re-saved as
JPEG, cropped a little, brightened, rotated a few degrees or padded. This
module makes such copies deterministically, at named strengths, so that
near-copy search can be measured (``simsearch eval --copies``,
``scripts/bench_neardup.py``) and its threshold calibrated on a user's own
images (``postprocess.calibrate``), without labels.

    >>> from PIL import Image
    >>> copy = make_copy(Image.open("cat.png"), seed=7)            # default strength, random mix
    >>> copy = make_copy(img, seed=7, strength="strong", kinds=("jpeg", "crop"))

Every copy is first flattened onto white (``preprocess.to_display``: what the model sees), then gets a
random subset of the edits below at the chosen strength, and is always
re-encoded as JPEG last (a copy that travelled is almost always recompressed).
Pillow + numpy (through ``decode`` and ``preprocess``): no torch.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from PIL import Image, ImageEnhance

from .decode import open_image
from .preprocess import to_display

KINDS = ("resize", "crop", "aspect", "rotate", "pad", "brightness", "contrast", "saturation", "jpeg")


@dataclass(frozen=True)
class Strength:
    """Upper bounds of each edit. A copy draws each parameter uniformly up to its bound."""

    scale: tuple[float, float]  # resize factor range (of the longer side)
    crop: float  # fraction cut from each side, at most
    aspect: float  # one axis stretched by up to this fraction
    rotate: float  # degrees, ±
    pad: float  # border width as a fraction of the longer side, at most
    light: float  # brightness / contrast factor 1 ± this
    saturation: float  # saturation factor 1 ± this
    quality: tuple[int, int]  # JPEG quality range


STRENGTHS: dict[str, Strength] = {
    "light": Strength(
        scale=(0.8, 1.0), crop=0.02, aspect=0.03, rotate=1.0, pad=0.02, light=0.05, saturation=0.1, quality=(80, 92)
    ),
    "default": Strength(
        scale=(0.5, 0.8), crop=0.05, aspect=0.06, rotate=3.0, pad=0.05, light=0.12, saturation=0.2, quality=(60, 80)
    ),
    "strong": Strength(
        scale=(0.3, 0.6), crop=0.10, aspect=0.12, rotate=7.0, pad=0.10, light=0.25, saturation=0.4, quality=(35, 60)
    ),
}
DEFAULT_STRENGTH = "default"
# how many of the optional edits a mixed copy gets (resize and JPEG always apply)
_OPTIONAL = ("crop", "aspect", "rotate", "pad", "brightness", "contrast", "saturation")


def make_copy(
    img: Image.Image, seed: int, strength: str | Strength = DEFAULT_STRENGTH, kinds: tuple[str, ...] | None = None
) -> Image.Image:
    """A transformed RGB copy of ``img``, deterministic in ``seed``.

    ``kinds``: apply exactly these edits (from :data:`KINDS`, in that order); None = resize,
    a random 2–4 of the optional edits, then JPEG."""
    st = STRENGTHS[strength] if isinstance(strength, str) else strength
    rng = random.Random(seed)
    if kinds is None:
        chosen = set(rng.sample(_OPTIONAL, rng.randint(2, 4))) | {"resize", "jpeg"}
    else:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown copy edit(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
        chosen = set(kinds)
    out = to_display(img)
    for kind in KINDS:  # a fixed order: geometry, then photometry, then compression
        if kind in chosen:
            out = _EDITS[kind](out, st, rng)
    return out


def copies_of(
    paths: Sequence[str | Path], seeds: Sequence[int], strength: str | Strength = DEFAULT_STRENGTH, max_side: int = 2048
) -> tuple[list[int], list[Image.Image]]:
    """One copy of each file (``make_copy`` with its seed), made from the file reduced to at most
    ``max_side`` px (a copy of a giant image is a smaller file anyway; detail beyond is lost);
    → (positions of the files that could be read, their copies). A file that vanished or
    changed into something unreadable since it was indexed is left out."""
    kept, out = [], []
    for i, (path, seed) in enumerate(zip(paths, seeds)):
        try:
            img = open_image(path)
            img.thumbnail((max_side, max_side))
            out.append(make_copy(img, seed=int(seed), strength=strength))
        except Exception:  # noqa: BLE001 — not sampled, whatever went wrong with it
            continue
        kept.append(i)
    return kept, out


def _resize(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    f = rng.uniform(*st.scale)
    w, h = img.size
    return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)


def _crop(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    w, h = img.size
    cut = [rng.uniform(st.crop / 2, st.crop) for _ in range(4)]  # left, top, right, bottom
    box = (round(w * cut[0]), round(h * cut[1]), w - round(w * cut[2]), h - round(h * cut[3]))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return img
    return img.crop(box)


def _aspect(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    w, h = img.size
    f = 1 + rng.uniform(st.aspect / 2, st.aspect) * rng.choice((-1, 1))
    size = (max(1, round(w * f)), h) if rng.random() < 0.5 else (w, max(1, round(h * f)))
    return img.resize(size, Image.Resampling.BILINEAR)


def _rotate(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    angle = rng.uniform(st.rotate / 3, st.rotate) * rng.choice((-1, 1))
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=_border(img))


def _pad(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    w, h = img.size
    p = max(1, round(max(w, h) * rng.uniform(st.pad / 2, st.pad)))
    colour = rng.choice([(255, 255, 255), (0, 0, 0), _border(img)])
    canvas = Image.new("RGB", (w + 2 * p, h + 2 * p), colour)
    canvas.paste(img, (p, p))
    return canvas


def _enhance(kind):
    def edit(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
        amount = st.saturation if kind is ImageEnhance.Color else st.light
        return kind(img).enhance(1 + rng.uniform(amount / 2, amount) * rng.choice((-1, 1)))

    return edit


def _jpeg(img: Image.Image, st: Strength, rng: random.Random) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randint(*st.quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _border(img: Image.Image) -> tuple[int, int, int]:
    """The colour of the top-left pixel: the background, for most pictures."""
    px = img.getpixel((0, 0))  # an int ('L') or an RGB tuple: copies are made of to_display's output
    return cast("tuple[int, int, int]", tuple(px[:3]) if isinstance(px, tuple) else (px, px, px))


_EDITS = {
    "resize": _resize,
    "crop": _crop,
    "aspect": _aspect,
    "rotate": _rotate,
    "pad": _pad,
    "brightness": _enhance(ImageEnhance.Brightness),
    "contrast": _enhance(ImageEnhance.Contrast),
    "saturation": _enhance(ImageEnhance.Color),
    "jpeg": _jpeg,
}
