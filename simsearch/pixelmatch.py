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
   in both directions (A a crop of B, and B a crop of A); the closer one is the alignment. (A
   second pass at half the step aligned crops better but, on the development set, let the
   calibration pick a lower threshold and lose more precision than it won recall: not used.)
3. ``similarity`` is the Pearson correlation of the two aligned RGB thumbnails (all pixels and
   channels as one vector). A background both pictures share adds nothing to it, so two different
   drawings on white do not look alike merely for their white; a recoloured area or a changed
   detail lowers it; a re-saved or resized copy keeps it near 1.

``SIDE`` = 48 was chosen on a development set (openclipart-png with planted copies) among 24,
32, 48 and 64: coarser thumbnails cannot see what tells variants of one drawing apart, finer ones
see the blur of a downsized copy.

``similarity`` checks one pair and is the definition. ``similarities`` checks many pairs at once
with the same numbers (up to the rounding order of sums, ~1e-6), several times faster: each
picture's crops are made once for all its partners (see "many pairs at once" below). numpy +
Pillow only; no model.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image

GRID = 96  # each picture is first resampled to GRID×GRID RGB
SIDE = 48  # aligned thumbnails compared at SIDE×SIDE (chosen on the development set: 24, 32, 48, 64 tried)
CROPS = (0.0, 0.025, 0.05, 0.075)  # crop fractions tried per side (copies are cropped by up to ~5% a side)
# A thumbnail whose pixels' RMS deviation from their mean is below FLAT is flat (one grey level). Float32
# rounding alone leaves up to ~2e-7 on a flat grid's cropped thumbnails; one grid cell off by 1/255 leaves
# ~7e-6. (An absolute norm of 1e-6 sat below that rounding: flat greys then correlated ±1 by chance.)
FLAT = 1e-6


def grid(img: Image.Image) -> np.ndarray:
    """A picture as float32 (GRID, GRID, 3) RGB in 0–1, flattened onto white, aspect ignored."""
    return as_float(grid_bytes(img))


def grid_bytes(img: Image.Image) -> np.ndarray:
    """``grid`` as uint8 0–255 (a quarter of the memory; ``as_float`` gives ``grid`` exactly)."""
    from .preprocess import to_display

    rgb = to_display(img)
    if max(rgb.size) > 4 * GRID:
        rgb = rgb.copy()
        rgb.thumbnail((4 * GRID, 4 * GRID), Image.Resampling.BOX)
    small = rgb.resize((GRID, GRID), Image.Resampling.BOX)
    return np.asarray(small, np.uint8)


def as_float(g: np.ndarray) -> np.ndarray:
    """A grid as float32 in 0–1, whether it is ``grid``'s or ``grid_bytes``'s."""
    return g.astype(np.float32) / np.float32(255.0) if g.dtype == np.uint8 else np.asarray(g, np.float32)


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


def _one_way(a: np.ndarray, tb: np.ndarray, crops: tuple[float, ...]) -> tuple[float, np.ndarray]:
    """The crop of ``a`` closest to ``tb`` in mean absolute difference → (that mean, the crop's
    thumbnail, shaped like ``tb``). Coordinate search over ``crops``, one axis pair at a time:
    left/right, then top/bottom, then left/right again."""
    maps = _crop_maps(a.shape[0], tb.shape[0], crops)
    rows = cols = maps[0]  # no crop
    best, out = np.inf, tb
    for step in range(3):
        if step % 2 == 0:  # choose left/right given the current top/bottom
            cand = _cols(maps, _rows(rows, a))
        else:  # choose top/bottom given the current left/right
            cand = _rows(maps, _cols(cols, a))
        err = np.abs(cand - tb[None]).mean(axis=(1, 2, 3))
        k = int(np.argmin(err))
        if step % 2 == 0:
            cols = maps[k]
        else:
            rows = maps[k]
        if err[k] < best:
            best, out = float(err[k]), cand[k]
    return best, out


