"""Raw encoder codes → search vectors. Fitted on the gallery at index time (no labels),
stored in the index, applied identically to indexed images and to queries.

1. **centre**  subtract the gallery mean;
2. **whiten**  (optional) rotate onto the principal axes and scale axis i by
   eigenvalue_i^-power — evens out a few dominant directions; L2-normalise.
   This is the *base* vector: cosine on it is the plain embedding similarity.
3. **diffusion** (optional) spectral coordinates of the gallery's mutual k-NN
   graph: affinities s^γ between mutual neighbours, symmetric normalisation
   S = D^-½ W D^-½, its top ``rank`` eigenvectors U and the diffusion filter
   h(λ) = 1 / (1 - αλ) (Iscen et al., "Fast Spectral Ranking", CVPR 2018).
   A gallery image's coordinates are its row of U·√h; a new image (a query, or
   one added later) is placed through its k nearest gallery ("anchor") images:
   (y·U)·√h with y its affinities to them. Large anchor sets are searched
   through inverted lists (k-means cells fitted with the graph, ``nprobe``
   tuned to ≥ 0.99 recall of the k neighbours) instead of a full scan. Images along the same manifold get
   close coordinates even when their plain cosine is moderate, which lifts mAP.

The search vector is L2-normalise([base, weight · normalise(coordinates)]), so
inner product = a blend of embedding cosine and diffusion similarity. The
anchors (the gallery at fit time; above ``max_anchors`` images, a uniform sample of it) stay
fixed until the next ``--retrain`` / ``--rebuild``, like the model; images added later are
projected like queries.

4. **near-copies** — diffusion places a query through its neighbours, which
   would rank the neighbours of a copy above the copy's own original. So a
   query whose base cosine to its nearest gallery image reaches
   ``copy_threshold`` is taken for a copy of it and gets that image's
   diffusion coordinates (``with_coords``; ``query.place_copies``): the original
   then ranks first, with score (cos + w²)/(1 + w²), and the rest of the ranking
   is the original's neighbourhood. ``copy_threshold`` is calibrated at index
   time on transformed copies of the gallery's own images against their nearest
   distinct neighbours (``calibrate``), never on labels; None = no placement.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import configs


@dataclass(frozen=True)
class PostConfig:
    whiten: float = 0.25  # PCA whitening power (0 = off)
    diffusion: bool = True
    k: int = 15  # neighbours in the k-NN graph (and for placing new images)
    gamma: float = 3.0  # affinity = cosine^gamma
    alpha: float = 0.99  # diffusion strength
    rank: int = 128  # eigenvectors kept
    weight: float = 1.0  # weight of the diffusion part in the search vector
    min_gallery: int = 2000  # smaller galleries skip diffusion (too little graph to learn from)
    # larger galleries fit the graph on a uniform sample of this many (bounded memory); the rest are placed like queries
    max_anchors: int = 100_000
    copies: bool = True  # calibrate a near-copy threshold and place copies at their original (step 4)

    def to_dict(self) -> dict:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PostConfig:
        return configs.from_dict(cls, d)


ANCHOR_IVF_MIN = 20_000  # fewer anchors: an exact scan is fast enough
ANCHOR_RECALL = 0.99  # recall of a new image's k anchor neighbours the inverted lists must reach
PROJECT_CHUNK = 8192  # images placed through their anchors at a time
SEARCH_CHUNK = 65536  # raw codes turned into search vectors at a time (the temporaries are a few times the chunk)
ANCHOR_NPROBE_MAX = 256  # the largest nprobe tried before scanning every cell


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _in_chunks(rows: int, width: int, make: Callable[[slice], np.ndarray]) -> np.ndarray:
    """(rows, width) float32 made ``SEARCH_CHUNK`` rows at a time by ``make(rows slice)``: the
    temporaries of ``make`` are bounded by the chunk, not the whole array."""
    if rows <= SEARCH_CHUNK:
        return make(slice(0, rows))
    out = np.empty((rows, width), np.float32)
    for s in range(0, rows, SEARCH_CHUNK):
        out[s : s + SEARCH_CHUNK] = make(slice(s, s + SEARCH_CHUNK))
    return out


class PostProcess:
    """A fitted post-processing: see the module docstring."""

    def __init__(
        self,
        cfg: PostConfig,
        mean: np.ndarray,
        whitener: np.ndarray | None = None,
        anchor_ids: np.ndarray | None = None,
        anchors: np.ndarray | None = None,
        U: np.ndarray | None = None,
        h: np.ndarray | None = None,
        anchor_centroids: np.ndarray | None = None,
        anchor_lists: np.ndarray | None = None,
        anchor_nprobe: np.ndarray | int | None = None,
        copy_threshold: np.ndarray | float | None = None,
    ):
        self.cfg = cfg
        self.mean = np.asarray(mean, np.float32)
        self.whitener = whitener  # (D, D) or None
        self.anchor_ids = anchor_ids  # (M,) ids of the gallery images the graph was built on
        self.anchors = anchors  # (M, D) their base vectors
        self.U = U  # (M, r)
        self.h = h  # (r,)
        self.anchor_centroids = anchor_centroids  # (nlist, D) k-means cells over the anchors, or None
        self.anchor_lists = anchor_lists  # (M,) cell of each anchor
        self.anchor_nprobe = None if anchor_nprobe is None else np.asarray(anchor_nprobe, np.int64)
        self.copy_threshold = None if copy_threshold is None else float(copy_threshold)  # base cosine
        self._anchor_index = None
        self._anchor_rows = None

    @property
    def diffusion(self) -> bool:
        return self.U is not None

    @property
    def dim(self) -> int:
        return len(self.mean) + (self.U.shape[1] if self.U is not None else 0)

    # ------------------------------------------------------------ apply

    def base(self, raw: np.ndarray) -> np.ndarray:
        """Centred (whitened) L2-normalised embeddings: the plain-cosine space
        (``SEARCH_CHUNK`` rows at a time)."""
        raw = np.atleast_2d(raw)
        return _in_chunks(len(raw), len(self.mean), lambda part: self._base(raw[part]))

    def _base(self, raw: np.ndarray) -> np.ndarray:
        v = np.asarray(raw, np.float32) - self.mean
        if self.whitener is not None:
            v = v @ self.whitener
        return _l2n(v)

    def _coords_in_sample(self, rows: np.ndarray) -> np.ndarray:
        assert self.U is not None and self.h is not None  # with diffusion only
        return _l2n(self.U[rows] * np.sqrt(self.h))

    def _coords_projected(self, base: np.ndarray) -> np.ndarray:
        if self._anchor_index is None:
            self._anchor_index = _anchor_index(
                self.anchors, self.anchor_centroids, self.anchor_lists, self.anchor_nprobe
            )
        from .ann import search

        assert self.U is not None and self.h is not None  # with diffusion only
        out = np.empty((len(base), self.U.shape[1]), np.float32)
        for s in range(0, len(base), PROJECT_CHUNK):  # U[nn] is (n, k, rank): bounded by the chunk
            sims, nn = search(self._anchor_index, np.ascontiguousarray(base[s : s + PROJECT_CHUNK]), self.cfg.k)
            w = np.maximum(sims, 0) ** self.cfg.gamma  # (n, k)
            w[nn < 0] = 0
            y_u = np.einsum("nk,nkr->nr", w, self.U[np.maximum(nn, 0)])
            out[s : s + PROJECT_CHUNK] = _l2n(y_u * np.sqrt(self.h))
        return out

    def search_vectors(self, raw: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Search vectors of raw codes. ``ids``: the images' index ids when they are gallery
        images (anchors use their exact graph coordinates); None for queries. Computed
        ``SEARCH_CHUNK`` rows at a time into the result, so the temporaries stay bounded."""
        raw = np.atleast_2d(raw)
        return _in_chunks(
            len(raw), self.dim, lambda part: self._search_vectors(raw[part], None if ids is None else ids[part])
        )

    def _search_vectors(self, raw: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        b = self.base(raw)
        if not self.diffusion:
            return b
        assert self.U is not None and self.anchor_ids is not None  # fit sets them together
        coords = np.empty((len(b), self.U.shape[1]), np.float32)
        is_anchor = np.zeros(len(b), bool)
        if ids is not None and len(self.anchor_ids):
            pos = np.searchsorted(self.anchor_ids, ids)
            pos = np.minimum(pos, len(self.anchor_ids) - 1)
            is_anchor = self.anchor_ids[pos] == ids
            if is_anchor.any():
                coords[is_anchor] = self._coords_in_sample(pos[is_anchor])
        if (~is_anchor).any():
            coords[~is_anchor] = self._coords_projected(b[~is_anchor])
        return _l2n(np.hstack([b, self.cfg.weight * coords]))

    def base_part(self, search: np.ndarray) -> np.ndarray:
        """A search-space probe that ranks by base cosine alone: [base, 0] scaled so that its inner
        product with a gallery search vector is the base cosine (exactly for images with diffusion
        coordinates; an image the graph left isolated has none, and scores higher by up to √(1+w²))."""
        b = np.atleast_2d(np.asarray(search, np.float32))
        if not self.diffusion:
            return b
        d = len(self.mean)
        out = np.zeros_like(b)
        out[:, :d] = b[:, :d] * (1 + self.cfg.weight**2)
        return out

    def with_coords(self, search: np.ndarray, gallery_search: np.ndarray) -> np.ndarray:
        """Search vectors whose diffusion part is taken from ``gallery_search`` (row for row): a
        near-copy query placed where its original lies (see the module docstring)."""
        d = len(self.mean)
        return _l2n(np.hstack([search[:, :d], gallery_search[:, d:]]))

    # ------------------------------------------------------------ persistence

    def to_bytes(self) -> bytes:
        arrays = {"config": np.array(json.dumps(self.cfg.to_dict())), "mean": self.mean}
        for name in (
            "whitener",
            "anchor_ids",
            "anchors",
            "U",
            "h",
            "anchor_centroids",
            "anchor_lists",
            "anchor_nprobe",
            "copy_threshold",
        ):
            v = getattr(self, name)
            if v is not None:
                arrays[name] = v
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # stub gap: **arrays could hold "allow_pickle" (bool)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path | BinaryIO) -> PostProcess:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        cfg = PostConfig.from_dict(json.loads(str(a.pop("config"))))
        return cls(cfg, **a)

    @classmethod
    def centring_only(cls, mean: np.ndarray) -> PostProcess:
        """Mean-centring alone (no whitening, no diffusion)."""
        return cls(PostConfig(whiten=0.0, diffusion=False), mean)


# ---------------------------------------------------------------- fitting


def _covariance(x: np.ndarray, mean: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """np.cov of the rows of ``x`` (float64), a chunk at a time: no N×D float64 copy."""
    d = x.shape[1]
    acc = np.zeros((d, d), np.float64)
    for s in range(0, len(x), chunk):
        c = x[s : s + chunk].astype(np.float64) - mean
        acc += c.T @ c
    return acc / max(len(x) - 1, 1)


def fit(raw: np.ndarray, ids: np.ndarray, cfg: PostConfig = PostConfig(), log=lambda msg: None) -> PostProcess:
    """Learn centring, whitening and the diffusion graph from the gallery's raw codes."""
    raw = np.asarray(raw, np.float32)
    mean = raw.mean(0) if len(raw) else np.zeros(raw.shape[1], np.float32)
    whitener = None
    if cfg.whiten and len(raw) > raw.shape[1] * 4:
        cov = _covariance(raw, mean)
        ev, vecs = np.linalg.eigh(cov)
        ev = np.maximum(ev, ev.max() * 1e-6)
        whitener = (vecs / ev**cfg.whiten).astype(np.float32)
    post = PostProcess(cfg, mean.astype(np.float32), whitener)
    if not cfg.diffusion or len(raw) < max(cfg.min_gallery, cfg.rank * 4, cfg.k * 4):
        return post
    ids = np.asarray(ids, np.int64)
    if cfg.max_anchors and len(raw) > cfg.max_anchors:  # the graph's memory grows with its size: a sample
        rows = np.sort(np.random.default_rng(0).choice(len(raw), size=cfg.max_anchors, replace=False))
        raw, ids = raw[rows], ids[rows]
    base = post.base(raw)
    log(f"fitting diffusion over a {cfg.k}-NN graph of {len(raw)} images")
    U, h = _spectral(base, cfg)
    order = np.argsort(ids)
    post.anchor_ids = ids[order]
    post.anchors, post.U, post.h = base[order], U[order], h
    if len(raw) >= ANCHOR_IVF_MIN:
        post.anchor_centroids, post.anchor_lists, post.anchor_nprobe = _fit_anchor_lists(post.anchors, cfg.k)
        log(f"anchor search: {len(post.anchor_centroids)} cells, nprobe {int(post.anchor_nprobe)}")
    return post


def calibrate(
    post: PostProcess, gallery_raw: np.ndarray, gallery_keys: np.ndarray, originals: np.ndarray, copy_raw: np.ndarray
) -> dict:
    """Set ``post.copy_threshold`` from transformed copies of gallery images; → the calibration record.

    ``originals``: gallery rows that were copied; ``copy_raw``: the copies' raw codes (row for row);
    ``gallery_keys``: one key per gallery row, equal for identical files. Positives: base cosine of
    each copy to its original. Negatives: base cosine of each original to its nearest distinct gallery
    image. The threshold maximises TPR − FPR between the two (Youden's J). Where copies are not
    typically closer to their originals than images are to their nearest distinct neighbour (median
    against median: e.g. 28 px images, which a resize-and-JPEG copy changes more than a look-alike
    differs), no threshold tells a copy from a look-alike and placement stays off."""
    gb = post.base(gallery_raw)
    pos = np.sum(post.base(copy_raw) * gb[originals], axis=1)
    neg = nearest_distinct(gb, gallery_keys, originals)[1]
    if len(pos) == 0 or len(neg) == 0:
        return {"copies": int(len(pos)), "threshold": None, "placement": False}
    tau, tpr, fpr = youden_threshold(pos, neg)
    separable = bool(np.median(pos) > np.median(neg) and tpr - fpr > 0)
    post.copy_threshold = tau if separable else None
    return {
        "copies": int(len(pos)),
        "threshold": round(tau, 6) if separable else None,
        "tpr": round(tpr, 4),
        "fpr": round(fpr, 4),
        "copy_cosine_q05_25_50_75_95": quantiles(pos),
        "neighbour_cosine_q05_25_50_75_95": quantiles(neg),
        "placement": separable,
    }


def nearest_distinct(gb: np.ndarray, gallery_keys: np.ndarray, originals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of the gallery rows ``originals``' nearest distinct gallery image by base cosine (``gb``: the
    gallery's base vectors; ``gallery_keys`` equal for identical files), among its 16 nearest; → (the
    positions in ``originals`` that have one, that image's row and cosine), aligned."""
    import faiss

    kk = min(len(gb), 16)
    sims, nn = faiss.knn(np.ascontiguousarray(gb[originals]), gb, kk, metric=faiss.METRIC_INNER_PRODUCT)
    found: list[tuple[int, int, float]] = []
    for i, (row, s_row, n_row) in enumerate(zip(originals, sims, nn)):
        other = [(int(j), float(s)) for s, j in zip(s_row, n_row) if j >= 0 and gallery_keys[j] != gallery_keys[row]]
        if other:
            found.append((i, *other[0]))
    at = np.array([f[0] for f in found], np.int64)
    rows = np.array([f[1] for f in found], np.int64)
    return np.stack([at, rows]) if found else np.zeros((2, 0), np.int64), np.array([f[2] for f in found], np.float32)


# the pixel check is used only where it tells a copy from a look-alike well: Youden's J (copies passing −
# nearest neighbours passing) at least this. Clip art: 0.56 (development half), 0.58 (held-out half); 28 px
# Fashion-MNIST: 0.28 (70% of copies and 42% of nearest neighbours pass: a "copy" mark would sit on most
# look-alike garments); an 8×8 digit's copy is no closer than its neighbours at all.
MIN_PIXEL_INFORMEDNESS = 0.5


def calibrate_pixels(copy_pixel: np.ndarray, neighbour_pixel: np.ndarray) -> dict:
    """The threshold of a query's pixel check (``finecheck``): the pixel similarity (``pixelmatch``) that
    best separates transformed copies from their originals' nearest distinct images, by Youden's J, as
    for the cosine above; → the calibration record (``threshold`` None: the check is off, because copies
    are not closer than those neighbours or the best threshold's J is under ``MIN_PIXEL_INFORMEDNESS``).
    NaN similarities (a file that could not be read) are left out."""
    pos = copy_pixel[np.isfinite(copy_pixel)].astype(np.float32)
    neg = neighbour_pixel[np.isfinite(neighbour_pixel)].astype(np.float32)
    if len(pos) == 0 or len(neg) == 0:
        return {"pairs": [int(len(pos)), int(len(neg))], "threshold": None}
    tau, tpr, fpr = youden_threshold(pos, neg)
    separable = bool(np.median(pos) > np.median(neg) and tpr - fpr >= MIN_PIXEL_INFORMEDNESS)
    return {
        "pairs": [int(len(pos)), int(len(neg))],
        "threshold": round(tau, 6) if separable else None,
        "tpr": round(tpr, 4),
        "fpr": round(fpr, 4),
        "best_threshold": round(tau, 6),
        "copy_pixel_q05_25_50_75_95": quantiles(pos),
        "neighbour_pixel_q05_25_50_75_95": quantiles(neg),
    }


def youden_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float]:
    """The similarity (a cosine of search vectors, or a pixel similarity) that best separates ``pos``
    (copy → original) from ``neg`` (image → nearest distinct image) by Youden's J (true-positive rate −
    false-positive rate), placed midway to the next lower observed value; → (threshold, its TPR, its
    FPR). Both must be non-empty."""
    cand = np.unique(np.concatenate([pos, neg]))
    tpr = (pos[None, :] >= cand[:, None]).mean(1)
    fpr = (neg[None, :] >= cand[:, None]).mean(1)
    best = int(np.argmax(tpr - fpr))
    hi = cand[best]
    below = cand[cand < hi]
    tau = float((hi + below.max()) / 2) if len(below) else float(hi)
    return tau, float(tpr[best]), float(fpr[best])


def quantiles(x: np.ndarray) -> list[float]:
    """The 5/25/50/75/95% quantiles, rounded to 4 places ([] for no values)."""
    return [round(float(v), 4) for v in np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])] if len(x) else []


