"""Exact and near-duplicate groups in an index (``simsearch dupes``).

1. **Pairs.** Every pair of indexed images whose cosine in the index's base space
   (``Index.base_vectors``: centred, whitened codes; no diffusion coordinates, which would pull
   whole neighbourhoods together) reaches the threshold, found by a batched k-NN search that
   widens only for the rows that still have partners (``neighbours.range_pairs``): never an
   N×N matrix. Files with the same content hash are always a pair (similarity 1).
2. **Pixel check** (``verify``, the default). The model's cosine cannot tell a copy from the same
   drawing recoloured or with a detail changed, so every candidate pair whose files differ is
   compared pixel by pixel (``pixelmatch``: aligned 24×24 colour thumbnails, either picture
   cropped by up to 8.75% a side, Pearson correlation; for a drawing on a plain margin also of its
   content alone, the higher counting) and kept only when that similarity reaches
   its own calibrated threshold (step 4). Files with the same bytes need no check. The cost is one
   decode per image that has a candidate partner (in ``pool`` worker processes) and, with all pairs
   checked together (``pixelmatch.similarities``: each picture's crops made once for all its
   partners), about 0.6 ms of CPU per candidate pair: it grows with the number of
   candidate pairs, not with the size of the index. A pair whose file cannot be read now is left
   out (and counted).
3. **Groups.** Union-find over the pairs, strongest first, where a union is refused when it would
   put two images that are *not* a pair into one group (complete linkage). A chain A≈B≈C with
   A≉C therefore does not drift into one group: C starts its own. Each group records its weakest
   pair. Pairs are visited in (−similarity, id, id) order with similarities rounded to 1e-6, so the
   groups are the same on every run.
4. **Thresholds.** A fixed cosine means nothing across models, so by default it is calibrated on
   the user's own images (``calibrate``): ``CALIBRATION_SAMPLE`` indexed images are copied the
   way duplicates arise (resized to 50–90%, re-saved as JPEG at quality 50–90, half of them also
   cropped by up to 5% a side; ``copies.make_copy``), the copies are embedded with the index's
   model, and the threshold best separates each copy's cosine to its original from each
   original's cosine to its nearest *distinct* indexed image (Youden's J, midway between the two
   closest scores around the best cut) — the rule the index uses for near-copy placement
   (``postprocess.calibrate``), on the copies a duplicate finder is asked about. With the pixel
   check the cosine only shortlists, so it is looser: the cosine that ``COSINE_COPY_PASS`` (99%) of
   the copies reach, unless more than ``SHORTLIST_MAX_LOOK_ALIKES`` (half) of the images have a
   distinct neighbour that close (then Youden's). The pixel check decides, at the similarity that
   ``PIXEL_COPY_PASS`` (85%) of the same copies reach with their originals (how many of the same
   nearest neighbours pass is reported): a look-alike let through costs a user more than a copy
   missed, and Youden's J weighs the two alike. ``--threshold`` replaces only the cosine threshold.
5. **Keeper.** In each group the suggested image to keep has the most pixels, then the largest
   file, then the oldest modification time, then the lowest id.

Nothing here deletes anything; ``move`` moves the non-keepers only when called without
``dry_run``. numpy + Pillow; faiss lazily; torch only through ``Index.encode_pixels`` when
calibrating (the numpy encoder when the index has one).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import neighbours
from .errors import SimsearchError
from .postprocess import quantiles, youden_threshold

CALIBRATION_SAMPLE = 200
MAX_PARTNERS = 64  # near-duplicate partners looked for per image (a near-duplicate group has at most 65 images)
COPY_SCALE = (0.5, 0.9)
COPY_QUALITY = (50, 90)
COPY_CROP = 0.05
# the pixel check's threshold: the similarity this share of the calibration copies reach (chosen on the
# development set; Youden's J, which weighs a missed copy and a look-alike let through alike, let 14% of
# nearest neighbours through at 24 px)
PIXEL_COPY_PASS = 0.85
# with the pixel check, the cosine threshold only shortlists: the cosine this share of the copies reach
# (development set: cropped copies found 0.68 → 0.78 against Youden's J, which passed 91% of the copies;
# 98% → 99% on 2026-12-03: recall 0.930 → 0.940 at the same precision 0.935 — cropped copies whose cosine
# fell just under the 98% cut while their pixels matched at ≥ 0.995; level on the held-out half)
COSINE_COPY_PASS = 0.99
SHORTLIST_MAX_LOOK_ALIKES = 0.5  # … unless more than this share of images have a distinct neighbour that close


@dataclass
class Calibration:
    """How the threshold was chosen (``calibrate``), or that it was given."""

    threshold: float
    source: str  # "calibrated" | "given"
    copies: int = 0  # transformed copies measured
    copy_recall: float | None = None  # fraction of copies scoring ≥ threshold with their original
    look_alike_rate: float | None = None  # fraction of sampled images with a distinct neighbour ≥ threshold
    copy_quantiles: list = field(default_factory=list)  # copy → original cosine, 5/25/50/75/95%
    neighbour_quantiles: list = field(default_factory=list)  # image → nearest distinct image, same
    separable: bool = True
    pixel: Calibration | None = None  # the pixel check's own threshold, calibrated the same way (verify)

    def why(self) -> str:
        """One line: the threshold(s) and where they come from."""
        if self.source == "given":
            line = f"threshold {self.threshold:.4f} (given with --threshold)"
        else:
            assert self.copy_recall is not None and self.look_alike_rate is not None, "a calibrated threshold"
            line = (
                f"threshold {self.threshold:.4f}, calibrated on {self.copies} resized / re-compressed / cropped "
                f"copies of your own images: {100 * self.copy_recall:.0f}% of the copies score at least this with "
                f"their original, and {100 * self.look_alike_rate:.1f}% of images have a distinct nearest neighbour "
                "this close"
            )
        if self.pixel is not None:
            px = self.pixel
            line += (
                f"; then each pair's pixels are checked: aligned {pixel_side()}x{pixel_side()} colour thumbnails (of "
                f"the whole pictures or of their content) must correlate at least {px.threshold:.4f}, calibrated "
                "on the same copies against the same nearest neighbours "
                f"({100 * (px.copy_recall or 0):.0f}% of copies pass, "
                f"{100 * (px.look_alike_rate or 0):.1f}% of nearest neighbours do)"
            )
        if not self.separable:
            line += (
                " (WARNING: copies are not clearly closer to their originals than look-alikes are to each other"
                " in this index: expect misses and false groups; pass --threshold to choose)"
            )
        return line

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Member:
    id: int
    path: str  # relative to the indexed folder
    similarity: float  # to the keeper (1.0 for the keeper)
    pixels: int = 0
    size: int = 0
    mtime_ns: int = 0
    pixel_similarity: float | None = None  # the pixel check's similarity to the keeper (None: not checked)


@dataclass
class Group:
    keeper: Member
    others: list[Member]
    weakest: tuple[int, int, float]  # the least similar pair in the group (id, id, similarity)
    exact: bool  # every member has the same file content

    @property
    def members(self) -> list[Member]:
        return [self.keeper, *self.others]

    def to_dict(self, root: Path | None = None) -> dict:
        def m(x: Member) -> dict:
            d = asdict(x)
            if root is not None:
                d["abspath"] = str(root / x.path)
            return d

        return {
            "keep": m(self.keeper),
            "others": [m(o) for o in self.others],
            "weakest_pair": {"ids": list(self.weakest[:2]), "similarity": self.weakest[2]},
            "exact": self.exact,
        }


@dataclass
class Result:
    calibration: Calibration
    groups: list[Group]
    images: int
    pairs: int
    seconds: float = 0.0
    candidates: int = 0  # pairs at or above the cosine threshold, before the pixel check
    checked: int = 0  # candidate pairs compared pixel by pixel (not the same bytes)
    unreadable: int = 0  # candidate pairs left out because a file could not be read now

    @property
    def duplicates(self) -> int:
        """Images that are not a group's keeper."""
        return sum(len(g.others) for g in self.groups)


