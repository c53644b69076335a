"""How far can any threshold on the pixel check go? The precision/recall frontier of ``simsearch dupes``'s
pixel statistic, at several thumbnail sides and crop grids (DEVELOPMENT data only: the set
``scripts/bench_dupes.py --half dev`` generated and indexed).

``dupes`` keeps a pair when its cosine reaches a calibrated cut and its pixel similarity
(``pixelmatch.similarity``: Pearson correlation of the aligned thumbnails) reaches another. Both cuts
are calibrated without labels. This script asks what the *best* cuts could give: for the planted pairs
and for every other candidate pair at a loose cosine (``--loose``), it computes the pixel similarity
for each variant (``--sides`` × crop grids, ``--steps``: 2.5% and 1.25% steps by default; ``--blur``:
the grids blurred first), then, using the truth (which
only a benchmark has), finds the thresholds with the highest precision at recall ≥ 0.90 and ≥ 0.95
and the best F1. If no threshold reaches both goals on the development set, no calibration can.

``--second SIDES`` then asks whether a second pixel statistic helps: the same frontier for the shipped
side (24 px, 1.25% steps) AND the similarity at each of SIDES (1.25% steps) reaching its own threshold,
swept over the 0–10% quantiles of the planted pairs' values.

    python scripts/bench_dupes.py --half dev --epochs 4 --budget 1200 --no-imagededup --work /tmp/dupes-dev
    python scripts/research/dupes_frontier.py --work /tmp/dupes-dev
    python scripts/research/dupes_frontier.py --work /tmp/dupes-dev --sides 24 --second 48,64,96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import simsearch
from simsearch import dupes, neighbours, pixelmatch

COARSE_CROPS = (0.0, 0.025, 0.05, 0.075)  # 2.5% steps: the check until 2026-12-02
FINE_CROPS = tuple(round(0.0125 * i, 4) for i in range(8))  # 1.25% steps, 0 … 8.75% a side (``pixelmatch.CROPS`` since)


def crop_grid(step: float, most: float = 0.0875) -> tuple[float, ...]:
    """Crop fractions 0, step, 2·step, … up to ``most`` a side (2.5%: ``COARSE_CROPS``, 1.25%: ``FINE_CROPS``)."""
    return tuple(round(step * i, 5) for i in range(int(most / step + 1e-9) + 1))


def frontier(true_cos, true_pix, cand_cos, cand_pix, n_true: int) -> dict:
    """Best precision at recall ≥ 0.90 / 0.95 and best F1 over cosine cut × pixel threshold."""
    best: dict = {"p_at_r90": (0.0, None), "p_at_r95": (0.0, None), "f1": (0.0, None)}
    for c in np.unique(np.round(np.concatenate([true_cos, cand_cos]), 3))[::-1][:400]:
        tp_pix = np.sort(true_pix[true_cos >= c])[::-1]
        fp_pix = np.sort(cand_pix[cand_cos >= c])
        for k in range(1, len(tp_pix) + 1):  # threshold = the k-th best true pair's similarity
            t = tp_pix[k - 1]
            fp = len(fp_pix) - np.searchsorted(fp_pix, t, side="left")
            p, r = k / (k + fp), k / n_true
            f1 = 2 * p * r / (p + r)
            where = (float(c), float(t), round(p, 3), round(r, 3))
            if r >= 0.90 and p > best["p_at_r90"][0]:
                best["p_at_r90"] = (p, where)
            if r >= 0.95 and p > best["p_at_r95"][0]:
                best["p_at_r95"] = (p, where)
            if f1 > best["f1"][0]:
                best["f1"] = (f1, where)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="bench_dupes.py's --work (set/, set.json, index/)")
    ap.add_argument("--loose", type=float, default=0.85, help="candidate pairs: cosine at least this")
    ap.add_argument("--sides", default="24,48,64,96")
    ap.add_argument(
        "--steps", default="2.5,1.25", help="crop grids to try, as step sizes in percent (each 0 … 8.75%% a side)"
    )
    ap.add_argument(
        "--blur",
        default="0",
        help="Gaussian blur(s) of each 96 px grid before the check, sigma in grid pixels, e.g. 0,1,2 (scipy)",
    )
    ap.add_argument("--second", default="", help="sides whose similarity is also required (AND), e.g. 48,64,96")
    ap.add_argument(
        "--content",
        action="store_true",
        help="also the frontier of the content layer alone (``content_grid``; the rows above take the higher)",
    )
    ap.add_argument(
        "--tolerant",
        default="",
        help="sides at which a tolerant difference (see ``tolerant``) is also required (AND), e.g. 48,64,96",
    )
    a = ap.parse_args(argv)
    truth_set = json.loads((a.work / "set.json").read_text())
    idx = simsearch.Index.open(a.work / "index")
    entries, base = idx.entries(), idx.base_vectors()
    row = {e.path: i for i, e in enumerate(entries)}
    truth = {frozenset((row[x], row[y])) for x, y, _ in truth_set["truth"] if x in row and y in row}
    true_pairs = [tuple(sorted(p)) for p in truth]
    ca, cb, _ = neighbours.range_pairs(base, a.loose, max_k=dupes.MAX_PARTNERS)
    cand = [
        (int(x), int(y))
        for x, y in zip(ca.tolist(), cb.tolist())
        if frozenset((x, y)) not in truth and entries[x].sha256 != entries[y].sha256
    ]
    cos = lambda pairs: np.array([float(base[x] @ base[y]) for x, y in pairs])  # noqa: E731
    true_cos, cand_cos = cos(true_pairs), cos(cand)
    loaded = dict(enumerate(pixelmatch.load_grids([idx.root / e.path for e in entries])))
    print(f"{len(true_pairs)} planted pairs, {len(cand)} other candidate pairs at cosine ≥ {a.loose}")
    print("| side | crop steps | best precision at recall ≥ 0.90 | at recall ≥ 0.95 | best F1 (P, R) | s |")
    print("|---:|---|---:|---:|---:|---:|")
    # the blur, the second statistic and the tolerant difference were measured on the whole pictures'
    # grids, before the check had a content layer (``pixelmatch.grids``); they stay on those
    whole = {k: None if g is None else pixelmatch.layer(g, 0) for k, g in loaded.items()}
    for sigma in [float(b) for b in a.blur.split(",")]:
        grids = blurred(whole, sigma) if sigma else loaded
        rows(a, grids, true_pairs, cand, true_cos, cand_cos, f", whole grid blurred σ {sigma}" if sigma else "")
    if a.content:
        boxed = {i: content_grid(g) for i, g in loaded.items()}
        rows(a, boxed, true_pairs, cand, true_cos, cand_cos, ", content box")
    if a.second:
        second(true_cos, cand_cos, true_pairs, cand, whole, [int(x) for x in a.second.split(",")])
    if a.tolerant:
        tolerant_rows(true_cos, cand_cos, true_pairs, cand, whole, [int(x) for x in a.tolerant.split(",")])
    return 0


def content_grid(grids: np.ndarray | None) -> np.ndarray | None:
    """The content layer of a picture's ``pixelmatch.grids`` (its whole grid when it has none)."""
    return None if grids is None else pixelmatch.layer(grids, 1)


