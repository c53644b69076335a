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
   in both directions (A a crop of B, and B a crop of A); the closer one is the alignment.
3. ``similarity`` is the Pearson correlation of the two aligned RGB thumbnails (all pixels and
   channels as one vector). A background both pictures share adds nothing to it, so two different
   drawings on white do not look alike merely for their white; a recoloured area or a changed
   detail lowers it; a re-saved or resized copy keeps it near 1.
4. A drawing on a plain margin is compared twice: as a whole, and cropped to its content
   (``preprocess.content_box``: the pixels that differ from the colour of its edge), each with its own grid
   (``grids``); the similarity is the higher of the two. A copy cropped by a few percent mostly
   loses margin, and its content box is the original's: the two contents line up exactly, where
   the crop search only reaches the nearest 1.25% step. On the development set of planted copies
   the cropped copies found went 0.82 → 0.92 (calibrated thresholds), and the best precision any
   thresholds reach at recall 0.95 rose from 0.922 to 0.965 (0.909 → 0.946 on an earlier
   development set). The content box alone is worse (0.888): a copy cropped into its drawing
   changes its box, so the whole picture's grid stays.

``SIDE`` (24) and ``CROPS`` (0–8.75% in 1.25% steps) were chosen on a development set (openclipart-png
with planted copies, ``scripts/research/dupes_frontier.py``) by the best precision and recall any
threshold could reach: 24, 48, 64 and 96 px, with 2.5% and 1.25% crop steps. At 24 px a copy, aligned
to a quarter of a cell, correlates above 0.98 almost always, while the look-alikes that are left still
differ by a whole stroke; finer thumbnails see the blur of a downsized copy and the misalignment of a
cropped one. (Until 2026-12-02: 48 px, 2.5% steps, chosen with Youden-calibrated thresholds.)

``similarity`` checks one pair and is the definition. ``similarities`` checks many pairs at once,
with the same numbers to float32 rounding (bit for bit at 48 px on OpenBLAS), several times faster:
each picture's crops are made once for all its partners (see "many pairs at once" below). numpy +
Pillow only; no model.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image

GRID = 96  # each picture is first resampled to GRID×GRID RGB
# aligned thumbnails compared at SIDE×SIDE, the crop fractions tried per side (copies are cropped by up to
# ~5% a side): chosen on the development set by the best precision/recall any threshold reaches
# (scripts/research/dupes_frontier.py): 24 px with crops in 1.25% steps beat 48 px with 2.5% steps
SIDE = 24
CROPS = tuple(round(0.0125 * i, 4) for i in range(8))  # 0, 1.25, …, 8.75%
# A thumbnail whose pixels' RMS deviation from their mean is below FLAT is flat (one grey level). Float32
# rounding alone leaves up to ~2e-7 on a flat grid's cropped thumbnails; one grid cell off by 1/255 leaves
# ~7e-6. (An absolute norm of 1e-6 sat below that rounding: flat greys then correlated ±1 by chance.)
FLAT = 1e-6


def grids_bytes(img: Image.Image) -> np.ndarray:
    """What the check compares of a picture, as uint8: ``grid_bytes`` of the whole picture (GRID, GRID, 3)
    or, when it has a margin of at least a grid cell (``preprocess.content_box``), stacked with that of its
    content (2, GRID, GRID, 3)."""
    from .preprocess import content_box, to_display

    rgb = to_display(img)
    box = content_box(rgb, least=1 / GRID)
    whole = _grid_bytes(rgb)
    return whole if box is None else np.stack([whole, _grid_bytes(rgb.crop(box))])


def grids(img: Image.Image) -> np.ndarray:
    """``grids_bytes`` as float32 in 0–1."""
    return as_float(grids_bytes(img))


def layer(g: np.ndarray, i: int) -> np.ndarray:
    """Layer ``i`` of a picture's ``grids`` (0: the whole picture, 1: its content); one grid is both."""
    return g if g.ndim == 3 else g[i]


def grid(img: Image.Image) -> np.ndarray:
    """A picture as float32 (GRID, GRID, 3) RGB in 0–1, flattened onto white, aspect ignored."""
    return as_float(grid_bytes(img))


