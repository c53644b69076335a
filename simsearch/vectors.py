"""Vector post-processing shared by indexing and querying (numpy only, no torch).

Raw encoder codes → centred (minus the corpus mean learned at index time) →
L2-normalised, so that inner product = cosine similarity.
"""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Centre (subtract ``mean``) then L2-normalise rows; float32. All-zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if mean is not None:
        v = v - np.asarray(mean, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def corpus_mean(vectors: np.ndarray) -> np.ndarray:
    """Mean of the raw codes: the centre learned at index time and stored in the index."""
    if len(vectors) == 0:
        return np.zeros(vectors.shape[1], np.float32)
    return np.asarray(vectors, dtype=np.float64).mean(axis=0).astype(np.float32)
