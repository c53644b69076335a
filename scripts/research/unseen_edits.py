#!/usr/bin/env python3
"""Copies made by edits that ``simsearch.copies`` does not make, on DEVELOPMENT data: does a near-copy
query still find its original when the copy went through something the model was not trained for?

The product is judged on transformations nobody chose it for. This probe takes an index that
``scripts/bench_neardup.py --half dev --index DIR`` built (its half's files are linked in ``DIR-corpus``),
copies the same originals the bench samples, each through ONE edit below, resized to 70% and re-saved as
JPEG quality 75 as every copy is (``webp`` is re-saved as WebP instead), and prints R@1 / R@5 of
``simsearch.Index.query_batch`` (with and without the pixel check) next to the bench's baselines
(``bench_neardup.baseline_rows``: 32×32 thumbnails, pHash, dHash) on the same copies.

    python scripts/research/unseen_edits.py --index /tmp/nd-dev
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

import simsearch
from simsearch.preprocess import to_display

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/: the bench's sampling and baselines
import bench_neardup  # noqa: E402


def _caption(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark band with light text across the bottom eighth (a caption, a meme, a screenshot's status bar)."""
    out = im.copy()
    w, h = out.size
    d = ImageDraw.Draw(out)
    d.rectangle([0, h - max(2, h // 8), w, h], fill=(20, 20, 20))
    d.text((w // 20, h - max(2, h // 8)), f"simsearch copy {int(rng.integers(1000))}", fill=(240, 240, 240))
    return out


def _logo(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A half-transparent coloured box over a fifth of the width, in a random corner (a watermark)."""
    w, h = im.size
    s = max(2, min(w, h) // 5)
    x = 0 if rng.random() < 0.5 else w - s
    y = 0 if rng.random() < 0.5 else h - s
    over = Image.new("RGBA", im.size, (0, 0, 0, 0))
    ImageDraw.Draw(over).rectangle([x, y, x + s, y + s], fill=(200, 30, 30, 128))
    return Image.alpha_composite(im.convert("RGBA"), over).convert("RGB")


def _frame(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 15% frame in a random grey (a picture posted inside a larger canvas)."""
    w, h = im.size
    b = max(1, int(0.15 * max(w, h)))
    g = int(rng.integers(40, 215))
    return ImageOps.expand(im, border=b, fill=(g, g, g))


def _noise(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, np.float32) + rng.normal(0, 8, (im.height, im.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    return im.crop((int(0.15 * w), int(0.15 * h), w - int(0.15 * w), h - int(0.15 * h)))


def _gamma(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    lut = [round(255 * (i / 255) ** 0.6) for i in range(256)]
    return im.point(lut * 3)


EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "none": lambda im, rng: im,
    "mirror": lambda im, rng: ImageOps.mirror(im),
    "grey": lambda im, rng: im.convert("L").convert("RGB"),
    "upscale 2x": lambda im, rng: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "webp q50": lambda im, rng: im,  # the encoding below differs
    "noise σ8": _noise,
    "blur r1.5": lambda im, rng: im.filter(ImageFilter.GaussianBlur(1.5)),
    "sharpen": lambda im, rng: im.filter(ImageFilter.UnsharpMask(2, 150, 3)),
    "gamma 0.6": _gamma,
    "64 colours": lambda im, rng: im.quantize(64).convert("RGB"),
    "caption": _caption,
    "watermark": _logo,
    "frame 15%": _frame,
    "crop 15%": _crop,
    "rotate 90": lambda im, rng: im.transpose(Image.Transpose.ROTATE_90),
}


def make_copy(im: Image.Image, edit: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    flat = to_display(im)
    w, h = flat.size
    small = flat.resize((max(1, round(0.7 * w)), max(1, round(0.7 * h))), Image.Resampling.LANCZOS)
    out = EDITS[edit](small, rng)
    buf = io.BytesIO()
    if edit.startswith("webp"):
        out.save(buf, "WEBP", quality=50)
    else:
        out.save(buf, "JPEG", quality=75)
    buf.seek(0)
    with Image.open(buf) as copy:
        return copy.convert("RGB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="an index bench_neardup.py --index built (dev half)")
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--edits", default=",".join(EDITS), help="comma-separated, from: " + ", ".join(EDITS).replace("%", "%%")
    )
    ap.add_argument("--no-baselines", action="store_true")
    a = ap.parse_args()
    root = a.index.with_name(a.index.name + "-corpus")
    if not root.is_dir():
        print(f"error: {root} not found: build the index with bench_neardup.py --index {a.index}", file=sys.stderr)
        return 1
    edits = [e.strip() for e in a.edits.split(",") if e.strip()]
    unknown = sorted(set(edits) - set(EDITS))
    if unknown:
        print(f"error: unknown edit(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    index = simsearch.Index.open(a.index)
    rels = index.paths()
    groups = bench_neardup.identity_groups(root, rels)
    originals = [(rel, im.copy()) for _, rel, im in bench_neardup.originals(root, rels, a.copies, a.seed)]
    queries = {
        e: [(rel, make_copy(im, e, a.seed * 100_003 + j)) for j, (rel, im) in enumerate(originals)] for e in edits
    }
    rows = [
        bench_neardup.simsearch_row("simsearch", index, groups, queries),
        bench_neardup.simsearch_row("simsearch, no pixel check", index, groups, queries, pixel_check=False),
    ]
    if not a.no_baselines:
        rows += bench_neardup.baseline_rows(root, rels, groups, queries)
    names = [r["method"] for r in rows]
    print(
        f"{len(originals)} copies per edit, each resized to 70% and re-saved (JPEG q75; WebP q50 for webp); R@1 / R@5\n"
    )
    print("| edit | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for e in edits:
        cells = [f"{r[e]['R@1']:.3f} / {r[e]['R@5']:.3f}" for r in rows]
        print(f"| {e} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