def grid_bytes(img: Image.Image) -> np.ndarray:
    """``grid`` as uint8 0–255 (a quarter of the memory; ``as_float`` gives ``grid`` exactly)."""
    from .preprocess import to_display

    return _grid_bytes(to_display(img))


def _grid_bytes(rgb: Image.Image) -> np.ndarray:
    """``grid_bytes`` of a picture already flattened to RGB."""
    if max(rgb.size) > 4 * GRID:
        rgb = rgb.copy()
        rgb.thumbnail((4 * GRID, 4 * GRID), Image.Resampling.BOX)
    small = rgb.resize((GRID, GRID), Image.Resampling.BOX)
    return np.asarray(small, np.uint8)


def as_float(g: np.ndarray) -> np.ndarray:
    """A grid as float32 in 0–1, whether it is ``grid``'s or ``grid_bytes``'s."""
    return g.astype(np.float32) / np.float32(255.0) if g.dtype == np.uint8 else np.asarray(g, np.float32)


# A picture is grey when no cell of its grid has channels further apart than GREY_SPREAD (of 255): a grey
# copy re-saved as JPEG keeps a few levels of colour noise (all 300 grey copies of the clip-art development
# half's probe were within it), a sepia print has tens.
GREY_SPREAD = 8
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, the weights of Pillow's convert("L")


def is_grey(g: np.ndarray) -> bool:
    """Whether a ``grid`` or ``grids`` has no colour (every cell's R, G and B within ``GREY_SPREAD``)."""
    f = as_float(g)
    return float((f.max(-1) - f.min(-1)).max()) <= GREY_SPREAD / 255


def luma(g: np.ndarray) -> np.ndarray:
    """A ``grid`` or ``grids`` as a grey copy of it would look: each cell's grey level (``LUMA``) in all three
    channels, float32 in 0–1. A grey picture stays as it is (up to float rounding)."""
    y = as_float(g) @ np.asarray(LUMA, np.float32)
    return np.repeat(y[..., None], 3, axis=-1)


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


def _one_way(a: np.ndarray, tb: np.ndarray, crops: tuple[float, ...]) -> tuple[float, np.ndarray, tuple[int, int]]:
    """The crop of ``a`` closest to ``tb`` in mean absolute difference → (that mean, the crop's
    thumbnail, shaped like ``tb``, and the crop as the indices of its top/bottom and left/right maps in
    ``_crop_maps``). Coordinate search over ``crops``, one axis pair at a time: left/right, then
    top/bottom, then left/right again."""
    maps = _crop_maps(a.shape[0], tb.shape[0], crops)
    r = c = 0  # no crop
    best, out, how = np.inf, tb, (0, 0)
    for step in range(3):
        if step % 2 == 0:  # choose left/right given the current top/bottom
            cand = _cols(maps, _rows(maps[r], a))
        else:  # choose top/bottom given the current left/right
            cand = _rows(maps, _cols(maps[c], a))
        err = np.abs(cand - tb[None]).mean(axis=(1, 2, 3))
        k = int(np.argmin(err))
        if step % 2 == 0:
            c = k
        else:
            r = k
        if err[k] < best:
            best, out, how = float(err[k]), cand[k], (r, c)
    return best, out, how


