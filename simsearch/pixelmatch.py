"""Pixel-level check of a candidate duplicate pair: is one picture a resized, re-compressed or
slightly cropped copy of the other, colours included?

The model's cosine says two pictures *look alike*; it cannot tell a copy from the same drawing
recoloured, or from a variant with one detail changed (an autoencoder trained to ignore light and
colour edits is built not to). This check compares the pixels themselves:

1. Each picture is flattened onto white (``preprocess.to_display``, what the model sees) and
   box-resampled, ignoring its aspect ratio, to a ``GRID``×``GRID`` RGB grid (``grid``).
2. A copy may have been cropped by a few percent a side, so the two grids are aligned first: one
   picture's grid is cropped by each side's fraction in ``CROPS`` and box-resampled to a
   ``SIDE``×``SIDE`` thumbnail (a separable linear map, so every crop is two small matrix
   products) and compared with the other's uncropped thumbnail by mean absolute difference. The
   crop is searched one axis pair at a time (left/right, then top/bottom, then left/right again),
   in both directions (A a crop of B, and B a crop of A); the closer one is the alignment. (A
   second pass at half the step aligned crops better but, on the development set, let the
   calibration pick a lower threshold and lose more precision than it won recall: not used.)
3. ``similarity`` is the Pearson correlation of the two aligned RGB thumbnails (all pixels and
   channels as one vector). A background both pictures share adds nothing to it, so two different
   drawings on white do not look alike merely for their white; a recoloured area or a changed
   detail lowers it; a re-saved or resized copy keeps it near 1.

``SIDE`` = 48 was chosen on a development set (openclipart-png with planted copies) among 24,
32, 48 and 64: coarser thumbnails cannot see what tells variants of one drawing apart, finer ones
see the blur of a downsized copy. numpy + Pillow only; no model.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

GRID = 96  # each picture is first resampled to GRID×GRID RGB
SIDE = 48  # aligned thumbnails compared at SIDE×SIDE (chosen on the development set: 24, 32, 48, 64 tried)
CROPS = (0.0, 0.025, 0.05, 0.075)  # crop fractions tried per side (copies are cropped by up to ~5% a side)
# A thumbnail whose pixels' RMS deviation from their mean is below FLAT is flat (one grey level). Float32
# rounding alone leaves up to ~2e-7 on a flat grid's cropped thumbnails; one grid cell off by 1/255 leaves
# ~7e-6. (An absolute norm of 1e-6 sat below that rounding: flat greys then correlated ±1 by chance.)
FLAT = 1e-6


def grid(img: Image.Image) -> np.ndarray:
    """A picture as float32 (GRID, GRID, 3) RGB in 0–1, flattened onto white, aspect ignored."""
    from .preprocess import to_display

    rgb = to_display(img)
    if max(rgb.size) > 4 * GRID:
        rgb = rgb.copy()
        rgb.thumbnail((4 * GRID, 4 * GRID), Image.Resampling.BOX)
    small = rgb.resize((GRID, GRID), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _box(n_src: int, lo: float, hi: float, n_out: int) -> np.ndarray:
    """(n_out, n_src) weights that box-average the span [lo, hi) (fractions of n_src) into n_out cells."""
    edges = (lo + (hi - lo) * np.arange(n_out + 1) / n_out) * n_src
    src = np.arange(n_src + 1, dtype=np.float64)
    left = np.maximum(edges[:-1, None], src[None, :-1])
    right = np.minimum(edges[1:, None], src[None, 1:])
    w = np.clip(right - left, 0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=4)
def _crop_maps(n_src: int, n_out: int, crops: tuple[float, ...]) -> np.ndarray:
    """(len(crops)², n_out, n_src): one box map per (low-side, high-side) crop pair."""
    return np.stack([_box(n_src, a, 1.0 - b, n_out) for a in crops for b in crops])


def _rows(m: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Box map(s) ``m`` ((K,) n_out, n_src) applied along the first axis of ``a`` (n_src, W, 3)."""
    out = m.reshape(-1, m.shape[-1]) @ a.reshape(a.shape[0], -1)
    return out.reshape(*m.shape[:-1], *a.shape[1:])


def _cols(m: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Box map(s) ``m`` ((K,) n_out, n_src) applied along the second axis of ``a`` (H, n_src, 3)."""
    t = _rows(m, a.transpose(1, 0, 2))  # (K, n_out, H, 3)
    return np.swapaxes(t, -3, -2)


def _one_way(a: np.ndarray, tb: np.ndarray, crops: tuple[float, ...]) -> tuple[float, np.ndarray]:
    """The crop of ``a`` closest to ``tb`` in mean absolute difference → (that mean, the crop's
    thumbnail, shaped like ``tb``). Coordinate search over ``crops``, one axis pair at a time:
    left/right, then top/bottom, then left/right again."""
    maps = _crop_maps(a.shape[0], tb.shape[0], crops)
    rows = cols = maps[0]  # no crop
    best, out = np.inf, tb
    for step in range(3):
        if step % 2 == 0:  # choose left/right given the current top/bottom
            cand = _cols(maps, _rows(rows, a))
        else:  # choose top/bottom given the current left/right
            cand = _rows(maps, _cols(cols, a))
        err = np.abs(cand - tb[None]).mean(axis=(1, 2, 3))
        k = int(np.argmin(err))
        if step % 2 == 0:
            cols = maps[k]
        else:
            rows = maps[k]
        if err[k] < best:
            best, out = float(err[k]), cand[k]
    return best, out


def thumb(g: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A ``grid``'s uncropped side×side thumbnail."""
    m = _crop_maps(g.shape[0], side, CROPS)[0]
    return _cols(m, _rows(m, g))


def aligned(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS):
    """Thumbnails of the two ``grid``s at their best alignment (either one cropped) → (ta, tb)."""
    tb, ta = thumb(gb, side), thumb(ga, side)
    ea, ca = _one_way(ga, tb, crops)
    eb, cb = _one_way(gb, ta, crops)
    return (ca, tb) if ea <= eb else (ta, cb)


def similarity(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS) -> float:
    """Pearson correlation of the two ``grid``s' aligned RGB thumbnails (see the module docstring):
    1.0 for identical pixels, indifferent to a plain background both share. A flat picture (one
    grey level, see ``FLAT``) matches only another flat picture, by 1 − their mean absolute difference."""
    ta, tb = aligned(ga, gb, side, crops)
    x, y = ta.ravel() - ta.mean(), tb.ravel() - tb.mean()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    flat = FLAT * np.sqrt(x.size)
    if nx < flat or ny < flat:  # a flat picture: only another flat picture of the same colour matches
        return float(1.0 - np.abs(ta - tb).mean()) if nx < flat and ny < flat else 0.0
    return float(x @ y / (nx * ny))


def load_grid(path) -> np.ndarray | None:
    """``grid`` of an image file; None when it cannot be read now (it vanished or stopped decoding)."""
    from .decode import open_image

    try:
        return grid(open_image(path))
    except Exception:  # noqa: BLE001 — any unreadable file: the pair stays unverified
        return None


def similarities(pairs, grid_of) -> np.ndarray:
    """``similarity`` of each (a, b) in ``pairs``, where ``grid_of(key)`` gives a picture's grid or
    None (→ NaN for that pair). One BLAS thread: these are many tiny products."""
    from threadpoolctl import threadpool_limits

    out = np.full(len(pairs), np.nan, np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        for i, (a, b) in enumerate(pairs):
            ga, gb = grid_of(a), grid_of(b)
            if ga is not None and gb is not None:
                out[i] = similarity(ga, gb)
    return out
