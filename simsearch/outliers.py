"""The images least like the rest of an index (``simsearch outliers``).

``--by recon`` (default) asks the autoencoder two questions about each image and adds the answers
as robust z-scores:

1. **How badly does it redraw the image from a corrupted copy?** The model learned to undo its
   training corruptions (shift, zoom, light, noise …) on *this* corpus; for an image unlike the
   corpus the denoised output drifts towards what the corpus looks like. The denoising error
   (mean squared difference between the clean input and the reconstruction of ``DENOISE_VIEWS``
   corrupted copies, ``Index.corrupt``, a fixed seed per view) is measured rather than the clean
   reconstruction error because a model trained long enough learns to copy even unfamiliar
   pictures through cleanly; undoing damage needs the corpus's structure. A busy texture is
   harder to redraw however typical it is, so the error is normalised by detail (``reconerror``):
   a robust straight line is fitted to log(error) against log(detail) over the whole index, and
   the image's value is how far its log-error lies above that line.
2. **How unusual is its code?** log of the squared Mahalanobis distance of the image's code (the
   stored encoder output, ``Index.codes``) from the mean code, under the codes' covariance: a
   picture the encoder maps somewhere the corpus does not go.

The score is robust_z(1) + robust_z(2). The codes are stored; the denoising error needs the
pixels, so it is computed now from the files (one decode and ``DENOISE_VIEWS`` model passes);
the clean reconstruction error and the detail stored per image at index time (``recon.npy``,
format 3) are reported beside it.

``--by knn``: 1 − the mean cosine (base space: ``Index.base_vectors``) to the ``k`` nearest other
images: an image far from every other one.

Both report a robust z-score of the score, (score − median) / (1.4826 · MAD), and its percentile
in the index. numpy (+ faiss for knn); torch for the model passes of ``recon``.
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
DENOISE_VIEWS = 3  # corrupted copies per image for the denoising error
BATCH = 512


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
    computed: int = 0  # recon: images whose denoising error was computed now, from the files
    unreadable: int = 0  # recon: images that could not be read to compute them (left out)
    scores: np.ndarray | None = None  # every image's score (row order), for scripts
    stats: np.ndarray | None = None  # recon: every image's (mse, detail), row order
    parts: np.ndarray | None = None  # recon: every image's (denoising z, code z), row order

    def note(self) -> str:
        if self.method == "knn":
            return f"score = 1 - mean cosine to the {KNN_K} nearest other images"
        s = (
            "score = robust z of log(denoising error / the error expected at that level of detail) "
            "+ robust z of log(Mahalanobis distance of the code)"
        )
        if self.computed:
            s += f"; denoising errors of {self.computed} images computed now from the files"
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


def latent_distance(codes: np.ndarray) -> np.ndarray:
    """log of each code's squared Mahalanobis distance from the mean code under the codes'
    covariance (directions with no variance left out)."""
    c = np.asarray(codes, np.float64)
    c = c - c.mean(0)
    u, sv, _vt = np.linalg.svd(c, full_matrices=False)
    keep = sv > 1e-6 * (sv[0] if len(sv) and sv[0] > 0 else 1.0)
    d2 = (u[:, keep] ** 2).sum(1) * max(len(c) - 1, 1)
    return np.log(d2 + EPS)


def denoise_stats(
    index, progress: Callable[..., None] | None = None, workers: int = 1
) -> tuple[np.ndarray, np.ndarray, int]:
    """Every indexed image's denoising error and (mse, detail), computed from the files now.
    → (denoise (N,), stats (N, 2), unreadable); unreadable rows stay NaN."""
    from .pool import decode_files

    entries = index.entries()
    n = len(entries)
    paths = [index.root / e.path for e in entries]
    good, pixels = [], []
    for i, arr, _reason, _info in decode_files(paths, index.preprocess, workers=workers):
        if arr is not None:
            good.append(i)
            pixels.append(arr)
    den = np.full(n, np.nan)
    stats = reconerror.unknown(n)
    for start in range(0, len(pixels), BATCH):
        px = np.stack(pixels[start : start + BATCH])
        rows = np.asarray(good[start : start + BATCH])
        stats[rows] = reconerror.stats(px, index.reconstruct(px))
        err = np.zeros(len(px))
        for v in range(DENOISE_VIEWS):
            noisy = index.corrupt(px, seed=1_000_003 * v + start)
            err += reconerror.stats(px, index.reconstruct(noisy))[:, 0]
        den[rows] = err / DENOISE_VIEWS
        if progress:
            progress("denoise", min(start + BATCH, len(pixels)), len(pixels))
    return den, stats, n - len(good)


def scores(index, by: str = "recon", progress=None, workers: int = 1) -> Result:
    """Every image's outlier score (``by``: recon | knn), without ranking."""
    if by not in METHODS:
        raise SimsearchError(f"unknown outlier method {by!r} (choose from {', '.join(METHODS)})")
    n = len(index)
    if n < 3:
        raise SimsearchError(f"{index.path}: needs at least 3 indexed images to find outliers, has {n}")
    if by == "recon":
        den, stats, unreadable = denoise_stats(index, progress, workers)
        stored = index.recon_stats()  # the clean error and detail stored at index time, where there are
        if stored is not None:
            ok = np.isfinite(stored).all(1)
            stats[ok] = stored[ok]
        parts = np.stack([robust_z(detail_adjusted(den, stats[:, 1])), robust_z(latent_distance(index.codes()))], 1)
        s = parts.sum(1)
        s[~np.isfinite(den)] = np.nan
        return Result(by, [], n, n - unreadable, unreadable, s, stats, parts)
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