def _anchor_index(anchors, centroids, lists, nprobe):
    """FAISS index over the anchors: exact, or inverted lists rebuilt from the stored cells
    (no k-means at load time: each anchor goes straight into its recorded cell)."""
    import faiss

    x = np.ascontiguousarray(anchors, dtype=np.float32)
    d = x.shape[1]
    if centroids is None:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, d, len(centroids), faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    assign = np.ascontiguousarray(lists, dtype=np.int64)
    index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(assign))  # ids = rows
    index.nprobe = int(nprobe)
    return index


def _fit_anchor_lists(anchors: np.ndarray, k: int, sample: int = 1000, seed: int = 0):
    """k-means cells over the anchors and the smallest nprobe whose k-NN lists reach
    ``ANCHOR_RECALL`` against exact search (on a sample of anchors, each leaving itself out)."""
    import faiss

    from .ann import NPROBES, ground_truth, ivf_cells, sweep

    m, d = anchors.shape
    nlist = ivf_cells(m)
    km = faiss.Kmeans(d, nlist, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(anchors, dtype=np.float32))
    assert km.centroids is not None  # set by train
    _, a = km.index.search(np.ascontiguousarray(anchors, dtype=np.float32), 1)
    centroids, lists = km.centroids.astype(np.float32), a.ravel().astype(np.int32)
    q, rows, truth = ground_truth(anchors, np.arange(m), k, sample, seed)
    index = _anchor_index(anchors, centroids, lists, 1)
    tried = [p for p in NPROBES if p < nlist and p <= ANCHOR_NPROBE_MAX]
    best = sweep(index, "nprobe", tried, q, rows, truth, ANCHOR_RECALL)
    nprobe = best[0] if best is not None and best[1] >= ANCHOR_RECALL else nlist  # else: every cell
    return centroids, lists, np.array(nprobe, np.int64)


def _spectral(base: np.ndarray, cfg: PostConfig) -> tuple[np.ndarray, np.ndarray]:
    import faiss
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    n = len(base)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base))
    sims, nn = index.search(np.ascontiguousarray(base), cfg.k + 1)
    sims, nn = sims[:, 1:], nn[:, 1:]  # drop self
    rows = np.repeat(np.arange(n), cfg.k)
    w = sp.csr_matrix((np.maximum(sims, 0).ravel() ** cfg.gamma, (rows, nn.ravel())), shape=(n, n))
    w = w.minimum(w.T)  # mutual neighbours only: a symmetric graph that respects cluster borders
    d = np.asarray(w.sum(1)).ravel() + 1e-9
    dm = sp.diags(1 / np.sqrt(d))
    s = (dm @ w @ dm).tocsr()
    rank = min(cfg.rank, n - 2)
    v0 = np.random.default_rng(0).standard_normal(n)  # deterministic
    lam, U = sla.eigsh(s, k=rank, which="LA", tol=1e-3, v0=v0)
    lam = np.clip(lam, -1.0, 1.0)
    h = 1.0 / (1.0 - cfg.alpha * lam)
    return U.astype(np.float32), h.astype(np.float32)