def thumb(g: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A ``grid``'s uncropped side×side thumbnail."""
    m = _crop_maps(g.shape[0], side, CROPS)[0]
    return _cols(m, _rows(m, g))


def aligned(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS):
    """Thumbnails of the two ``grid``s at their best alignment (either one cropped) → (ta, tb)."""
    tb, ta = thumb(gb, side), thumb(ga, side)
    ea, ca = _one_way(ga, tb, crops)
    eb, cb = _one_way(gb, ta, crops)
    return (ca, tb) if ea <= eb else (ta, cb)


def similarity(ga: np.ndarray, gb: np.ndarray, side: int = SIDE, crops: tuple[float, ...] = CROPS) -> float:
    """Pearson correlation of the two ``grid``s' aligned RGB thumbnails (see the module docstring):
    1.0 for identical pixels, indifferent to a plain background both share. A flat picture (one
    grey level, see ``FLAT``) matches only another flat picture, by 1 − their mean absolute difference."""
    ta, tb = aligned(ga, gb, side, crops)
    x, y = ta.ravel() - ta.mean(), tb.ravel() - tb.mean()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    flat = FLAT * np.sqrt(x.size)
    if nx < flat or ny < flat:  # a flat picture: only another flat picture of the same colour matches
        return float(1.0 - np.abs(ta - tb).mean()) if nx < flat and ny < flat else 0.0
    return float(x @ y / (nx * ny))


def load_grid(path, as_bytes: bool = False) -> np.ndarray | None:
    """``grid`` (``grid_bytes`` with ``as_bytes``) of an image file; None when it cannot be read now (it
    vanished or stopped decoding)."""
    from .decode import open_image

    try:
        img = open_image(path)
        return grid_bytes(img) if as_bytes else grid(img)
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
    None (→ NaN for that pair). One BLAS thread: these are many tiny products."""
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
# candidate set once for all the directions that need it, and compares it with several partners
# per elementwise pass. The box maps are banded (an output cell reads at most 3 source cells), so
# each product is split into blocks of ``ROWS`` output cells that read only their window of the
# source: the same nonzero products, about a quarter of the multiplications. The numbers are
# ``similarity``'s up to the order in which sums are rounded (~1e-6).

ROWS = 8  # output cells per block of a banded product
SOURCES_AT_ONCE = 64  # source pictures per task (their directions' best crops are held until its end)
KEYS_AT_ONCE = 16  # candidate sets made per batched product (16 crops × 27 KB each)
DIRECTIONS_AT_ONCE = 2  # partners compared with one candidate set per elementwise pass (it stays in L2)


class _Plan:
    """The crop maps split into blocks of ``ROWS`` output cells, each with its window of source cells."""

    def __init__(self, n: int, side: int, crops: tuple[float, ...]):
        maps = _crop_maps(n, side, crops)
        self.n, self.side, self.k = n, side, len(maps)
        self.uncropped = maps[0]
        self.rows = ROWS if side % ROWS == 0 else side
        self.blocks = []  # (first output cell, source window, that block of every map (K, rows, window))
        for lo in range(0, side, self.rows):
            part = maps[:, lo : lo + self.rows]
            nz = np.flatnonzero(part.any(axis=(0, 1)))
            win = slice(int(nz[0]), int(nz[-1]) + 1)
            self.blocks.append((lo, win, np.ascontiguousarray(part[:, :, win])))

    def candidates(self, x: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """One coordinate-search step's crop candidates for a batch of grids ``x`` (k, n, n, 3): the
        first axis box-mapped by map ``fixed[i]``, then the second by every map in turn → (k, blocks,
        K, rows·side·3): candidate c of grid i, block by block, is ``[i, :, c]``, the (second axis,
        first axis, channel) cells raveled, so transposed. On grids this is the left/right step
        (``_one_way``'s ``_cols(maps, _rows(rows, a))``), on transposed grids the top/bottom step."""
        k, n, side, rows = x.shape[0], self.n, self.side, self.rows
        flat = x.reshape(k, n, n * 3)
        y = np.empty((k, side, n * 3), np.float32)
        for lo, win, w in self.blocks:  # the first axis, by each grid's own map
            np.matmul(w[fixed], flat[:, win], out=y[:, lo : lo + rows])
        y = y.reshape(k, side, n, 3).transpose(0, 2, 1, 3).reshape(k, n, side * 3)
        out = np.empty((k, len(self.blocks), self.k * rows, side * 3), np.float32)
        for b, (_, win, w) in enumerate(self.blocks):  # the second axis, by every map
            np.matmul(w.reshape(-1, w.shape[-1]), y[:, win], out=out[:, b])
        return out.reshape(k, len(self.blocks), self.k, rows * side * 3)

    def thumbs(self, x: np.ndarray) -> np.ndarray:
        """Uncropped thumbnails (k, E) of grids ``x``, raveled (row, column, channel): ``thumb``'s products."""
        k, n, side = x.shape[0], self.n, self.side
        y = np.matmul(self.uncropped, x.reshape(k, n, n * 3))  # rows
        y = y.reshape(k, side, n, 3).transpose(0, 2, 1, 3).reshape(k, n, side * 3)
        return _transpose(np.matmul(self.uncropped, y).reshape(k, -1), side)  # columns


def _transpose(t: np.ndarray, side: int) -> np.ndarray:
    """Raveled (…, E) thumbnails with their two axes swapped."""
    return np.ascontiguousarray(t.reshape(*t.shape[:-1], side, side, 3).swapaxes(-3, -2)).reshape(t.shape)


def _step(plan, x, src, fixed, which, thumbs, partner, transposed, found, buf):
    """One coordinate-search step for the directions ``which`` of a block: direction d seeks the crop
    of its source ``x[src[d]]``, map ``fixed[d]`` fixed (``_Plan.candidates``), closest to its
    partner's uncropped thumbnail ``thumbs[partner[d]]``, laid out as the candidates come out
    (``transposed`` in the left/right steps). Where the step finds a crop strictly closer than the
    direction's ``found`` error (err: a sum of absolute differences), that crop replaces its best
    (best, and flipped: whether it is transposed), as in ``_one_way``. → the map each direction chose
    (0 outside ``which``)."""
    err, best, flipped = found
    K, nb = plan.k, len(plan.blocks)
    width = thumbs.shape[1] // nb
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
        t = thumbs[partner[dirs]].reshape(len(dirs), nb, 1, width)
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
        k = e.argmin(axis=1)  # the first of equals, as np.argmin in ``_one_way``
        e = e[np.arange(len(dirs)), k]
        chosen[dirs] = k
        better = np.flatnonzero(e < err[dirs])
        if len(better):
            d = dirs[better]
            err[d] = e[better]
            own = np.searchsorted(bounds[k0 : k0 + len(ks) + 1], better + lo, side="right") - 1
            best[d] = cands[own, :, k[better]].reshape(len(d), -1)
            flipped[d] = transposed
    return chosen


def _sources(plan, grids, thumbs, thumbs_t, src, dst, dirs, block):
    """The directions ``dirs``, whose sources are the grids ``block`` (in order), searched as in
    ``_one_way`` against ``thumbs`` (uncropped thumbnails; ``thumbs_t`` the same transposed) → (the
    sum of absolute differences at the best crop; Σc, Σc², Σc·t of that crop c and the partner's
    thumbnail t, in float64 since the correlation subtracts them)."""
    x = np.stack([as_float(grids[i]) for i in block])
    local = np.searchsorted(block, src[dirs])
    partner = dst[dirs]
    n = len(dirs)
    err, best, flipped = np.full(n, np.inf, np.float32), np.empty((n, thumbs.shape[1]), np.float32), np.zeros(n, bool)
    found = err, best, flipped
    nb = len(plan.blocks)
    buf = np.empty((DIRECTIONS_AT_ONCE, nb, plan.k, thumbs.shape[1] // nb), np.float32)
    every = np.arange(n)
    k = _step(plan, x, local, np.zeros(n, np.int64), every, thumbs_t, partner, True, found, buf)  # left/right
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    k = _step(plan, xt, local, k, every, thumbs, partner, False, found, buf)  # top/bottom, given left/right
    # left/right again, given top/bottom: where top/bottom stayed uncropped (map 0) these are the first
    # step's candidates again, the same numbers, which cannot come out strictly closer: skipped
    _step(plan, x, local, k, np.flatnonzero(k != 0), thumbs_t, partner, True, found, buf)
    s1, s2, s12 = (np.empty(n, np.float64) for _ in range(3))
    for i in range(0, n, 64):  # a few at a time, to stay in cache
        c = best[i : i + 64].astype(np.float64)
        p = partner[i : i + 64]
        t = np.where(flipped[i : i + 64, None], thumbs_t[p], thumbs[p]).astype(np.float64)
        s1[i : i + 64] = c.sum(axis=1)
        s2[i : i + 64] = np.einsum("ij,ij->i", c, c)
        s12[i : i + 64] = np.einsum("ij,ij->i", c, t)
    return err, s1, s2, s12


def similarities(
    pairs, grid_of, side: int = SIDE, crops: tuple[float, ...] = CROPS, progress=None, threads: int = 0
) -> np.ndarray:
    """``similarity`` of each (a, b) in ``pairs`` (float32; the same up to rounding, ~1e-6), computed
    for all the pairs together (see above). ``grid_of(key)`` gives a picture's ``grid`` or
    ``grid_bytes`` (held as given until the end), or None (→ NaN for its pairs); it is called once per
    key. ``progress(done, total)``: directions done (two per pair). ``threads``: worker threads (0:
    the usable CPUs); numpy releases the GIL in the products and the elementwise passes."""
    pairs = list(pairs)
    out = np.full(len(pairs), np.nan, np.float32)
    slot: dict = {}
    grids: list[np.ndarray] = []
    ends = np.full((len(pairs), 2), -1, np.int64)
    for i, pair in enumerate(pairs):
        for j, key in enumerate(pair):
            if key not in slot:
                g = grid_of(key)
                slot[key] = -1 if g is None else len(grids)
                if g is not None:
                    grids.append(g)
            ends[i, j] = slot[key]
    ok = np.flatnonzero((ends >= 0).all(axis=1))
    if len(ok):
        out[ok] = _similarities(grids, ends[ok, 0], ends[ok, 1], side, crops, progress, threads)
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
    err = np.empty(2 * m, np.float32)
    s1, s2, s12 = (np.empty(2 * m, np.float64) for _ in range(3))
    with threadpool_limits(limits=1, user_api="blas"):  # many mid-sized products: one thread each
        thumbs = np.empty((len(grids), side * side * 3), np.float32)
        for i in range(0, len(grids), 256):
            thumbs[i : i + 256] = plan.thumbs(np.stack([as_float(g) for g in grids[i : i + 256]]))
        thumbs_t = _transpose(thumbs, side)

        def task(i: int):
            dirs = order[starts[i] : starts[min(i + SOURCES_AT_ONCE, len(sources))]]
            return dirs, _sources(plan, grids, thumbs, thumbs_t, src, dst, dirs, sources[i : i + SOURCES_AT_ONCE])

        done = 0
        with ThreadPoolExecutor(threads) as pool:  # the tasks write to disjoint directions
            tasks = range(0, len(sources), SOURCES_AT_ONCE)
            for dirs, (e, c1, c2, c12) in pool.map(task, tasks) if threads > 1 else map(task, tasks):
                err[dirs], s1[dirs], s2[dirs], s12[dirs] = e, c1, c2, c12
                done += len(dirs)
                if progress:
                    progress(done, 2 * m)
    t1 = thumbs.sum(axis=1, dtype=np.float64)
    t2 = np.einsum("ij,ij->i", thumbs, thumbs, dtype=np.float64)
    first = err[:m] <= err[m:]  # as ``aligned``: A's crop against B's thumbnail when it is at least as close
    pick = np.where(first, np.arange(m), np.arange(m, 2 * m))
    other = np.where(first, b, a)  # whose uncropped thumbnail the chosen crop was compared with
    size = thumbs.shape[1]
    c1, c2, ct = s1[pick], s2[pick], s12[pick]
    nx = np.sqrt(np.maximum(c2 - c1 * c1 / size, 0.0))  # float64 sums: no cancellation to speak of
    ny = np.sqrt(np.maximum(t2[other] - t1[other] ** 2 / size, 0.0))
    cov = ct - c1 * t1[other] / size
    flat = FLAT * np.sqrt(size)
    fx, fy = nx < flat, ny < flat
    mad = err[pick].astype(np.float64) / size
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fx | fy, np.where(fx & fy, 1.0 - mad, 0.0), cov / (nx * ny))