# ---------------------------------------------------------------- calibration


def pixel_side() -> int:
    from .pixelmatch import SIDE

    return SIDE


def copy_for_calibration(img, seed: int):
    """The kind of copy a duplicate finder is asked about: resized, re-compressed, sometimes
    cropped (``copies.make_copy`` with those edits only), deterministic in ``seed``."""
    from .copies import Strength, make_copy

    rng = random.Random(seed)
    kinds = ("resize", "crop", "jpeg") if rng.random() < 0.5 else ("resize", "jpeg")
    st = Strength(
        scale=COPY_SCALE,
        crop=COPY_CROP,
        aspect=0,
        rotate=0,
        pad=0,
        light=0,
        saturation=0,
        quality=COPY_QUALITY,
    )
    return make_copy(img, seed=seed, strength=st, kinds=kinds)


@dataclass
class CalibrationPairs:
    """What the thresholds are calibrated on (``calibration_pairs``): sampled indexed images, a
    transformed copy of each, and each one's nearest distinct indexed image."""

    rows: np.ndarray  # the sampled index rows that could be read
    copy_cosine: np.ndarray  # each copy's cosine to its original (base space), aligned with rows
    nearest: list[tuple[int, int]]  # (position in rows, that image's nearest distinct row)
    nearest_cosine: np.ndarray  # their cosines, aligned with nearest
    grids: list | None  # per position: (the original's grid, the copy's grid), when made with verify

    def grid_of(self, index) -> Callable[[tuple[str, int]], np.ndarray | None]:
        """``grid_of(key)`` for ``pixelmatch.similarities`` over the keys ("original", i), ("copy", i)
        (position i's grids) and ("row", r) (index row r, read from its file once)."""
        from . import pixelmatch

        assert self.grids is not None, "grids are made when verifying"
        grids, entries = self.grids, index.entries()
        cache: dict[int, np.ndarray | None] = {}

        def grid_of(key: tuple[str, int]) -> np.ndarray | None:
            kind, x = key
            if kind != "row":
                return grids[x][0 if kind == "original" else 1]
            if x not in cache:
                cache[x] = pixelmatch.load_grid(index.root / entries[x].path)
            return cache[x]

        return grid_of

    def pixel_pairs(self) -> tuple[list, list]:
        """(copy pairs, nearest-neighbour pairs) as keys of ``grid_of``."""
        pos = [(("original", i), ("copy", i)) for i in range(len(self.rows))]
        return pos, [(("original", i), ("row", j)) for i, j in self.nearest]


