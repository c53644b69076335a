"""k nearest neighbours of every vector of a set among the same set, in batches (never N×N).

Shared by ``dupes`` (pairs above a threshold) and ``outliers --by knn``. Inner product over
L2-normalised rows (= cosine). Exact (FAISS flat, BLAS) up to ``EXACT_MAX`` vectors; above, an
IVF index over k-means cells (``ann.ivf_cells``), probing ``nprobe`` cells. numpy; faiss lazy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

EXACT_MAX = 200_000  # flat search of 200k × 200k × 256-d is minutes on 2 cores; above, IVF
BATCH = 8192


def build(vectors: np.ndarray, exact: bool | None = None, nprobe: int = 16, seed: int = 0):
    """A FAISS inner-product index over ``vectors`` (row number = id)."""
    import faiss

    from .ann import ivf_cells

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if exact is None:
        exact = n <= EXACT_MAX
    index: Any
    if exact or n < 1000:
        index = faiss.IndexFlatIP(d)
    else:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, ivf_cells(n), faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, size=min(n, 40 * index.nlist), replace=False))]
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = nprobe
    index.add(x)
    return index


def knn(
    vectors: np.ndarray,
    k: int,
    exact: bool | None = None,
    batch: int = BATCH,
    index=None,
    progress: Callable[..., None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) similarities and row numbers of each row's k nearest other rows, best first (itself
    left out; -1 / -inf where fewer exist)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    index = index if index is not None else build(x, exact)
    sims, rows = _search(index, x, np.arange(n), min(k, max(n - 1, 0)), batch, progress)
    if sims.shape[1] < k:  # fewer other rows than k
        pad = k - sims.shape[1]
        sims = np.hstack([sims, np.full((n, pad), -np.inf, np.float32)])
        rows = np.hstack([rows, np.full((n, pad), -1, np.int64)])
    return sims, rows


def range_pairs(
    vectors: np.ndarray,
    threshold: float,
    k: int = 16,
    max_k: int = 256,
    exact: bool | None = None,
    batch: int = BATCH,
    progress: Callable[..., None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (a < b) with similarity ≥ ``threshold`` → (a, b, sim), sorted by (-sim, a, b).

    A k-NN search in batches; the rows whose k-th neighbour still reaches the threshold are searched
    again with 2k, 4k … up to ``max_k`` neighbours (a range search that cannot blow up on a low
    threshold: a row has at most ``max_k`` partners)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    index = build(x, exact)
    a_parts, b_parts, s_parts = [], [], []
    todo = np.arange(n)
    kk = min(k, n - 1)
    while len(todo):
        sims, rows = _search(index, x, todo, kk, batch)
        hit = sims >= threshold
        full = hit[:, -1] if kk < n - 1 else np.zeros(len(todo), bool)
        done = ~full if kk < max_k else np.ones(len(todo), bool)
        r, c = np.nonzero(hit & done[:, None])
        a_parts.append(todo[r])
        b_parts.append(rows[r, c])
        s_parts.append(sims[r, c])
        todo = todo[~done]
        kk = min(kk * 2, max_k, n - 1)
        if progress:
            progress("pairs", n - len(todo), n)
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    s = np.concatenate(s_parts).astype(np.float32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # each pair is usually found from both ends: keep one, with the larger of the two scores
    key = lo * n + hi
    order = np.lexsort((-s, key))
    key, lo, hi, s = key[order], lo[order], hi[order], s[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    lo, hi, s = lo[first], hi[first], s[first]
    s = np.round(s, 6)  # the last bits of a BLAS sum depend on threads: not on the order of groups
    order = np.lexsort((hi, lo, -s))
    return lo[order], hi[order], s[order]


def _search(index, x: np.ndarray, todo: np.ndarray, k: int, batch: int, progress=None):
    """k nearest other rows of the rows ``todo`` → (sims, rows), each (len(todo), k)."""
    sims = np.full((len(todo), k), -np.inf, np.float32)
    rows = np.full((len(todo), k), -1, np.int64)
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        s, j = index.search(x[part], k + 1)
        keep = (j != part[:, None]) & (j >= 0)
        # the row itself is usually first; push it out (stable) and keep the first k others
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(s, order, 1)
        j = np.take_along_axis(j, order, 1)
        ok = np.take_along_axis(keep, order, 1)
        sims[start : start + len(part)] = np.where(ok, s, -np.inf)
        rows[start : start + len(part)] = np.where(ok, j, -1)
        if progress:
            progress("neighbours", start + len(part), len(todo))
    return sims, rows