def alignment(ga: np.ndarray, gb: np.ndarray, crops=FINE_CROPS) -> tuple[bool, int, int]:
    """``pixelmatch.aligned``'s alignment at 24 px, as which picture is cropped (True: A) and the indices of
    its row and column crop maps in ``pixelmatch._crop_maps`` (``pixelmatch._one_way``'s search)."""
    side = pixelmatch.SIDE
    ea, _, ha = pixelmatch._one_way(ga, pixelmatch.thumb(gb, side), crops)
    eb, _, hb = pixelmatch._one_way(gb, pixelmatch.thumb(ga, side), crops)
    return (True, *ha) if ea <= eb else (False, *hb)


def tolerant(ga: np.ndarray, gb: np.ndarray, how: tuple[bool, int, int], side: int, crops=FINE_CROPS) -> np.ndarray:
    """Tolerant differences of two grids at ``side`` px, aligned by the 24 px search (``alignment``): each
    pixel of one thumbnail is compared with the range (min … max) of the other's 3×3 neighbourhood, and the
    amount it falls outside is its difference (0 where a pixel's value occurs within one pixel of it in the
    other picture), largest over the channels and over both directions. A copy whose lines moved by a pixel
    in resampling differs by ~0; a drawing with a spoke the other lacks differs there by the spoke's contrast.
    → [mean, 99th percentile, 99.9th percentile] of the differences."""
    from scipy.ndimage import maximum_filter, minimum_filter

    a_cropped, r, c = how
    maps = pixelmatch._crop_maps(ga.shape[0], side, crops)
    src, other = (ga, gb) if a_cropped else (gb, ga)
    t1 = pixelmatch._cols(maps[c], pixelmatch._rows(maps[r], src))
    t2 = pixelmatch.thumb(other, side)

    def outside(x, y):
        hi, lo = maximum_filter(y, (3, 3, 1), mode="nearest"), minimum_filter(y, (3, 3, 1), mode="nearest")
        return np.maximum(np.maximum(x - hi, lo - x), 0).max(axis=2)

    d = np.maximum(outside(t1, t2), outside(t2, t1))
    return np.array([d.mean(), np.quantile(d, 0.99), np.quantile(d, 0.999)])


