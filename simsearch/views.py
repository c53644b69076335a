"""Test-time views: the embedding of an image is the mean encoder code over shifted copies.

``tta_views_for`` gives the default views for an input size (recorded in the index, so
queries use the same); ``shifted_views`` makes the shifted pixel batches and
``mean_over_views`` averages their codes back to one per image.  numpy only, so that the
torch encoder (``embed``) and the numpy one (``api``'s cold-query path) share them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TTA_OFFSETS", "mean_over_views", "shifted_views", "tta_views_for"]


TTA_OFFSETS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (dy, dx) in units of the shift
# (validation, 29-epoch default model: these 5 views lift P@10 0.8616 → 0.8658; the full 3×3
# grid of 9 views reached 0.8660 for 9/5 of the cost — scripts/research/RESULTS.md)


def tta_views_for(size: int) -> list[list[int]]:
    """The default test-time views for a ``size`` px model input, as [dy, dx] pixel offsets:
    the image and its shifts up, down, left and right by 1 px at 28 px (about half the ±2/28
    training-time shift at any size). Recorded in the index, so queries use the same views."""
    s = max(1, round(size / 28))
    return [[dy * s, dx * s] for dy, dx in TTA_OFFSETS]


def shifted_views(pixels: np.ndarray, views) -> np.ndarray:
    """(N, C, H, W) → (V·N, C, H, W): the images translated by each [dy, dx] of ``views``
    (view-major; edges replicated, as the training-time shifts fill them). No views, or only
    [0, 0] → the images alone."""
    views = [tuple(int(a) for a in v) for v in (views or [])]
    if len(pixels) == 0 or all(v == (0, 0) for v in views):
        return pixels
    n, _, h, w = pixels.shape
    s = max(max(abs(a) for a in v) for v in views)
    padded = np.pad(pixels, ((0, 0), (0, 0), (s, s), (s, s)), mode="edge")
    out = np.empty((len(views), *pixels.shape), pixels.dtype)
    for i, (dy, dx) in enumerate(views):
        out[i] = padded[:, :, s + dy : s + dy + h, s + dx : s + dx + w]
    return out.reshape(len(views) * n, *pixels.shape[1:])


def mean_over_views(codes: np.ndarray, n: int) -> np.ndarray:
    """(V·N, D) codes of ``shifted_views`` → (N, D) mean per image."""
    if len(codes) == n:
        return codes
    return codes.reshape(-1, n, codes.shape[1]).mean(0, dtype=np.float32)