def calibration_pairs(
    index, n: int = CALIBRATION_SAMPLE, seed: int = 0, base: np.ndarray | None = None, verify: bool = True
) -> CalibrationPairs:
    """``n`` of the index's own images (a seeded sample), a copy of each (``copy_for_calibration``)
    embedded with the index's model, and each image's nearest distinct indexed image; with
    ``verify`` also the grids of each image and its copy. ``base``: ``index.base_vectors()`` if
    already computed."""
    from . import pixelmatch
    from .decode import open_image
    from .preprocess import preprocess

    base = index.base_vectors() if base is None else base
    entries = index.entries()
    if len(entries) < 2:
        raise SimsearchError(f"{index.path}: needs at least 2 indexed images to calibrate a threshold")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(entries), size=min(n, len(entries)), replace=False))
    pre = index.preprocess
    side = max(256, 4 * pre.size)
    kept, pixels, grids = [], [], []
    for r in rows:
        try:
            img = open_image(index.root / entries[r].path)
            g = pixelmatch.grids(img) if verify else None
            img.thumbnail((side, side))
            cp = copy_for_calibration(img, seed=int(entries[r].id))
            pixels.append(preprocess(cp, pre))
            grids.append((g, pixelmatch.grids(cp)) if verify else None)
        except Exception:  # noqa: BLE001 — a file that vanished or changed is simply not sampled
            continue
        kept.append(r)
    if not kept:
        raise SimsearchError(f"{index.root}: none of the sampled indexed files could be read to calibrate")
    rows = np.asarray(kept)
    copies = index.base_vectors(index.encode_pixels(np.stack(pixels)))
    pos = np.sum(copies * base[rows], axis=1).astype(np.float32)
    keys = np.array([e.sha256 for e in entries])
    found: list[float] = []
    nearest: list[tuple[int, int]] = []
    for i, (r, sims) in enumerate(zip(rows, _blocks(base[rows], base))):
        sims[keys == keys[r]] = -np.inf  # the image itself and identical files are not distinct
        sims[sims >= 1 - 1e-5] = -np.inf  # identical pixels: a duplicate, not a look-alike
        j = int(np.argmax(sims))
        if np.isfinite(sims[j]):
            found.append(float(sims[j]))
            nearest.append((i, j))
    return CalibrationPairs(rows, pos, nearest, np.asarray(found, np.float32), grids if verify else None)