def tolerant_rows(true_cos, cand_cos, true_pairs, cand, grids, sides: list[int]) -> None:
    """The frontier of the 24 px / 1.25% check AND 1 − a tolerant difference (``tolerant``) at each of
    ``sides`` reaching its own threshold, swept over the 0–10% quantiles of the planted pairs' values."""

    def sim(pairs):
        return pixelmatch.similarities(pairs, grids.get, side=24, crops=FINE_CROPS).astype(np.float64)

    t24, c24 = sim(true_pairs), sim(cand)
    t0 = time.perf_counter()
    readable = [p for p in true_pairs + cand if grids[p[0]] is not None and grids[p[1]] is not None]
    hows = {p: alignment(pixelmatch.as_float(grids[p[0]]), pixelmatch.as_float(grids[p[1]])) for p in readable}
    print(f"\nalignments of {len(hows)} pairs: {time.perf_counter() - t0:.0f} s")
    print(
        "| 24 px AND 1 − tolerant difference | its threshold | best precision at recall ≥ 0.90 | its threshold"
        " | at recall ≥ 0.95 | s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for side in sides:
        t0 = time.perf_counter()

        def tol(pairs, side=side):
            g = lambda k: pixelmatch.as_float(grids[k])  # noqa: E731
            one = np.ones(3)  # an unreadable picture: as different as can be
            return 1.0 - np.array(
                [tolerant(g(x), g(y), hows[(x, y)], side) if (x, y) in hows else one for x, y in pairs]
            )

        ts, cs = tol(true_pairs), tol(cand)
        for j, name in enumerate(("mean", "99th percentile", "99.9th percentile")):
            (p90, q90), (p95, q95) = with_second(true_cos, t24, ts[:, j], cand_cos, c24, cs[:, j], len(true_pairs))
            print(
                f"| {side} px, {name} | {q90:.4f} | {p90:.3f} | {q95:.4f} | {p95:.3f} "
                f"| {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


def blurred(grids: dict, sigma: float) -> dict:
    """The grids as float, each channel blurred by a Gaussian of ``sigma`` grid pixels (0: as they are)."""
    if not sigma:
        return grids
    from scipy.ndimage import gaussian_filter

    return {
        k: None if g is None else gaussian_filter(pixelmatch.as_float(g), (sigma, sigma, 0), mode="nearest")
        for k, g in grids.items()
    }


def rows(a, grids, true_pairs, cand, true_cos, cand_cos, note: str = "") -> None:
    """One frontier row per thumbnail side and crop grid (``note`` added to the crop column)."""
    for side in [int(s) for s in a.sides.split(",")]:
        for name, crops in ((f"{st}%", crop_grid(float(st) / 100)) for st in a.steps.split(",")):
            t0 = time.perf_counter()

            def sim(pairs, side=side, crops=crops):  # the check's own batched code, all pairs at once
                return pixelmatch.similarities(pairs, grids.get, side=side, crops=crops).astype(np.float64)

            f = frontier(true_cos, sim(true_pairs), cand_cos, sim(cand), len(true_pairs))
            p90, p95, f1 = f["p_at_r90"], f["p_at_r95"], f["f1"]
            print(
                f"| {side} | {name}{note} | {p90[0]:.3f} | {p95[0]:.3f} | {f1[0]:.3f} ({f1[1][2]:.3f}, {f1[1][3]:.3f}) "
                f"| {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


def with_second(true_cos, true_pix, true_second, cand_cos, cand_pix, cand_second, n_true: int):
    """The ``frontier`` of cosine and pixel similarity AND a second statistic reaching its own threshold,
    swept over the 0–10% quantiles of the planted pairs' values (at the 0% quantile: no second condition)
    → ((best precision at recall ≥ 0.90, its second threshold), (the same at recall ≥ 0.95))."""
    best = {"p_at_r90": (0.0, 0.0), "p_at_r95": (0.0, 0.0)}
    for q in np.quantile(true_second, np.linspace(0, 0.1, 21)):
        kt, kc = true_second >= q, cand_second >= q
        f = frontier(true_cos[kt], true_pix[kt], cand_cos[kc], cand_pix[kc], n_true)
        for key in best:
            if f[key][0] > best[key][0]:
                best[key] = (f[key][0], float(q))
    return best["p_at_r90"], best["p_at_r95"]


def second(true_cos, cand_cos, true_pairs, cand, grids, sides: list[int]) -> None:
    """The frontier of the 24 px / 1.25% check AND a second similarity at each of ``sides``."""
    first_side = 24

    def sim(pairs, side):
        return pixelmatch.similarities(pairs, grids.get, side=side, crops=FINE_CROPS).astype(np.float64)

    t24, c24 = sim(true_pairs, first_side), sim(cand, first_side)
    print(
        f"\n| {first_side} px AND | its threshold | best precision at recall ≥ 0.90 | its threshold"
        " | at recall ≥ 0.95 | s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for side in sides:
        t0 = time.perf_counter()
        ts, cs = sim(true_pairs, side), sim(cand, side)
        (p90, q90), (p95, q95) = with_second(true_cos, t24, ts, cand_cos, c24, cs, len(true_pairs))
        print(
            f"| {side} px | {q90:.4f} | {p90:.3f} | {q95:.4f} | {p95:.3f} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
