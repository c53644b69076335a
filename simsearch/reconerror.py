"""Per-image reconstruction statistics: how well the autoencoder redraws an image, and how much
detail the image has. numpy only: the embedding pass (``embed.py``) computes them from the same
chunk of decoded pixels that it makes the codes from, and ``outliers.py`` computes them from the
files for images whose values an index does not store (an index written before they were).

Columns of the (N, 3) float32 array that an index stores (``COLUMNS``; ``recon.npy``):

- ``mse``: mean squared difference between the model input and its reconstruction, on a 0–1
  pixel scale, both as uint8 (what ``Index.reconstruct`` returns);
- ``detail``: mean squared difference between neighbouring pixels of the input (0–1 scale), the
  image's "busyness". A fine texture is hard to redraw however typical it is; ``outliers.py``
  divides that expectation out before it ranks anything;
- ``denoise_mse``: the denoising error, the mean over ``DENOISE_VIEWS`` corrupted copies (the
  model's training corruptions, ``Index.corrupt`` with the seeds ``DENOISE_SEEDS``) of the mse
  between the clean input and the model's reconstruction of the copy. Each copy depends only on
  its seed and the image's pixels (``train.corrupt_each``), so the value does not depend on what
  else was embedded with the image.

NaN marks a value that is not known (an image embedded before its column existed).
"""

from __future__ import annotations

import numpy as np

COLUMNS = ("mse", "detail", "denoise_mse")
DENOISE_VIEWS = 3  # corrupted copies per image for the denoising error
DENOISE_SEEDS = tuple(range(DENOISE_VIEWS))  # the seed of each copy (``Index.corrupt(pixels, seed)``)


def stats(pixels: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) inputs and their uint8 reconstructions → float32 (N, 2): mse, detail."""
    x = np.asarray(pixels, np.float32) / 255.0
    y = np.asarray(recon, np.float32) / 255.0
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    mse = ((x - y) ** 2).reshape(n, -1).mean(1)
    dy = (np.diff(x, axis=2) ** 2).reshape(n, -1).mean(1) if x.shape[2] > 1 else np.zeros(n, np.float32)
    dx = (np.diff(x, axis=3) ** 2).reshape(n, -1).mean(1) if x.shape[3] > 1 else np.zeros(n, np.float32)
    return np.stack([mse, (dx + dy) / 2], axis=1).astype(np.float32)


def denoise(pixels: np.ndarray, denoised: list[np.ndarray]) -> np.ndarray:
    """uint8 (N, C, H, W) inputs and the model's uint8 reconstructions of each corrupted copy
    (one array per seed of ``DENOISE_SEEDS``) → float32 (N,): the denoising error."""
    x = np.asarray(pixels, np.float32) / 255.0
    n = len(x)
    err = np.zeros(n, np.float64)
    for y in denoised:
        err += ((x - np.asarray(y, np.float32) / 255.0) ** 2).reshape(n, -1).mean(1)
    return (err / max(len(denoised), 1)).astype(np.float32)


def unknown(n: int) -> np.ndarray:
    """(n, 3) rows of NaN: images whose statistics were not computed (an older index)."""
    return np.full((n, len(COLUMNS)), np.nan, np.float32)