def calibrate(
    index, n: int = CALIBRATION_SAMPLE, seed: int = 0, base: np.ndarray | None = None, verify: bool = True
) -> Calibration:
    """Calibrate the duplicate threshold on transformed copies of ``n`` of the index's own images
    (see the module docstring; ``calibration_pairs``), and with ``verify`` the pixel check's
    threshold on the same copies against the same nearest distinct neighbours."""
    from . import pixelmatch

    cp = calibration_pairs(index, n, seed, base, verify)
    cal = _youden(cp.copy_cosine, cp.nearest_cosine)
    if verify:  # the cosine only shortlists: the pixel check decides, so let almost every copy through …
        loose = _pass_rate(cp.copy_cosine, cp.nearest_cosine, COSINE_COPY_PASS)
        # … while it stays a shortlist: not where most images have a look-alike that close (28 px
        # Fashion-MNIST: 98% of copies pass only where 98.5% of images have a neighbour, every image with
        # dozens of candidate partners)
        if loose.threshold < cal.threshold and (loose.look_alike_rate or 0.0) <= SHORTLIST_MAX_LOOK_ALIKES:
            loose.separable = cal.separable
            cal = loose
    if verify:
        pos, neg = cp.pixel_pairs()
        pix = pixelmatch.similarities(pos + neg, cp.grid_of(index))
        pix_pos, pix_neg = pix[: len(pos)], pix[len(pos) :]
        cal.pixel = _pass_rate(pix_pos, pix_neg[np.isfinite(pix_neg)], PIXEL_COPY_PASS)
    return cal


def _blocks(q: np.ndarray, base: np.ndarray, rows: int = 256):
    """Rows of q @ base.T, a block of queries at a time (each a fresh array)."""
    for i in range(0, len(q), rows):
        yield from q[i : i + rows] @ base.T


def _pass_rate(pos: np.ndarray, neg: np.ndarray, rate: float) -> Calibration:
    """The threshold that a share ``rate`` of the copies reach (``pos``), with what it lets through of
    ``neg``: for the pixel check, where a look-alike let through costs more than a copy missed."""
    pos = pos[np.isfinite(pos)]
    tau = float(np.quantile(pos, 1 - rate)) if len(pos) else 1.0
    cal = Calibration(
        threshold=round(tau, 6),
        source="calibrated",
        copies=int(len(pos)),
        copy_recall=float((pos >= tau).mean()) if len(pos) else 0.0,
        look_alike_rate=float((neg >= tau).mean()) if len(neg) else 0.0,
        copy_quantiles=quantiles(pos) if len(pos) else [],
        neighbour_quantiles=quantiles(neg) if len(neg) else [],
    )
    cal.separable = bool(len(neg) == 0 or np.median(pos) > np.median(neg))
    return cal


def _youden(pos: np.ndarray, neg: np.ndarray) -> Calibration:
    if len(neg) == 0:  # every image has an identical twin, or one image: only the copies say anything
        tau = float(np.quantile(pos, 0.03))
        return Calibration(tau, "calibrated", len(pos), float((pos >= tau).mean()), 0.0, quantiles(pos), [], True)
    tau, tpr, fpr = youden_threshold(pos, neg)
    separable = bool(np.median(pos) > np.median(neg) and tpr - fpr > 0.5)
    return Calibration(
        threshold=round(tau, 6),
        source="calibrated",
        copies=int(len(pos)),
        copy_recall=float((pos >= tau).mean()),
        look_alike_rate=float((neg >= tau).mean()),
        copy_quantiles=quantiles(pos),
        neighbour_quantiles=quantiles(neg),
        separable=separable,
    )


# ---------------------------------------------------------------- grouping