def thumb(g: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A ``grid``'s uncropped side×side thumbnail."""
    m = _crop_maps(g.shape[0], side, CROPS)[0]
    return _cols(m, _rows(m, g))


def aligned(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS):
    """Thumbnails of the two ``grid``s at their best alignment (either one cropped) → (ta, tb)."""
    tb, ta = thumb(gb, side), thumb(ga, side)
    ea, ca, _ = _one_way(ga, tb, crops)
    eb, cb, _ = _one_way(gb, ta, crops)
    return (ca, tb) if ea <= eb else (ta, cb)


def similarity(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS) -> float:
    """Pearson correlation of the two ``grid``s' aligned RGB thumbnails (see the module docstring):
    1.0 for identical pixels, indifferent to a plain background both share. A flat picture (one
    grey level, see ``FLAT``) matches only another flat picture, by 1 − their mean absolute difference.
    Pictures given as ``grids`` (the whole and the content): the higher of the two layers' similarities."""
    s = _correlation(*aligned(layer(ga, 0), layer(gb, 0), side, crops))
    if ga.ndim == 4 or gb.ndim == 4:
        s = max(s, _correlation(*aligned(layer(ga, 1), layer(gb, 1), side, crops)))
    return s


def _correlation(ta: np.ndarray, tb: np.ndarray) -> float:
    """``similarity`` of two aligned thumbnails (``similarities`` calls it too, on the same arrays)."""
    x, y = ta.ravel() - ta.mean(), tb.ravel() - tb.mean()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    flat = FLAT * np.sqrt(x.size)
    if nx < flat or ny < flat:  # a flat picture: only another flat picture of the same colour matches
        return float(1.0 - np.abs(ta - tb).mean()) if nx < flat and ny < flat else 0.0
    return float(x @ y / (nx * ny))


def load_grid(path, as_bytes: bool = False) -> np.ndarray | None:
    """``grids`` (``grids_bytes`` with ``as_bytes``) of an image file; None when it cannot be read now (it
    vanished or stopped decoding)."""
    from .decode import open_image

    try:
        img = open_image(path)
        return grids_bytes(img) if as_bytes else grids(img)
    except Exception:  # noqa: BLE001 — any unreadable file: the pair stays unverified
        return None


def load_grids(paths, progress=None, workers: int = 0) -> list[np.ndarray | None]:
    """``load_grid(path, as_bytes=True)`` of each path, in order, decoded in ``pool`` worker processes
    (``workers``: 0 → the usable CPUs; 1, or under 64 files: in this process). ``progress("decode",
    done, total)``."""
    from .pool import decode_grids

    paths = list(paths)
    out: list[np.ndarray | None] = [None] * len(paths)
    for i, g, _, _ in decode_grids(paths, workers=1 if len(paths) < 64 else workers):
        out[i] = g
        if progress and ((i + 1) % 256 == 0 or i + 1 == len(paths)):
            progress("decode", i + 1, len(paths))
    return out


def similarities_one_by_one(pairs, grid_of) -> np.ndarray:
    """``similarity`` of each (a, b) in ``pairs``, one pair at a time: the reference that
    ``similarities`` is tested and benchmarked against. ``grid_of(key)`` gives a picture's grid or
    ``grids``, or None (→ NaN for that pair). One BLAS thread: these are many tiny products."""
    from threadpoolctl import threadpool_limits

    out = np.full(len(pairs), np.nan, np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        for i, (a, b) in enumerate(pairs):
            ga, gb = grid_of(a), grid_of(b)
            if ga is not None and gb is not None:
                out[i] = similarity(as_float(ga), as_float(gb))
    return out


# ---------------------------------------------------------------- many pairs at once
#
# ``similarity`` of one pair runs six coordinate-search steps (three per direction), each making 16
# crop candidates (a (48×96)·(96×288) and a (768×96)·(96×144) product) and their mean absolute
# differences from the partner's thumbnail. Across many pairs most of that work repeats: a picture's
# candidates depend only on the picture and on the crop fixed so far, never on the partner. So
# ``similarities`` turns each pair into two *directions* (a source picture's crops sought against
# the partner's uncropped thumbnail), groups them by source, makes each (picture, fixed crop)
# candidate set once for all the directions that need it, and compares it with partners two at a
# time while it is in cache. The box maps are banded (an output cell reads at most 3 source cells),
# so each product is split into blocks of ``ROWS`` output cells that read only their window of the
# source: the same nonzero products, about a quarter of the multiplications, and the same crops up to
# float32 rounding (to the bit at 48 px with 2.5% steps on OpenBLAS; at 24 px a few last bits differ).
# A step's winner is chosen on these batched sums, but whether it replaces
# the best so far, and which direction is closer, is decided on its mean absolute difference taken
# as ``_one_way`` takes it (the same float32). Once both directions of a pair are searched, the crop
# chosen is made again and scored with ``similarity``'s own correlation code on arrays laid out as
# ``aligned`` returns them: the same floats up to that rounding. Only where a step's runner-up comes within ``TIE`` of
# its winner could the batched sums choose another map than ``_one_way``: such a pair is scored by
# ``similarity`` itself.

ROWS = 8  # output cells per block of a banded product
SOURCES_AT_ONCE = 64  # source pictures per task
KEYS_AT_ONCE = 16  # candidate sets made per batched product (16 crops × 27 KB each)
DIRECTIONS_AT_ONCE = 2  # partners compared with one candidate set per elementwise pass (it stays in L2)
# A step's best map is chosen on sums of absolute differences added up in another order than
# ``_one_way``'s float32 means: each within ~9e-6 (relative) of the exact sum at worst, 1.2e-6 seen on
# 60k Fashion-MNIST. Where the runner-up is within TIE, the pair is checked by ``similarity`` itself.
TIE = 2e-5


class _Plan:
    """The crop maps split into blocks of ``ROWS`` output cells, each with its window of source cells."""

    def __init__(self, n: int, side: int, crops: tuple[float, ...]):
        maps = _crop_maps(n, side, crops)
        self.n, self.side, self.k = n, side, len(maps)
        self.crops_given = crops
        self.uncropped = maps[0]
        self.rows = ROWS if side % ROWS == 0 else side
        self.blocks = []  # (first output cell, source window, that block of every map (K, rows, window))
        for lo in range(0, side, self.rows):
            part = maps[:, lo : lo + self.rows]
            nz = np.flatnonzero(part.any(axis=(0, 1)))
            win = slice(int(nz[0]), int(nz[-1]) + 1)
            self.blocks.append((lo, win, np.ascontiguousarray(part[:, :, win])))

    def _first(self, x: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """Grids ``x`` (k, n, n, 3) with their first axis box-mapped by map ``fixed[i]`` → (k, n,
        side·3): the second axis first, ready for its own maps."""
        k, n, side, rows = x.shape[0], self.n, self.side, self.rows
        flat = x.reshape(k, n, n * 3)
        y = np.empty((k, side, n * 3), np.float32)
        for lo, win, w in self.blocks:
            np.matmul(w[fixed], flat[:, win], out=y[:, lo : lo + rows])
        return y.reshape(k, side, n, 3).transpose(0, 2, 1, 3).reshape(k, n, side * 3)

    def candidates(self, x: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """One coordinate-search step's crop candidates for a batch of grids ``x`` (k, n, n, 3): the
        first axis box-mapped by map ``fixed[i]``, then the second by every map in turn → (k, blocks,
        K, rows·side·3): candidate c of grid i, block by block, is ``[i, :, c]``, its (second axis,
        first axis, channel) cells raveled. On grids this is the left/right step (``_one_way``'s
        ``_cols(maps, _rows(maps[r], a))``), on transposed grids the top/bottom step."""
        k, side, rows = x.shape[0], self.side, self.rows
        y = self._first(x, fixed)
        out = np.empty((k, len(self.blocks), self.k * rows, side * 3), np.float32)
        for b, (_, win, w) in enumerate(self.blocks):
            np.matmul(w.reshape(-1, w.shape[-1]), y[:, win], out=out[:, b])
        return out.reshape(k, len(self.blocks), self.k, rows * side * 3)

    def crops(self, x: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """One crop per grid: the first axis by map ``first[i]``, the second by map ``second[i]``
        → (k, side, side, 3), laid out (second axis, first axis, channel) as ``candidates``."""
        k, side, rows = x.shape[0], self.side, self.rows
        y = self._first(x, first)
        out = np.empty((k, side, side * 3), np.float32)
        for lo, win, w in self.blocks:
            np.matmul(w[second], y[:, win], out=out[:, lo : lo + rows])
        return out.reshape(k, side, side, 3)

    def thumbs(self, x: np.ndarray) -> np.ndarray:
        """Uncropped thumbnails of grids ``x`` → (k, E): ``thumb``'s products, and as ``thumb`` leaves
        them in memory: (column, row, channel) raveled."""
        k, n, side = x.shape[0], self.n, self.side
        y = np.matmul(self.uncropped, x.reshape(k, n, n * 3))  # rows
        y = y.reshape(k, side, n, 3).transpose(0, 2, 1, 3).reshape(k, n, side * 3)
        return np.matmul(self.uncropped, y).reshape(k, -1)  # columns


def _transpose(t: np.ndarray, side: int) -> np.ndarray:
    """Raveled (…, E) thumbnails with their two axes swapped."""
    return np.ascontiguousarray(t.reshape(*t.shape[:-1], side, side, 3).swapaxes(-3, -2)).reshape(t.shape)


def _step(plan, x, src, fixed, which, step, targets, thumbs_t, partner, found, buf):
    """Search step ``step`` (0: left/right; 1: top/bottom, ``x`` holding transposed grids; 2:
    left/right again) for the directions ``which`` of a block: direction d seeks the crop of its source
    ``x[src[d]]``, map ``fixed[d]`` fixed (``_Plan.candidates``), closest to its partner's uncropped
    thumbnail, ``targets[partner[d]]`` laid out as the candidates come out (``thumbs_t``: as ``thumb``
    leaves it). The map chosen has the least sum of absolute differences; where the runner-up comes
    within ``TIE`` of it, these sums (added in another order than ``_one_way``'s means) might not pick
    the same map as ``_one_way``: the direction is marked (``found``'s tie). The chosen crop's mean
    absolute difference is then taken as ``_one_way`` takes it, on arrays laid out as there (the same
    float32 number), and replaces the direction's best (``found``'s err, and how: step, first and
    second map) where strictly smaller, as in ``_one_way``. → the map each direction chose."""
    err, how, tie = found
    K, nb, side = plan.k, len(plan.blocks), plan.side
    width = targets.shape[1] // nb
    ones = np.ones(width, np.float32)
    flat_buf = buf.reshape(-1, width)
    keys, inverse = np.unique(src[which].astype(np.int64) * K + fixed[which], return_inverse=True)
    by_key = np.argsort(inverse, kind="stable")
    order = which[by_key]  # the directions, key by key
    bounds = np.searchsorted(inverse[by_key], np.arange(len(keys) + 1))
    chosen = np.zeros(len(src), np.int64)
    for k0 in range(0, len(keys), KEYS_AT_ONCE):
        ks = keys[k0 : k0 + KEYS_AT_ONCE]
        cands = plan.candidates(x[ks // K], ks % K)  # (keys, blocks, K, width)
        lo = bounds[k0]
        dirs = order[lo : bounds[k0 + len(ks)]]
        t = targets[partner[dirs]].reshape(len(dirs), nb, 1, width)
        sums = np.empty((len(dirs), nb * K), np.float32)  # per direction, block and crop
        for j in range(len(ks)):
            end = bounds[k0 + j + 1] - lo
            for d0 in range(bounds[k0 + j] - lo, end, DIRECTIONS_AT_ONCE):
                d1 = min(d0 + DIRECTIONS_AT_ONCE, end)
                b = buf[: d1 - d0]
                np.copyto(b, t[d0:d1])  # then subtract in place: ~2x faster than into a third array
                np.subtract(b, cands[j], out=b)
                np.abs(b, out=b)
                np.matmul(flat_buf[: (d1 - d0) * nb * K], ones, out=sums[d0:d1].reshape(-1))
        e = sums.reshape(len(dirs), nb, K).sum(axis=1)
        k = e.argmin(axis=1)
        if K > 1:
            two = np.partition(e, 1, axis=1)
            tie[dirs] |= two[:, 1] - two[:, 0] <= TIE * two[:, 0]
        chosen[dirs] = k
        own = np.repeat(np.arange(len(ks)), np.diff(bounds[k0 : k0 + len(ks) + 1]))
        crop = cands[own, :, k].reshape(len(dirs), side, side, 3)  # (second axis, first axis, channel)
        crop = crop if step == 1 else crop.swapaxes(1, 2)  # as ``_one_way`` holds it
        whole = t if targets is thumbs_t else thumbs_t[partner[dirs]]  # as ``thumb`` leaves it
        whole = whole.reshape(len(dirs), side, side, 3).swapaxes(1, 2)  # and returns it
        mean = np.abs(crop - whole).mean(axis=(1, 2, 3))
        better = mean < err[dirs]
        d = dirs[better]
        err[d] = mean[better]
        how[0, d], how[1, d], how[2, d] = step, fixed[d], k[better]
    return chosen


def _whole(thumbs_t: np.ndarray, i, side: int) -> np.ndarray:
    """Uncropped thumbnails ``thumbs_t[i]`` laid out as ``thumb`` returns them."""
    return thumbs_t[i].reshape(*np.shape(i), side, side, 3).swapaxes(-3, -2)


def _search(plan, grids, thumbs, thumbs_t, src, dst, dirs, block):
    """The directions ``dirs``, whose sources are the grids ``block`` (in order), searched as in
    ``_one_way`` against their partners' uncropped ``thumbs`` (``thumbs_t``: the same transposed)
    → (``_one_way``'s error at the best crop; how that crop is made: (3, D) step, first and second
    map, for ``_Plan.crops``; whether a step's choice came within ``TIE`` of its runner-up)."""
    x = np.stack([as_float(grids[i]) for i in block])
    local = np.searchsorted(block, src[dirs])
    partner = dst[dirs]
    n = len(dirs)
    found = np.full(n, np.inf, np.float32), np.zeros((3, n), np.int64), np.zeros(n, bool)
    nb = len(plan.blocks)
    buf = np.empty((DIRECTIONS_AT_ONCE, nb, plan.k, thumbs.shape[1] // nb), np.float32)
    every, zero = np.arange(n), np.zeros(n, np.int64)
    k = _step(plan, x, local, zero, every, 0, thumbs_t, thumbs_t, partner, found, buf)  # left/right
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    k = _step(plan, xt, local, k, every, 1, thumbs, thumbs_t, partner, found, buf)  # top/bottom
    # left/right again, given top/bottom: where top/bottom stayed uncropped (map 0) these are the first
    # step's candidates again, the same numbers, which cannot come out strictly closer: skipped
    _step(plan, x, local, k, np.flatnonzero(k != 0), 2, thumbs_t, thumbs_t, partner, found, buf)
    return found


def _score(plan, grids, thumbs_t, a, b, err, how, tie) -> np.ndarray:
    """``similarity`` of the pairs (a[i], b[i]) from their two directions' search (``_search``'s
    ``err``, ``how``, ``tie``; A's directions first): the crop of the closer direction (A's when at
    least as close, as in ``aligned``) made again and scored with ``_correlation`` against the other's
    thumbnail, both laid out as ``aligned`` returns them. Pairs marked tie: ``similarity`` itself."""
    side, m = plan.side, len(a)
    cropped_a = err[:m] <= err[m:]
    pick = np.where(cropped_a, np.arange(m), np.arange(m, 2 * m))
    src, other = np.where(cropped_a, a, b), np.where(cropped_a, b, a)
    step, first, second = how[:, pick]
    out = np.empty(m, np.float64)
    order = np.argsort(src, kind="stable")
    for i in range(0, m, 256):
        part = order[i : i + 256]
        rows, which = np.unique(src[part], return_inverse=True)  # each grid made float once
        x = np.stack([as_float(grids[s]) for s in rows])[which]
        top = step[part] == 1  # the top/bottom step ran on the transposed grid
        x[top] = x[top].transpose(0, 2, 1, 3)
        made = plan.crops(x, first[part], second[part])
        for on_top in (True, False):  # one layout per batch: as ``_one_way`` holds its crops
            for a_cropped in (True, False):
                sel = np.flatnonzero((top == on_top) & (cropped_a[part] == a_cropped))
                if not len(sel):
                    continue
                crop = made[sel] if on_top else made[sel].swapaxes(1, 2)
                whole = _whole(thumbs_t, other[part[sel]], side)
                out[part[sel]] = _correlations(crop, whole) if a_cropped else _correlations(whole, crop)
    for q in np.flatnonzero(tie[:m] | tie[m:]).tolist():  # the search may have gone another way
        out[q] = similarity(as_float(grids[a[q]]), as_float(grids[b[q]]), side, plan.crops_given)
    return out


def similarities(
    pairs,
    grid_of,
    side: int = SIDE,
    crops: tuple[float, ...] = CROPS,
    progress=None,
    threads: int = 0,
    enough: float | None = None,
) -> np.ndarray:
    """``similarity`` of each (a, b) in ``pairs``, the same numbers, computed for all the pairs
    together (see above). ``grid_of(key)`` gives a picture's ``grid`` or ``grids`` (float or bytes, held
    as given until the end), or None (→ NaN for its pairs); it is called once per key. The whole
    pictures are checked first, then, for the pairs where either picture has a content layer, the
    contents; a pair keeps the higher. ``progress(done, total)``: directions searched (two per pair and
    layer). ``threads``: worker threads for the search (0: the usable CPUs); numpy releases the GIL in
    the products and the elementwise passes. ``enough``: a pair whose whole pictures already reach it
    is not checked again by content (the higher of the two cannot fall below it): its number is then
    the whole pictures' similarity, which may be lower than ``similarity``'s."""
    pairs = list(pairs)
    out = np.full(len(pairs), np.nan, np.float32)
    slot: dict = {}
    held: list[np.ndarray] = []
    ends = np.full((len(pairs), 2), -1, np.int64)
    for i, pair in enumerate(pairs):
        for j, key in enumerate(pair):
            if key not in slot:
                g = grid_of(key)
                slot[key] = -1 if g is None else len(held)
                if g is not None:
                    held.append(g)
            ends[i, j] = slot[key]
    ok = np.flatnonzero((ends >= 0).all(axis=1))
    if not len(ok):
        return out
    boxed = np.array([g.ndim == 4 for g in held], bool)
    two = ok[boxed[ends[ok]].any(axis=1)]  # pairs with a content layer: checked twice
    total = 2 * (len(ok) + len(two))
    step = None if progress is None else (lambda off: lambda done, _: progress(off + done, total))
    whole = [layer(g, 0) for g in held]
    out[ok] = _similarities(whole, ends[ok, 0], ends[ok, 1], side, crops, step and step(0), threads)
    if enough is not None:
        two = two[~(out[two] >= enough)]
    if len(two):
        keys, inverse = np.unique(ends[two], return_inverse=True)
        content = [layer(held[k], 1) for k in keys.tolist()]
        a, b = inverse.reshape(-1, 2).T
        second = _similarities(content, a, b, side, crops, step and step(total - 2 * len(two)), threads)
        out[two] = np.maximum(out[two], second)
    if progress is not None:
        progress(total, total)
    return out


def _correlations(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """``_correlation`` of each (ta[i], tb[i]), the same numbers: the same means, the same centred
    arrays, the same dot products (one pair at a time), flat pictures by ``_correlation`` itself."""
    n, size = len(ta), ta[0].size if len(ta) else 0
    x = ta.reshape(n, size) - ta.mean(axis=(1, 2, 3))[:, None]
    y = tb.reshape(n, size) - tb.mean(axis=(1, 2, 3))[:, None]
    flat = FLAT * np.sqrt(size)
    out = np.empty(n, np.float64)
    for i in range(n):
        nx, ny = float(np.linalg.norm(x[i])), float(np.linalg.norm(y[i]))
        out[i] = _correlation(ta[i], tb[i]) if nx < flat or ny < flat else float(x[i] @ y[i] / (nx * ny))
    return out


def _similarities(grids, a, b, side, crops, progress=None, threads: int = 0) -> np.ndarray:
    """``similarities`` of the pairs (grids[a[i]], grids[b[i]])."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    plan = _Plan(grids[0].shape[0], side, crops)
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, threads)
    m = len(a)
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.argsort(src, kind="stable")
    sources, starts = np.unique(src[order], return_index=True)
    starts = np.append(starts, len(src))
    err, how, tie = np.empty(2 * m, np.float32), np.empty((3, 2 * m), np.int64), np.empty(2 * m, bool)
    with threadpool_limits(limits=1, user_api="blas"):  # many mid-sized products: one thread each
        thumbs_t = np.empty((len(grids), side * side * 3), np.float32)
        for i in range(0, len(grids), 256):
            thumbs_t[i : i + 256] = plan.thumbs(np.stack([as_float(g) for g in grids[i : i + 256]]))
        thumbs = _transpose(thumbs_t, side)

        def task(i: int):
            dirs = order[starts[i] : starts[min(i + SOURCES_AT_ONCE, len(sources))]]
            return dirs, _search(plan, grids, thumbs, thumbs_t, src, dst, dirs, sources[i : i + SOURCES_AT_ONCE])

        done = 0
        with ThreadPoolExecutor(threads) as pool:  # the tasks write to disjoint directions
            tasks = range(0, len(sources), SOURCES_AT_ONCE)
            for dirs, (e, h, t) in pool.map(task, tasks) if threads > 1 else map(task, tasks):
                err[dirs], how[:, dirs], tie[dirs] = e, h, t
                done += len(dirs)
                if progress:
                    progress(done, 2 * m)
        return _score(plan, grids, thumbs_t, a, b, err, how, tie)
