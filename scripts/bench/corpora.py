"""Image folders for the rows that decode, index and query: generated or copied from Fashion-MNIST."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them if fewer)."""
    if n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def write_synthetic_pngs(root: Path, n: int, seed: int) -> list[Path]:
    """28×28 grayscale PNGs of three shape classes (discs, squares, stripes) with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    paths = []
    for i in range(n):
        kind = ("disc", "square", "stripes")[i % 3]
        cx, cy = rng.uniform(9, 19, 2)
        r = rng.uniform(5, 9)
        if kind == "disc":
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        elif kind == "square":
            m = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        else:
            m = ((yy + rng.integers(0, 6)) // 3) % 2 == 0
        img = np.clip(m * rng.uniform(150, 255) + rng.normal(0, 12, (28, 28)), 0, 255).astype(np.uint8)
        p = root / kind / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        save_png(img, p)
        paths.append(p)
    return paths


def write_synthetic_jpegs(root: Path, n: int, seed: int, w: int = 1920, h: int = 1080) -> list[Path]:
    """Photo-like RGB JPEGs (quality 90): colour gradients + smooth blobs + fine noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    paths = []
    for i in range(n):
        a, b, c = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
        base = (a * gx + b * gy) * 0.5 + c * 0.5  # (h, w, 3)
        blobs = rng.uniform(0, 255, (9, 16, 3)).astype(np.uint8)
        blobs = np.asarray(Image.fromarray(blobs).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        fine = rng.integers(-8, 9, (h, w, 3), dtype=np.int16).astype(np.float32)
        img = np.clip(0.55 * base + 0.45 * blobs + fine, 0, 255).astype(np.uint8)
        p = root / f"{i:04d}.jpg"
        Image.fromarray(img, "RGB").save(p, quality=90)
        paths.append(p)
    return paths


def save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


@dataclass
class Corpus:
    train: Path
    test: Path | None
    label: str