def exact_pairs(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a < b) of rows with the same key (content hash)."""
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    a, b = [], []
    for rows in by_key.values():
        for x in range(len(rows)):
            for y in range(x + 1, len(rows)):
                a.append(rows[x])
                b.append(rows[y])
    return np.asarray(a, np.int64), np.asarray(b, np.int64)


def group_pairs(
    n: int, a: np.ndarray, b: np.ndarray, sim: np.ndarray
) -> list[tuple[list[int], tuple[int, int, float]]]:
    """Complete-linkage groups from pairs (``a``, ``b``, ``sim``) over rows 0..n-1: union-find,
    strongest pair first, a union refused unless every cross pair of the two groups is itself a
    pair. → [(sorted rows, weakest pair (row, row, sim))], groups of two or more, ordered by
    (−size, first row). Deterministic for a given set of pairs, whatever their order."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    s = np.round(np.asarray(sim, np.float64), 6)
    keep = lo != hi
    lo, hi, s = lo[keep], hi[keep], s[keep]
    key = lo * n + hi
    order = np.lexsort((-s, key))  # one row per pair: its highest similarity
    key, lo, hi, s = key[order], lo[order], hi[order], s[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    key, lo, hi, s = key[first], lo[first], hi[first], s[first]
    order = np.lexsort((hi, lo, -s))  # strongest first, ties by rows
    key, lo, hi, s = key[order], lo[order], hi[order], s[order]
    sim_of = dict(zip(key.tolist(), s.tolist()))
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for x, y in zip(lo.tolist(), hi.tolist()):
        rx, ry = find(x), find(y)
        if rx == ry:
            continue
        gx, gy = members.get(rx, [rx]), members.get(ry, [ry])
        if len(gx) * len(gy) > 1 and not all((p * n + q if p < q else q * n + p) in sim_of for p in gx for q in gy):
            continue  # some pair across the two groups is not similar enough: the chain would drift
        if (len(gx), -rx) < (len(gy), -ry):  # union by size; the larger (or lower) root stays
            rx, ry, gx, gy = ry, rx, gy, gx
        parent[ry] = rx
        members[rx] = gx + gy
        members.pop(ry, None)
    out = []
    for rows in members.values():
        rows = sorted(rows)
        weakest = min(
            ((p, q, sim_of[p * n + q]) for i, p in enumerate(rows) for q in rows[i + 1 :]),
            key=lambda t: (t[2], t[0], t[1]),
        )
        out.append((rows, weakest))
    out.sort(key=lambda g: (-len(g[0]), g[0][0]))
    return out


def _pixels(path: Path) -> int:
    """Width × height from the file's header (0 when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            return int(w) * int(h)
    except Exception:  # noqa: BLE001 — unreadable now: ranks last as a keeper
        return 0


def find(
    index,
    threshold: float | None = None,
    calibration_sample: int = CALIBRATION_SAMPLE,
    progress: Callable[..., None] | None = None,
    verify: bool = True,
) -> Result:
    """Duplicate groups of an open ``simsearch.Index`` (see the module docstring)."""
    import time

    t0 = time.perf_counter()
    entries = index.entries()
    base = index.base_vectors()
    if threshold is None:
        cal = calibrate(index, calibration_sample, base=base, verify=verify)
    else:
        if not -1.0 <= threshold <= 1.0:
            raise SimsearchError(f"--threshold must be a cosine between -1 and 1, got {threshold}")
        cal = Calibration(float(threshold), "given")
        if verify:
            cal.pixel = calibrate(index, calibration_sample, base=base, verify=True).pixel
    a, b, s = neighbours.range_pairs(base, cal.threshold, max_k=MAX_PARTNERS, progress=progress)
    keys = [e.sha256 for e in entries]
    ea, eb = exact_pairs(keys)
    candidates, unreadable = len(a), 0
    pix: dict[tuple[int, int], float] = {}
    if verify and cal.pixel is not None and len(a):
        a, b, s, pix, unreadable = _verify(index, entries, a, b, s, cal.pixel.threshold, progress)
    a = np.concatenate([a, ea])
    b = np.concatenate([b, eb])
    s = np.concatenate([s, np.ones(len(ea), np.float32)])
    s = np.where(s >= 1 - 1e-5, 1.0, s)  # identical to the model, as a query reports it
    groups = []
    sim_of = {(int(x), int(y)): float(v) for x, y, v in zip(np.minimum(a, b), np.maximum(a, b), s)}
    for rows, (wa, wb, ws) in group_pairs(len(entries), a, b, s):
        members = []
        for r in rows:
            e = entries[r]
            members.append(Member(e.id, e.path, 1.0, _pixels(index.root / e.path), e.size, e.mtime_ns))
        keeper = min(range(len(rows)), key=lambda i: (-members[i].pixels, -members[i].size, members[i].mtime_ns, i))
        k = rows[keeper]
        others = []
        for i, r in enumerate(rows):
            if i != keeper:
                m = members[i]
                m.similarity = round(1.0 if r == k else sim_of[(min(r, k), max(r, k))], 6)
                ps = pix.get((min(r, k), max(r, k)))
                m.pixel_similarity = None if ps is None else round(ps, 4)
                others.append(m)
        others.sort(key=lambda m: (-m.similarity, m.id))
        exact = len({entries[r].sha256 for r in rows}) == 1
        weakest = (int(entries[wa].id), int(entries[wb].id), round(ws, 6))
        groups.append(Group(members[keeper], others, weakest, exact))
    return Result(cal, groups, len(entries), len(sim_of), time.perf_counter() - t0, candidates, len(pix), unreadable)


def _verify(index, entries, a, b, s, threshold: float, progress=None):
    """Keep the candidate pairs whose pixel similarity (``pixelmatch``) reaches ``threshold``; pairs
    of files with the same bytes need no check. → (a, b, s, {(lo, hi): pixel similarity}, unreadable)."""
    from . import pixelmatch

    same = np.array([entries[x].sha256 == entries[y].sha256 for x, y in zip(a.tolist(), b.tolist())], bool)
    todo = np.flatnonzero(~same)
    rows = np.unique(np.concatenate([a[todo], b[todo]]))
    grids = pixelmatch.load_grids([index.root / entries[r].path for r in rows.tolist()], progress=progress)
    grid_of = dict(zip(rows.tolist(), grids)).get
    ps = np.full(len(a), 1.0, np.float32)
    pairs = list(zip(a[todo].tolist(), b[todo].tolist()))
    step = (lambda done, total: progress("verify", done, total)) if progress else None
    ps[todo] = pixelmatch.similarities(pairs, grid_of, progress=step, enough=threshold)
    unreadable = int(np.isnan(ps).sum())
    keep = ps >= threshold  # NaN (a file unreadable now) is never kept
    pix = {
        (int(min(x, y)), int(max(x, y))): float(v)
        for x, y, v, c in zip(a.tolist(), b.tolist(), ps.tolist(), (~same).tolist())
        if c and v == v
    }
    return a[keep], b[keep], s[keep], pix, unreadable


def group_sheet(group: Group, root: Path, out: str | os.PathLike, title: str = "", most: int = 12) -> Path:
    """A contact sheet of one group: the image to keep, then the others (at most ``most``) with
    their similarity to it; every file named underneath."""
    from .render import strips_sheet

    shown = group.others[:most]
    labels = ["keep"] + [f"{m.similarity:.4f}" for m in shown]
    lines = [f"keep: {group.keeper.path} ({group.keeper.pixels} px, {group.keeper.size} bytes)"]
    lines += [f"{m.similarity:.4f}: {m.path} ({m.pixels} px, {m.size} bytes)" for m in shown]
    if len(group.others) > most:
        lines.append(f"... and {len(group.others) - most} more")
    head = f"{title}: " if title else ""
    kind = "identical files" if group.exact else f"weakest pair {group.weakest[2]:.4f}"
    return strips_sheet(
        [([root / group.keeper.path] + [root / m.path for m in shown], lines)],
        out,
        labels,
        128,
        columns=1,
        title=f"{head}{len(group.members)} images, {kind}",
    )


# ---------------------------------------------------------------- moving


def check_destination(root: Path, dest: Path) -> tuple[Path, Path]:
    """(root, dest) resolved; SimsearchError when ``dest`` lies inside the indexed folder."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest == root or root in dest.parents:
        raise SimsearchError(
            f"{dest}: --move-to must be outside the indexed folder {root} (the next `simsearch index` would index "
            "the moved files again)"
        )
    return root, dest


def move(result: Result, root: Path, dest: Path, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move every group's non-keepers from ``root`` into ``dest`` (same relative paths); never a
    keeper, never over an existing file. → the (from, to) moves, made or (``dry_run``) planned.
    Raises SimsearchError before moving anything when a move is impossible."""
    root, dest = check_destination(root, dest)
    plan = []
    for g in result.groups:
        for m in g.others:
            src, dst = root / m.path, dest / m.path
            if not src.is_file():
                raise SimsearchError(f"{src}: no longer exists; re-run `simsearch index` and then dupes")
            if dst.exists() or os.path.lexists(dst):
                raise SimsearchError(f"{dst}: already exists; nothing was moved (choose another --move-to)")
            plan.append((src, dst))
    keepers = {root / g.keeper.path for g in result.groups}
    assert not keepers & {src for src, _ in plan}, "a keeper was about to be moved"
    if not dry_run:
        for src, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
    return plan
