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
   stored encoder output, ``Index.codes``) from the centre of the codes, under their covariance: a
   picture the encoder maps somewhere the corpus does not go. Centre and covariance are estimated
   robustly (``latent_distance``: from the 90% of codes closest to the centre), so that a handful of
   unusual images that resemble each other do not stretch the covariance towards themselves and hide.

The score is robust_z(1) + robust_z(2). Both are stored at index time: the codes, and the
denoising error with the clean reconstruction error and the detail (``recon.npy``, format 4,
``reconerror.COLUMNS``), computed by the embedding pass from the same decoded pixels. Only the
images whose values the index does not know (embedded by an older release: format 3 stored no
denoising error, format 2 nothing) are decoded from their files now and run through the model
(``Index.corrupt`` / ``Index.reconstruct``, the same seeds and the same arithmetic as at index
time: ``reconerror.denoise``); ``Result.computed`` says how many.

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
from .reconerror import DENOISE_SEEDS, DENOISE_VIEWS  # noqa: F401 — DENOISE_VIEWS re-exported

METHODS = ("recon", "knn")
KNN_K = 5
# the code distance's robust estimate (``latent_distance``): recomputed twice from the 90% of codes closest to
# the last estimate. On the development plant (20 clip-art images among 5,000 Fashion-MNIST images) the plain
# estimate put 19 of them in the top 40 (code distance alone, and with the denoising error); with any share
# from 97.5% to 75% all 20 came first (ranks 1–20)
CODE_KEEP = 0.9
CODE_STEPS = 2
EPS = 1e-6
BATCH = 512


@dataclass
class Outlier:
    rank: int
    id: int
    path: str  # relative to the indexed folder
    score: float
    z: float
    percentile: float  # share of the index scoring at most this, in %
    mse: float | None = None  # recon only: clean reconstruction error
    detail: float | None = None
    denoise: float | None = None  # recon only: denoising error

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Result:
    method: str
    outliers: list[Outlier]
    images: int
    computed: int = 0  # recon: images whose statistics the index did not store, computed now from the files
    unreadable: int = 0  # recon: images that could not be read to compute them (left out)
    scores: np.ndarray | None = None  # every image's score (row order), for scripts
    stats: np.ndarray | None = None  # recon: every image's (mse, detail, denoise_mse), row order
    parts: np.ndarray | None = None  # recon: every image's (denoising z, code z), row order

    def note(self) -> str:
        if self.method == "knn":
            return f"score = 1 - mean cosine to the {KNN_K} nearest other images"
        s = (
            "score = robust z of log(denoising error / the error expected at that level of detail) "
            "+ robust z of log(Mahalanobis distance of the code, from the 90% of codes nearest the centre)"
        )
        if self.computed:
            s += f"; {self.computed} images' errors computed now from the files (the index did not store them)"
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


def latent_distance(codes: np.ndarray, keep: float = CODE_KEEP, steps: int = CODE_STEPS) -> np.ndarray:
    """log of each code's squared Mahalanobis distance from the centre of the codes, under their
    covariance (directions with no variance left out), both estimated robustly: from all codes first,
    then ``steps`` times again from the share ``keep`` of the codes closest to the last estimate (the
    concentration steps of the minimum-covariance-determinant estimator). Unusual images that resemble
    each other would otherwise widen the covariance along the very direction they lie in and mask
    one another (``keep`` 1 or ``steps`` 0: the plain estimate)."""
    c = np.asarray(codes, np.float64)
    use = np.ones(len(c), bool)
    for step in range(steps + 1):
        mu = c[use].mean(0)
        _u, sv, vt = np.linalg.svd(c[use] - mu, full_matrices=False)
        k = sv > 1e-6 * (sv[0] if len(sv) and sv[0] > 0 else 1.0)
        d2 = (((c - mu) @ vt[k].T / sv[k]) ** 2).sum(1) * max(int(use.sum()) - 1, 1)
        if step < steps and keep < 1.0:
            use = d2 <= np.quantile(d2, keep)
            if use.sum() <= k.sum():  # too few codes left to estimate the covariance: keep the last one
                break
    return np.log(d2 + EPS)


def file_stats(
    index, rows: np.ndarray | None = None, progress: Callable[..., None] | None = None, workers: int = 1
) -> tuple[np.ndarray, int]:
    """Reconstruction statistics (``reconerror.COLUMNS``: mse, detail, denoise_mse) of the indexed
    images in ``rows`` (default: all), computed now from their files, as the embedding pass computes
    them at index time. → (stats (len(rows), 3), unreadable); an unreadable image's row stays NaN."""
    from .pool import decode_files

    entries = index.entries()
    rows = np.arange(len(entries)) if rows is None else np.asarray(rows, np.int64)
    paths = [index.root / entries[r].path for r in rows]
    good, pixels = [], []
    for i, arr, _reason, _info in decode_files(paths, index.preprocess, workers=workers):
        if arr is not None:
            good.append(i)
            pixels.append(arr)
    out = reconerror.unknown(len(rows))
    for start in range(0, len(pixels), BATCH):
        px = np.stack(pixels[start : start + BATCH])
        at = np.asarray(good[start : start + BATCH])
        out[at, :2] = reconerror.stats(px, index.reconstruct(px))
        out[at, 2] = reconerror.denoise(px, [index.reconstruct(index.corrupt(px, seed)) for seed in DENOISE_SEEDS])
        if progress:
            progress("denoise", min(start + BATCH, len(pixels)), len(pixels))
    return out, len(rows) - len(good)


def recon_stats(index, progress=None, workers: int = 1) -> tuple[np.ndarray, int, int]:
    """Every indexed image's (mse, detail, denoise_mse): as stored at index time, and computed from
    the files (``file_stats``) for the images with a value the index does not know (NaN).
    → (stats (N, 3), computed, unreadable); an unreadable image's unknown values stay NaN."""
    n = len(index)
    stats = index.recon_stats()
    stats = reconerror.unknown(n) if stats is None else stats
    need = np.flatnonzero(~np.isfinite(stats).all(1))
    if not len(need):
        return stats, 0, 0
    fresh, unreadable = file_stats(index, need, progress, workers)
    stats[need] = np.where(np.isfinite(stats[need]), stats[need], fresh)  # a stored value is kept
    return stats, len(need) - unreadable, unreadable


def scores(index, by: str = "recon", progress=None, workers: int = 1) -> Result:
    """Every image's outlier score (``by``: recon | knn), without ranking."""
    if by not in METHODS:
        raise SimsearchError(f"unknown outlier method {by!r} (choose from {', '.join(METHODS)})")
    n = len(index)
    if n < 3:
        raise SimsearchError(f"{index.path}: needs at least 3 indexed images to find outliers, has {n}")
    if by == "recon":
        stats, computed, unreadable = recon_stats(index, progress, workers)
        den = stats[:, 2].astype(np.float64)
        parts = np.stack([robust_z(detail_adjusted(den, stats[:, 1])), robust_z(latent_distance(index.codes()))], 1)
        s = parts.sum(1)
        s[~np.isfinite(den)] = np.nan
        return Result(by, [], n, computed, unreadable, s, stats, parts)
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
                None if stats is None else round(float(stats[r, 2]), 6),
            )
        )
    return res
