"""Per-image reconstruction statistics: how well the autoencoder redraws an image, and how much
detail the image has. numpy only: the embedding pass (``embed.py``) computes them from the same
forward pass that makes the codes, and ``outliers.py`` recomputes them on demand for an index
written before they were stored (format < 3).

Columns of the (N, 2) float32 array (``COLUMNS``):

- ``mse``: mean squared difference between the model input and its reconstruction, on a 0–1
  pixel scale, both as uint8 (what ``Index.reconstruct`` returns);
- ``detail``: mean squared difference between neighbouring pixels of the input (0–1 scale), the
  image's "busyness". A fine texture is hard to redraw however typical it is; ``outliers.py``
  divides that expectation out before it ranks anything.
"""

from __future__ import annotations

import numpy as np

COLUMNS = ("mse", "detail")


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


def unknown(n: int) -> np.ndarray:
    """(n, 2) rows of NaN: images whose statistics were not computed (an older index)."""
    return np.full((n, 2), np.nan, np.float32)
