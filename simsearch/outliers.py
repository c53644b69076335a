"""The images least like the rest of an index (``simsearch outliers``).

``--by recon`` (default): how badly the autoencoder redraws an image. The model learned to
redraw *this* corpus, so an image unlike it comes back blurred or wrong. The statistics (``mse``,
``detail``: ``reconerror.py``) are stored per image at index time by the same encoder pass that
makes its code (format 3), so an incremental update computes them only for the new images; an
index written before format 3 (or rows embedded before it) gets them computed here, on demand,
and the result says how many. A busy texture is harder to redraw than a plain shape however
typical it is, so the error is normalised by detail: a robust straight line is fitted to
log(mse) against log(detail) over the whole index, and an image's score is how far its log-error
lies above that line (log of "times worse than expected for an image this busy").

``--by knn``: 1 − the mean cosine (base space: ``Index.base_vectors``) to the ``k`` nearest other
images: an image far from every other one.

Both report a robust z-score, (score − median) / (1.4826 · MAD), and the percentile of the score
in the index. numpy (+ faiss for knn); torch only to compute missing statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from . import neighbours, reconerror
from .errors import SimsearchError

METHODS = ("recon", "knn")
KNN_K = 5
EPS = 1e-6


@dataclass
class Outlier:
    rank: int
    id: int
    path: str  # relative to the indexed folder
    score: float
    z: float
    percentile: float  # share of the index scoring at most this, in %
    mse: float | None = None  # recon only
    detail: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Result:
    method: str
    outliers: list[Outlier]
    images: int
    computed: int = 0  # recon: images whose statistics were computed now (not stored in the index)
    unreadable: int = 0  # recon: images that could not be read to compute them (left out)
    scores: np.ndarray | None = None  # every image's score (row order), for scripts
    stats: np.ndarray | None = None  # recon: every image's (mse, detail), row order

    def note(self) -> str:
        if self.method == "knn":
            return f"score = 1 - mean cosine to the {KNN_K} nearest other images"
        s = "score = log(reconstruction error / the error expected at that level of detail)"
        if self.computed:
            s += (
                f"; reconstruction errors of {self.computed} images computed now (the index stores none for them: "
                "written before format 3; `simsearch index --rebuild` stores them)"
            )
        if self.unreadable:
            s += f"; {self.unreadable} unreadable images left out"
        return s


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x − median) / (1.4826 · MAD); a MAD of 0 falls back to the mean absolute deviation."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    med = np.median(x[ok]) if ok.any() else 0.0
    mad = 1.4826 * np.median(np.abs(x[ok] - med)) if ok.any() else 0.0
    if mad <= 0:
        mad = 1.2533 * np.mean(np.abs(x[ok] - med)) if ok.any() else 0.0
    return (x - med) / (mad if mad > 0 else 1.0)


def detail_adjusted(mse: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """log(mse) minus a robust straight-line prediction from log(detail): the part of the
    reconstruction error that the image's busyness does not explain."""
    y = np.log(np.asarray(mse, np.float64) + EPS)
    x = np.log(np.asarray(detail, np.float64) + EPS)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return y - np.median(y[ok]) if ok.any() else y
    use = ok.copy()
    for _ in range(3):  # least squares, then again without the points far off the line
        slope, icept = np.polyfit(x[use], y[use], 1)
        r = y - (slope * x + icept)
        z = robust_z(np.where(ok, r, np.nan))
        use = ok & (np.abs(z) < 2.5)
        if use.sum() < 3:
            break
    slope = float(np.clip(slope, 0.0, 2.0))  # more detail never makes an image *easier* to redraw
    icept = float(np.median(y[ok] - slope * x[ok]))
    return y - (slope * x + icept)


def recon_stats(index, progress: Callable[..., None] | None = None, workers: int = 1) -> tuple[np.ndarray, int, int]:
    """Every indexed image's (mse, detail): stored ones, the rest computed now from the files.
    → (stats (N, 2), computed, unreadable); unreadable rows stay NaN."""
    stats = index.recon_stats()
    n = len(index)
    stats = reconerror.unknown(n) if stats is None else stats
    missing = np.flatnonzero(~np.isfinite(stats).all(1))
    if not len(missing):
        return stats, 0, 0
    from .pool import decode_files

    entries = index.entries()
    paths = [index.root / entries[r].path for r in missing]
    good, pixels = [], []
    for i, arr, _reason, _info in decode_files(paths, index.preprocess, workers=workers):
        if arr is not None:
            good.append(missing[i])
            pixels.append(arr)
    batch = 512
    for start in range(0, len(pixels), batch):
        px = np.stack(pixels[start : start + batch])
        stats[np.asarray(good[start : start + batch])] = reconerror.stats(px, index.reconstruct(px))
        if progress:
            progress("reconstruct", min(start + batch, len(pixels)), len(pixels))
    return stats, len(good), len(missing) - len(good)


def scores(index, by: str = "recon", progress=None, workers: int = 1) -> Result:
    """Every image's outlier score (``by``: recon | knn), without ranking."""
    if by not in METHODS:
        raise SimsearchError(f"unknown outlier method {by!r} (choose from {', '.join(METHODS)})")
    n = len(index)
    if n < 3:
        raise SimsearchError(f"{index.path}: needs at least 3 indexed images to find outliers, has {n}")
    if by == "recon":
        stats, computed, unreadable = recon_stats(index, progress, workers)
        s = detail_adjusted(stats[:, 0], stats[:, 1])
        return Result(by, [], n, computed, unreadable, s, stats)
    sims, _rows = neighbours.knn(index.base_vectors(), min(KNN_K, n - 1), progress=progress)
    s = 1.0 - np.mean(np.where(np.isfinite(sims), sims, 0.0), axis=1)
    return Result(by, [], n, scores=s.astype(np.float64))


def find(index, n: int = 20, by: str = "recon", progress=None, workers: int = 1) -> Result:
    """The ``n`` highest-scoring images of an open ``simsearch.Index`` (see the module docstring)."""
    if n < 1:
        raise SimsearchError(f"-n must be at least 1, got {n}")
    res = scores(index, by, progress, workers)
    s = res.scores
    assert s is not None, "scores() always fills the scores"
    ok = np.isfinite(s)
    z = robust_z(s)
    pct = np.full(len(s), np.nan)
    order_ok = np.argsort(s[ok], kind="stable")
    ranks = np.empty(int(ok.sum()))
    ranks[order_ok] = np.arange(1, ok.sum() + 1)
    pct[ok] = 100.0 * ranks / max(ok.sum(), 1)
    entries = index.entries()
    cand = np.flatnonzero(ok)
    top = cand[np.lexsort((np.array([entries[r].id for r in cand]), -s[cand]))][:n]
    stats = res.stats
    for rank, r in enumerate(top, 1):
        res.outliers.append(
            Outlier(
                rank,
                int(entries[r].id),
                entries[r].path,
                round(float(s[r]), 5),
                round(float(z[r]), 3),
                round(float(pct[r]), 3),
                None if stats is None else round(float(stats[r, 0]), 6),
                None if stats is None else round(float(stats[r, 1]), 6),
            )
        )
    return res
